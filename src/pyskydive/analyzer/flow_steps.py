"""Gremlin flow steps over the analyzer's flows: live in its
:class:`~pyskydive.analyzer.flows.FlowStore`, past in a flow storage backend.

Semantics are Skydive v0.28's (``gremlin/traversal/flows.go``, ``metrics.go``, and
``topology.go`` for interface metrics):

* ``G.Flows()`` gives every flow; ``G.V()....Flows()`` the flows whose NodeTID is the TID of
  one of the nodes; ``Flows(k, v, ...)`` filters them as ``Has`` does. The result is a
  :class:`FlowList`, so the generic steps (Has, HasEither, HasNot, Count, Limit, Range, Values,
  Sum...) work on flows; ``Has('Network', x)`` matches Network.A or Network.B (same for Link
  and Transport), dotted keys (``Metric.ABPackets``, ``ICMP.ID``) and ``IPV4RANGE`` work.
* In the past (the traversal started with ``G.At(t[, d])``/``G.Context``: ``ctx.window`` is
  set), ``Flows()`` reads the flow storage (``FlowBackend.query_flows``), never the live
  store: the flows that were in a capture's flow table at some point of the window, i.e.
  ``Start <= end`` and ``Last >= start - flow_expire`` (Skydive's ``addTimeFilter``: a flow
  stays in its table until ``flow.expire``, 600 s by default, after its last packet; at an
  instant ``At(t)`` the window is ``[t, t]``, so ``At(t).Flows()`` are the flows not yet
  expired at ``t``). Without flow storage that is a ``QueryError``.
* On flows, ``Dedup()`` without a key dedups by ``TrackingID`` and ``Sort()`` without a key
  sorts by ``Last``; ``Sum`` only accepts ``Metric.*`` and ``LastUpdateMetric.*`` keys.
* Flows to nodes (each step takes optional ``Has``-style filter arguments the nodes must also
  match; like Skydive, one node per lookup, no dedup, so a node may appear several times):
  ``CaptureNode()`` (alias ``Node()``) and ``Hops()``: the node whose TID is the flow's
  NodeTID; ``Nodes()``: that node, then the nodes whose MAC is Link.A and Link.B;
  ``In()``/``Out()``: the node whose MAC or PeerIntfMAC is Link.A / Link.B; ``Both()``: both.
  They look in the traversal's graph: the past one after ``At``.
* ``Metrics()`` on flows: ``[{UUID: [metric, ...]}]`` (``[]`` when there is none). Live,
  each flow gives one metric, its ``LastUpdateMetric`` if it has one, else its ``Metric``. In
  the past, each flow's metric history from the flow storage (``FlowBackend.metrics``: one
  metric per update), the metrics lying within the window (``Start >= start`` and
  ``Last <= end``; at an instant ``At(t)``, all of them up to ``t``, as Skydive).
* ``Metrics()`` on nodes (interface metrics; ``Metrics('SFlow')`` and ``Metrics('Ovs')``
  read ``SFlow.LastUpdateMetric`` / ``Ovs.LastUpdateMetric``): ``[{node ID: [metric, ...]}]``.
  Live, each node's ``LastUpdateMetric`` (nodes without one are left out: as Skydive, no
  fallback on ``Metric``, which holds counters since before the probe saw the interface). In
  a window, the ``LastUpdateMetric`` of each revision of the node
  (``TopologyBackend.revisions``) lying within the window, one per ``Start`` (a revision made
  by another metadata change carries the same metric), oldest first. At an instant ``At(t)``
  the metric the node carried at ``t`` (Skydive's strict ``Start > t and Last < t`` test
  gives nothing there).
* On metrics: ``Aggregates(seconds=30)`` cuts the time into slices and adds each metric,
  split pro rata of time, into them: ``[{"Aggregated": [metric, ...]}]``. The span is the
  window's ``[start, end]`` after ``At(t, d)`` (parts outside are left out), else
  ``[first Start, last Last]`` of the metrics (Skydive would give no slice at an instant).
  ``Sum()`` gives the total metric, ``Sum('ABBytes')`` a number; ``Count()`` the number of
  flows (or nodes).

The metric side (the :class:`FlowMetrics` value, interface metrics, ``Aggregates``, ``Sum``
and ``Count`` on metrics) is in :mod:`pyskydive.analyzer.metric_steps`; all are registered
by :func:`build_flow_registry`. The reads of storage block: a caller on an event loop
evaluates a time-travel query in a worker thread (``api/topology.py``). Storage errors become
positioned ``QueryError``s. Every step here but ``Metrics`` answers ``NotImplemented`` on
values that are not flows (or metrics), so ``Out``, ``Count``... of nodes still run the
built-in steps; ``Metrics`` on anything but nodes and flows is an error.
"""

from __future__ import annotations

from typing import Any

from pyskydive.analyzer.flows import FlowStore, StoredFlow
from pyskydive.analyzer.metric_steps import (
    NO_TOPOLOGY_HISTORY,
    FlowMetrics,
    RevisionSource,
    aggregate,
    metrics_count,
    metrics_sum,
    node_metrics,
    past_flow_metrics,
    read_storage,
    step_aggregates,
)
from pyskydive.graph import Node
from pyskydive.graph.graph import INDEXED_KEYS
from pyskydive.gremlin import (
    AllNodes,
    Arg,
    GraphValue,
    ItemList,
    Keyword,
    NodeList,
    StepContext,
    StepRegistry,
    TimeWindow,
    as_nodes,
    compile_filter,
)
from pyskydive.gremlin.predicates import Filter
from pyskydive.gremlin.steps import kind_of, step_sort
from pyskydive.storage.base import FlowBackend, FlowQuery

__all__ = [
    "DEFAULT_FLOW_EXPIRE_MS",
    "NO_FLOW_STORAGE",
    "NO_TOPOLOGY_HISTORY",
    "FlowList",
    "FlowMetrics",
    "aggregate",
    "build_flow_registry",
    "flows_step",
    "metrics_step",
]

#: How long a flow stays in its capture's table after its last packet (Skydive's default
#: ``flow.expire``, 600 s): the margin before a window in which stored flows still count.
DEFAULT_FLOW_EXPIRE_MS = 600_000

#: Why ``Flows()``/``Metrics()`` fail in a window without a flow backend.
NO_FLOW_STORAGE = "flows in the past need flow storage"


class FlowList(ItemList):
    """Flows between two steps; serialised as a list of Skydive flow dicts."""

    kind = "flows"
    __slots__ = ()
    items: list[StoredFlow]

    def to_wire(self) -> Any:
        return [f.to_wire() for f in self.items]


# -- Flows -------------------------------------------------------------------------------------


def flows_step(
    store: FlowStore,
    backend: FlowBackend | None = None,
    *,
    flow_expire_ms: int = DEFAULT_FLOW_EXPIRE_MS,
) -> Any:
    """The ``Flows`` step handler: live from ``store``, in a window from ``backend``."""

    def handler(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
        keep = compile_filter(args, _pos(ctx)) if args else None
        tids: list[str] | None = None
        if not isinstance(value, GraphValue):
            nodes = as_nodes(value, ctx)
            tids = [t for t in (n.metadata.get("TID") for n in nodes) if isinstance(t, str) and t]
        if ctx.window is not None:
            flows = _past_flows(backend, ctx.window, tids, flow_expire_ms, ctx)
        elif tids is None:
            flows = store.flows()
        else:
            flows = store.by_nodes(tids)
        if keep is not None:
            flows = ctx.select(flows, keep)
        return FlowList(flows)

    return handler


def _past_flows(
    backend: FlowBackend | None,
    window: TimeWindow,
    tids: list[str] | None,
    flow_expire_ms: int,
    ctx: StepContext,
) -> list[StoredFlow]:
    """The flows in a capture's table at some point of ``window`` (Skydive's addTimeFilter)."""
    if backend is None:
        raise ctx.error(NO_FLOW_STORAGE)
    if tids is not None and not tids:
        return []
    query = FlowQuery(
        start=window.start - flow_expire_ms,
        end=window.end,
        node_tids=None if tids is None else frozenset(tids),
    )
    wires = read_storage(ctx, "flow storage", backend.query_flows, query)
    ctx.check()
    return [StoredFlow(w) for w in wires]


def _pos(ctx: StepContext) -> int:
    return ctx.step.position if ctx.step is not None else 0


# -- flows to nodes ----------------------------------------------------------------------------


class _NodeFinder:
    """First node with ``key == value`` (and matching the step's filter), memoised per step.

    Indexed keys (TID, MAC) are looked up in the graph's indexes; others (PeerIntfMAC) are
    indexed here by one scan of the graph, the first time the step needs them."""

    def __init__(self, ctx: StepContext, args: tuple[Arg, ...]) -> None:
        self.ctx = ctx
        self.keep: Filter | None = compile_filter(args, _pos(ctx)) if args else None
        self._memo: dict[tuple[tuple[str, ...], str], Node | None] = {}
        self._scanned: dict[str, dict[str, list[Node]]] = {}

    def first(self, keys: tuple[str, ...], value: object) -> Node | None:
        if not isinstance(value, str) or not value:
            return None
        memo_key = (keys, value)
        if memo_key in self._memo:
            return self._memo[memo_key]
        found: Node | None = None
        for key in keys:
            for node in self._nodes(key, value):
                if self.keep is None or self.keep(node):
                    found = node
                    break
            if found is not None:
                break
        self._memo[memo_key] = found
        return found

    def _nodes(self, key: str, value: str) -> list[Node]:
        graph = self.ctx.graph
        if key in INDEXED_KEYS:
            return graph.get_nodes({key: value})
        index = self._scanned.get(key)
        if index is None:
            index = self._scanned[key] = {}
            for node in self.ctx.iterate(graph.nodes.values()):
                v = node.metadata.get(key)
                if isinstance(v, str):
                    index.setdefault(v, []).append(node)
        return index.get(value, [])


_TID = ("TID",)
_MAC = ("MAC",)
_MAC_OR_PEER = ("MAC", "PeerIntfMAC")


def _link(flow: StoredFlow, end: str) -> object:
    link = flow.wire.get("Link")
    return link.get(end) if isinstance(link, dict) else None


def _lookups(name: str, flow: StoredFlow) -> list[tuple[tuple[str, ...], object]]:
    tid = flow.wire.get("NodeTID")
    if name in ("HOPS", "CAPTURENODE"):
        return [(_TID, tid)]
    if name == "NODES":
        return [(_TID, tid), (_MAC, _link(flow, "A")), (_MAC, _link(flow, "B"))]
    if name == "IN":
        return [(_MAC_OR_PEER, _link(flow, "A"))]
    if name == "OUT":
        return [(_MAC_OR_PEER, _link(flow, "B"))]
    return [(_MAC_OR_PEER, _link(flow, "A")), (_MAC_OR_PEER, _link(flow, "B"))]  # BOTH


def _node_step(name: str) -> Any:
    def handler(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
        if not isinstance(value, FlowList):
            return NotImplemented
        finder = _NodeFinder(ctx, args)
        nodes: list[Node] = []
        for flow in ctx.iterate(value.items):
            for keys, wanted in _lookups(name, flow):
                node = finder.first(keys, wanted)
                if node is not None:
                    nodes.append(node)
        return NodeList(nodes)

    return handler


# -- generic steps with flow defaults ----------------------------------------------------------


def _dedup(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if not isinstance(value, FlowList) or args:
        return NotImplemented
    seen: set[object] = set()
    out: list[StoredFlow] = []
    for flow in ctx.iterate(value.items):
        mark = flow.wire.get("TrackingID")
        if mark not in seen:
            seen.add(mark)
            out.append(flow)
    return FlowList(out)


def _sort(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if not isinstance(value, FlowList):
        return NotImplemented
    if not args:
        return step_sort(value, ("Last",), ctx)
    if len(args) == 1 and isinstance(args[0], Keyword):
        return step_sort(value, (args[0], "Last"), ctx)
    return NotImplemented


def _sum(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if isinstance(value, FlowMetrics):
        return metrics_sum(value, args, ctx)
    if not isinstance(value, FlowList):
        return NotImplemented
    if len(args) == 1 and isinstance(args[0], str):
        head = args[0].split(".", 1)[0]
        if head not in ("Metric", "LastUpdateMetric") or "." not in args[0]:
            raise ctx.error("Sum accepts only sub fields of Metric and LastUpdateMetric")
    return NotImplemented


def _count(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if not isinstance(value, FlowMetrics):
        return NotImplemented
    return metrics_count(value, args, ctx)


# -- metrics -----------------------------------------------------------------------------------


def metrics_step(backend: FlowBackend | None = None, topology: RevisionSource | None = None) -> Any:
    """The ``Metrics`` step handler: flow metrics (history from ``backend`` in a window) and
    interface metrics of nodes (history from ``topology`` in a window)."""

    def handler(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
        if isinstance(value, (NodeList, AllNodes)):
            return node_metrics(as_nodes(value, ctx), args, topology, ctx)
        if not isinstance(value, FlowList):
            raise ctx.error(f"applies to nodes or flows, not {kind_of(value)}")
        if args:
            raise ctx.error("takes no parameter on flows")
        if ctx.window is None:
            return FlowMetrics(_live_flow_metrics(value, ctx))
        if backend is None:
            raise ctx.error(NO_FLOW_STORAGE)
        return past_flow_metrics(backend, (f.uuid for f in value.items), ctx.window, ctx)

    return handler


def _metric_of(flow: StoredFlow) -> dict[str, Any] | None:
    for key in ("LastUpdateMetric", "Metric"):
        m = flow.wire.get(key)
        if isinstance(m, dict):
            return m
    return None


def _live_flow_metrics(value: FlowList, ctx: StepContext) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for flow in ctx.iterate(value.items):
        m = _metric_of(flow)
        if m is not None:
            out.setdefault(flow.uuid, []).append(m)
    return out


# -- registry ----------------------------------------------------------------------------------


def build_flow_registry(
    store: FlowStore,
    registry: StepRegistry | None = None,
    *,
    backend: FlowBackend | None = None,
    topology: RevisionSource | None = None,
    flow_expire_ms: int = DEFAULT_FLOW_EXPIRE_MS,
) -> StepRegistry:
    """A registry (new, or ``registry``) with the flow steps: live over ``store``; in a
    time-travel window over ``backend`` (flows and their metric history) and ``topology``
    (the node revisions interface metrics come from). Without them, flows and interface
    metrics in the past are a ``QueryError``. ``flow_expire_ms``: the analyzer's
    ``flow.expire``, how long before a window a flow's last packet may be."""
    reg = registry if registry is not None else StepRegistry()
    reg.register("Flows", flows_step(store, backend, flow_expire_ms=flow_expire_ms))
    for name in ("Hops", "CaptureNode", "Nodes", "In", "Out", "Both"):
        reg.register(name, _node_step(name.upper()))
    reg.register("Node", _node_step("CAPTURENODE"))
    reg.register("Metrics", metrics_step(backend, topology))
    reg.register("Aggregates", step_aggregates)
    reg.register("Dedup", _dedup)
    reg.register("Sort", _sort)
    reg.register("Sum", _sum)
    reg.register("Count", _count)
    return reg
