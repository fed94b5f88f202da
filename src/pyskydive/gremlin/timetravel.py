"""Time travel: ``G.At(t[, d])`` and its alias ``G.Context(...)`` over a topology history.

``At`` must be the first step after ``G`` (as in Skydive, where it only applies to the start
of a traversal). It reads the graph as it was from a :class:`HistorySource` (any
:class:`~pyskydive.storage.base.TopologyBackend` is one): ``At(t)`` is ``graph_at(t)``,
``At(t, d)`` is ``graph_during(t - d, t)`` (the time forms are in
:mod:`pyskydive.gremlin.timeforms`), builds a throwaway graph of it and continues the
traversal there; ``ctx.window`` then tells later steps (flows) which window they are in.
Without a history the step fails with "time travel needs topology history (storage)".

A history read may block (a backend on disk), and so may the reads of later steps in the
window (flows and metrics from flow storage, interface metrics from node revisions). A caller
on an event loop therefore tells time-travel queries apart with :func:`query_window` and
evaluates those whole in a worker thread: after ``At`` every step works on the throwaway
graph (``ctx.graph``) and on storage, never on the live graph, which the thread only passes
through (``At`` reads its ``host``).
"""

from __future__ import annotations

from typing import Any, Protocol

from pyskydive.errors import MessageError, StorageError
from pyskydive.graph.history import graph_from_wire
from pyskydive.gremlin.ast import Arg, Query, Step
from pyskydive.gremlin.registry import StepContext
from pyskydive.gremlin.timeforms import TimeWindow, time_window
from pyskydive.gremlin.values import GraphValue

__all__ = [
    "NO_HISTORY",
    "TIME_STEPS",
    "HistorySource",
    "query_window",
    "read_window",
    "step_at",
]

#: Names (canonical) of the time-travel step.
TIME_STEPS = frozenset({"AT", "CONTEXT"})

#: Why ``At`` fails without history (the second half is what older clients look for).
NO_HISTORY = "time travel needs topology history (storage)"

Wire = list[dict[str, Any]]


class HistorySource(Protocol):
    """What time travel reads: the graph at an instant, or during a window (wire dicts)."""

    def graph_at(self, t: int) -> tuple[Wire, Wire]: ...

    def graph_during(self, start: int, end: int) -> tuple[Wire, Wire]: ...


def read_window(history: HistorySource, window: TimeWindow) -> tuple[Wire, Wire]:
    """Nodes and edges of ``window`` from ``history`` (may block)."""
    if window.point:
        return history.graph_at(window.end)
    return history.graph_during(window.start, window.end)


def _window(args: tuple[Arg, ...], step: Step, now_ms: int) -> TimeWindow:
    return time_window(
        args,
        now_ms,
        positions=step.arg_positions,
        step=step.text,
        step_position=step.position,
    )


def query_window(query: Query, now_ms: int) -> TimeWindow | None:
    """The window a query's leading ``At``/``Context`` asks for (``None`` if it has none).

    Raises :class:`~pyskydive.gremlin.errors.QuerySyntaxError` for a bad time form."""
    if not query.steps or query.steps[0].name not in TIME_STEPS:
        return None
    first = query.steps[0]
    return _window(first.args, first, now_ms)


def step_at(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    """``At(t[, d])`` / ``Context(t[, d])``: continue on the graph as it was."""
    if ctx.index != 0 or not isinstance(value, GraphValue):
        raise ctx.error("must be the first step after G")
    assert ctx.step is not None
    window = _window(args, ctx.step, ctx.now_ms)
    if ctx.history is None:
        raise ctx.error(NO_HISTORY)
    try:
        nodes, edges = read_window(ctx.history, window)
    except StorageError as exc:
        raise ctx.error(f"topology history: {exc}") from exc
    ctx.check()
    try:
        graph = graph_from_wire(nodes, edges, ctx.graph.host)
    except MessageError as exc:
        raise ctx.error(f"history holds a malformed element: {exc}") from exc
    ctx.graph = graph
    ctx.window = window
    return GraphValue(graph)
