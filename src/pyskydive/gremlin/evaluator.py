"""Evaluation of a parsed query over a :class:`~pyskydive.graph.Graph`.

Theory of operation
-------------------
The value starts as the whole graph (``G``) and each step turns it into the next value (see
:mod:`pyskydive.gremlin.values`). A step name is looked up first in the caller's
:class:`~pyskydive.gremlin.registry.StepRegistry` (an extension may answer ``NotImplemented``
to fall back), then among the built-in steps. The evaluation is synchronous and single
threaded: the caller owns the graph for its duration. Long loops look at a monotonic clock
every few hundred items and stop with ``QueryError("query exceeded its time limit of Ns")``.
The result is the last value's JSON form, exactly as Skydive's API returns it.
"""

from __future__ import annotations

import time
from typing import Any

from pyskydive.errors import QueryError
from pyskydive.graph import Graph
from pyskydive.graph import now_ms as wall_ms
from pyskydive.gremlin.ast import Arg, Query
from pyskydive.gremlin.parser import parse
from pyskydive.gremlin.registry import StepContext, StepHandler, StepRegistry
from pyskydive.gremlin.steps import BASIC_STEPS
from pyskydive.gremlin.timetravel import HistorySource, step_at
from pyskydive.gremlin.values import GraphValue, to_wire
from pyskydive.gremlin.walk import WALK_STEPS

__all__ = ["BUILTIN_STEPS", "evaluate", "run"]

BUILTIN_STEPS: dict[str, StepHandler] = {
    **BASIC_STEPS,
    **WALK_STEPS,
    "AT": step_at,
    "CONTEXT": step_at,
}


def run(
    query: Query | str,
    graph: Graph,
    *,
    registry: StepRegistry | None = None,
    timeout: float = 30.0,
    now_ms: int | None = None,
    history: HistorySource | None = None,
) -> Any:
    """Evaluate ``query`` and return the last traversal value (not yet serialised).

    ``history`` answers ``G.At(...)``/``G.Context(...)`` (see :mod:`.timetravel`)."""
    q = parse(query) if isinstance(query, str) else query
    ctx = StepContext(
        graph=graph,
        now_ms=wall_ms() if now_ms is None else now_ms,
        deadline=time.monotonic() + timeout,
        timeout=timeout,
        history=history,
    )
    value: Any = GraphValue(graph)
    for index, step in enumerate(q.steps):
        ctx.check()
        ctx.step = step
        ctx.index = index
        value = _run_step(step.name, value, step.args, ctx, registry)
    return value


def _run_step(
    name: str, value: Any, args: tuple[Arg, ...], ctx: StepContext, registry: StepRegistry | None
) -> Any:
    if registry is not None:
        handler = registry.get(name)
        if handler is not None:
            result = handler(value, args, ctx)
            if result is not NotImplemented:
                return result
    builtin = BUILTIN_STEPS.get(name)
    if builtin is None:
        raise ctx.error("unknown step")
    return builtin(value, args, ctx)


def evaluate(
    query: Query | str,
    graph: Graph,
    *,
    registry: StepRegistry | None = None,
    timeout: float = 30.0,
    now_ms: int | None = None,
    history: HistorySource | None = None,
) -> Any:
    """Evaluate ``query`` over ``graph``; JSON-able result as Skydive's API returns it.

    Raises :class:`~pyskydive.errors.QueryError` (a parse error carries ``position``) for a
    bad query, a bad argument or when ``timeout`` seconds are exceeded. ``history`` answers
    ``G.At(...)``; without it time travel is a ``QueryError``.
    """
    value = run(query, graph, registry=registry, timeout=timeout, now_ms=now_ms, history=history)
    try:
        return to_wire(value)
    except RecursionError as exc:  # an extension value nested beyond reason
        raise QueryError("result too deeply nested") from exc
