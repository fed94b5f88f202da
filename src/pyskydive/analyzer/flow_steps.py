"""Gremlin flow steps over the analyzer's :class:`~pyskydive.analyzer.flows.FlowStore`.

``G.Flows()`` gives every stored flow; ``G.V()....Flows()`` the flows whose NodeTID is the TID
of one of the nodes; ``Flows(k, v, ...)`` filters them as ``Has`` does. The result is a
:class:`FlowList`, so the generic steps (Has, HasEither, HasNot, Dedup, Count, Limit, Range,
Sort, Values, Sum...) work on flows; ``Has('Network', x)`` matches Network.A or Network.B (same
for Link and Transport), and ``IPV4RANGE`` works on them, as in Skydive v0.28.
"""

from __future__ import annotations

from typing import Any

from pyskydive.analyzer.flows import FlowStore, StoredFlow
from pyskydive.gremlin import (
    Arg,
    GraphValue,
    ItemList,
    StepContext,
    StepRegistry,
    as_nodes,
    compile_filter,
)

__all__ = ["FlowList", "build_flow_registry", "flows_step"]


class FlowList(ItemList):
    """Flows between two steps; serialised as a list of Skydive flow dicts."""

    kind = "flows"
    __slots__ = ()
    items: list[StoredFlow]

    def to_wire(self) -> Any:
        return [f.to_wire() for f in self.items]


def flows_step(store: FlowStore) -> Any:
    """The ``Flows`` step handler bound to ``store``."""

    def handler(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
        if isinstance(value, GraphValue):
            flows = store.flows()
        else:
            nodes = as_nodes(value, ctx)
            tids = [t for t in (n.metadata.get("TID") for n in nodes) if isinstance(t, str) and t]
            flows = store.by_nodes(tids)
        if args:
            position = ctx.step.position if ctx.step is not None else 0
            keep = compile_filter(args, position)
            flows = ctx.select(flows, keep)
        return FlowList(flows)

    return handler


def build_flow_registry(store: FlowStore, registry: StepRegistry | None = None) -> StepRegistry:
    """A registry (new, or ``registry``) with the flow steps over ``store``."""
    reg = registry if registry is not None else StepRegistry()
    reg.register("Flows", flows_step(store))
    return reg
