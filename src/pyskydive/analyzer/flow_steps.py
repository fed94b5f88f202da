"""Gremlin flow steps over the analyzer's :class:`~pyskydive.analyzer.flows.FlowStore`.

Semantics are Skydive v0.28's (``gremlin/traversal/flows.go`` and ``metrics.go``):

* ``G.Flows()`` gives every stored flow; ``G.V()....Flows()`` the flows whose NodeTID is the
  TID of one of the nodes; ``Flows(k, v, ...)`` filters them as ``Has`` does. The result is a
  :class:`FlowList`, so the generic steps (Has, HasEither, HasNot, Count, Limit, Range, Values,
  Sum...) work on flows; ``Has('Network', x)`` matches Network.A or Network.B (same for Link
  and Transport), dotted keys (``Metric.ABPackets``, ``ICMP.ID``) and ``IPV4RANGE`` work.
* On flows, ``Dedup()`` without a key dedups by ``TrackingID`` and ``Sort()`` without a key
  sorts by ``Last``; ``Sum`` only accepts ``Metric.*`` and ``LastUpdateMetric.*`` keys.
* Flows to nodes (each step takes optional ``Has``-style filter arguments the nodes must also
  match; like Skydive, one node per lookup, no dedup, so a node may appear several times):
  ``CaptureNode()`` (alias ``Node()``) and ``Hops()``: the node whose TID is the flow's
  NodeTID; ``Nodes()``: that node, then the nodes whose MAC is Link.A and Link.B;
  ``In()``/``Out()``: the node whose MAC or PeerIntfMAC is Link.A / Link.B; ``Both()``: both.
* ``Metrics()``: ``[{UUID: [metric, ...]}]`` (``[]`` when there is no flow). Skydive answers
  from its flow storage with the whole metric history of each flow when a time context is
  set; without storage (today) each flow gives one metric, its ``LastUpdateMetric`` if it has
  one, else its ``Metric``. History comes with the storage backends.
* On metrics: ``Aggregates(seconds=30)`` cuts ``[first Start, last Last]`` into slices and
  adds each metric, split pro rata of time, into them: ``[{"Aggregated": [metric, ...]}]``;
  ``Sum()`` gives the total metric, ``Sum('ABBytes')`` a number; ``Count()`` the number of
  flows.

Every step here answers ``NotImplemented`` on other values, so ``Out``, ``Count``... of nodes
still run the built-in steps.
"""

from __future__ import annotations

from typing import Any

from pyskydive.analyzer.flows import FlowStore, StoredFlow
from pyskydive.graph import Node
from pyskydive.graph.graph import INDEXED_KEYS
from pyskydive.gremlin import (
    Arg,
    GraphValue,
    ItemList,
    Keyword,
    NodeList,
    Scalar,
    StepContext,
    StepRegistry,
    as_nodes,
    compile_filter,
)
from pyskydive.gremlin.predicates import Filter
from pyskydive.gremlin.steps import step_sort

__all__ = ["FlowList", "FlowMetrics", "aggregate", "build_flow_registry", "flows_step"]

#: Slice length of ``Aggregates()`` without argument, in seconds (Skydive: 30 s).
DEFAULT_AGGREGATE_SECONDS = 30
#: At most this many slices (Skydive's ``aggregatesMaxSlices``).
MAX_AGGREGATE_SLICES = 10_000

_COUNTERS = ("ABPackets", "ABBytes", "BAPackets", "BABytes")


class FlowList(ItemList):
    """Flows between two steps; serialised as a list of Skydive flow dicts."""

    kind = "flows"
    __slots__ = ()
    items: list[StoredFlow]

    def to_wire(self) -> Any:
        return [f.to_wire() for f in self.items]


class FlowMetrics:
    """``Metrics()``: flow UUID (or ``"Aggregated"``) → list of metric dicts."""

    kind = "metrics"
    __slots__ = ("metrics",)

    def __init__(self, metrics: dict[str, list[dict[str, Any]]]) -> None:
        self.metrics = metrics

    def to_wire(self) -> Any:
        return [self.metrics] if self.metrics else []


# -- Flows -------------------------------------------------------------------------------------


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
            keep = compile_filter(args, _pos(ctx))
            flows = ctx.select(flows, keep)
        return FlowList(flows)

    return handler


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
        return _metrics_sum(value, args, ctx)
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
    return Scalar(len(value.metrics))


# -- metrics -----------------------------------------------------------------------------------


def _metric_of(flow: StoredFlow) -> dict[str, Any] | None:
    for key in ("LastUpdateMetric", "Metric"):
        m = flow.wire.get(key)
        if isinstance(m, dict):
            return m
    return None


def _metrics(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if not isinstance(value, FlowList):
        return NotImplemented
    if args:
        raise ctx.error("takes no parameter on flows")
    out: dict[str, list[dict[str, Any]]] = {}
    for flow in ctx.iterate(value.items):
        m = _metric_of(flow)
        if m is not None:
            out.setdefault(flow.uuid, []).append(m)
    return FlowMetrics(out)


def _metrics_sum(value: FlowMetrics, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if len(args) > 1:
        raise ctx.error("requires 1 parameter")
    if args:
        key = args[0]
        if not isinstance(key, str):
            raise ctx.error("argument of Sum must be a string")
        total = 0
        for metrics in value.metrics.values():
            for m in metrics:
                v = m.get(key)
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ctx.error(f"{key} is not an integer field of the metrics")
                total += v
        return Scalar(total)
    result: dict[str, Any] | None = None
    for metrics in value.metrics.values():
        for m in metrics:
            if result is None:
                result = _counters(m, _int(m, "Start"), _int(m, "Last"))
                continue
            _add(result, m)
            result["Start"] = min(result["Start"], _int(m, "Start"))
            result["Last"] = max(result["Last"], _int(m, "Last"))
    return Scalar(result)


def _aggregates(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if not isinstance(value, FlowMetrics):
        return NotImplemented
    seconds = DEFAULT_AGGREGATE_SECONDS
    if args:
        arg = args[0]
        if len(args) > 1 or isinstance(arg, bool) or not isinstance(arg, int) or arg <= 0:
            raise ctx.error("Aggregates parameter has to be a positive number")
        seconds = arg
    metrics = [m for ms in value.metrics.values() for m in ms]
    try:
        aggregated = aggregate(metrics, seconds * 1000)
    except ValueError as exc:
        raise ctx.error(str(exc)) from exc
    return FlowMetrics({"Aggregated": aggregated})


def _int(m: dict[str, Any], key: str) -> int:
    v = m.get(key, 0)
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _counters(m: dict[str, Any], start: int, last: int) -> dict[str, Any]:
    out: dict[str, Any] = {k: _int(m, k) for k in _COUNTERS}
    out.update(Start=start, Last=last, RTT=0)
    return out


def _add(total: dict[str, Any], m: dict[str, Any]) -> None:
    for k in _COUNTERS:
        total[k] += _int(m, k)


def _is_zero(m: dict[str, Any]) -> bool:
    return all(_int(m, k) == 0 for k in _COUNTERS)


def _split(m: dict[str, Any], cut: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``m`` cut at time ``cut``: the part before and the part after, pro rata of time."""
    start, last = _int(m, "Start"), _int(m, "Last")
    if cut <= start:
        return None, m
    if cut >= last or start == last:
        return m, None
    ratio = (cut - start) / (last - start)
    before = {k: int(_int(m, k) * ratio) for k in _COUNTERS}
    before.update(Start=start, Last=cut, RTT=0)
    after = {k: _int(m, k) - before[k] for k in _COUNTERS}
    after.update(Start=cut, Last=last, RTT=0)
    return before, after


def aggregate(metrics: list[dict[str, Any]], slice_ms: int) -> list[dict[str, Any]]:
    """Skydive's ``Aggregates``: ``metrics`` added into slices ``[lo, lo + slice_ms)`` from
    the first Start to the last Last, each metric split pro rata of time; empty slices are
    left out. Unlike Skydive, a metric starting exactly at the last Last (a one-packet flow,
    say) is counted, in a last slice, rather than dropped.

    Raises ``ValueError`` beyond :data:`MAX_AGGREGATE_SLICES` slices."""
    if slice_ms <= 0:
        raise ValueError("the slice length must be positive")
    if not metrics:
        return []
    first = min(_int(m, "Start") for m in metrics)
    end = max(_int(m, "Last") for m in metrics)
    steps = (end - first) // slice_ms + 1
    if steps > MAX_AGGREGATE_SLICES:
        raise ValueError(f"Aggregates available slices exceeded: {steps}/{MAX_AGGREGATE_SLICES}")
    slices: list[dict[str, Any] | None] = [None] * steps
    for metric in metrics:
        rest = metric
        for j in range(steps):
            lo = first + j * slice_ms
            hi = lo + slice_ms
            _, part = _split(rest, lo)
            if part is None or _is_zero(part):
                break
            inside, after = _split(part, hi)
            if inside is not None and _is_zero(inside) and lo <= _int(rest, "Start") < hi:
                inside, after = rest, None  # too small to split: all of it goes here
            if inside is None:
                continue
            slot = slices[j]
            if slot is None:
                slices[j] = _counters(inside, lo, min(hi, end))
            else:
                _add(slot, inside)
            if after is None or _is_zero(after):
                break
            rest = after
    return [s for s in slices if s is not None]


# -- registry ----------------------------------------------------------------------------------


def build_flow_registry(store: FlowStore, registry: StepRegistry | None = None) -> StepRegistry:
    """A registry (new, or ``registry``) with the flow steps over ``store``."""
    reg = registry if registry is not None else StepRegistry()
    reg.register("Flows", flows_step(store))
    for name in ("Hops", "CaptureNode", "Nodes", "In", "Out", "Both"):
        reg.register(name, _node_step(name.upper()))
    reg.register("Node", _node_step("CAPTURENODE"))
    reg.register("Metrics", _metrics)
    reg.register("Aggregates", _aggregates)
    reg.register("Dedup", _dedup)
    reg.register("Sort", _sort)
    reg.register("Sum", _sum)
    reg.register("Count", _count)
    return reg
