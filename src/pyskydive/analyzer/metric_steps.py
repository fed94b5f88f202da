"""Gremlin metric steps: the metrics of flows and interfaces, and what to do with them.

Skydive v0.28's ``gremlin/traversal/metrics.go`` (``Aggregates``, ``Sum``, ``Count`` on
metrics) and ``topology.go`` (``InterfaceMetrics``). :mod:`pyskydive.analyzer.flow_steps`
registers them (its module docstring gives the semantics of ``Metrics()`` on flows and on
nodes, live and in a time-travel window); this module knows metrics, not flows:

* :class:`FlowMetrics` is the value ``Metrics()`` gives: a flow UUID, node ID or
  ``"Aggregated"`` → its metrics (dicts with ``ABPackets``, ``ABBytes``, ``BAPackets``,
  ``BABytes``, ``Start``, ``Last``, ``RTT``), serialised ``[{key: [metric, ...]}]``;
* :func:`past_flow_metrics` reads flows' metric histories from a flow backend,
  :func:`node_metrics` the interface metrics of nodes (from a topology backend in a window);
* :func:`aggregate` is ``Aggregates()``'s arithmetic, pure.

Storage reads block (call from a worker thread); their errors become positioned
``QueryError``s (:func:`read_storage`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol, TypeVar

from pyskydive.errors import StorageError
from pyskydive.graph import Node
from pyskydive.graph.elements import get_field
from pyskydive.gremlin import Arg, Scalar, StepContext, TimeWindow
from pyskydive.storage.base import FlowBackend

__all__ = [
    "DEFAULT_AGGREGATE_SECONDS",
    "MAX_AGGREGATE_SLICES",
    "NO_TOPOLOGY_HISTORY",
    "FlowMetrics",
    "RevisionSource",
    "aggregate",
    "metrics_count",
    "metrics_sum",
    "node_metrics",
    "past_flow_metrics",
    "read_storage",
    "step_aggregates",
]

#: Slice length of ``Aggregates()`` without argument, in seconds (Skydive: 30 s).
DEFAULT_AGGREGATE_SECONDS = 30
#: At most this many slices (Skydive's ``aggregatesMaxSlices``).
MAX_AGGREGATE_SLICES = 10_000

#: Why ``Metrics()`` on nodes fails in a window without a topology backend.
NO_TOPOLOGY_HISTORY = "interface metrics in the past need topology history (storage)"

_COUNTERS = ("ABPackets", "ABBytes", "BAPackets", "BABytes")

#: ``Metrics(key)`` on nodes: the metadata key read (Skydive's ``MetricsTraversalExtension``).
_NODE_METRIC_KEYS = {
    "LastUpdateMetric": "LastUpdateMetric",
    "SFlow": "SFlow.LastUpdateMetric",
    "SFlow.LastUpdateMetric": "SFlow.LastUpdateMetric",
    "Ovs": "Ovs.LastUpdateMetric",
    "Ovs.LastUpdateMetric": "Ovs.LastUpdateMetric",
}

R = TypeVar("R")


class RevisionSource(Protocol):
    """What interface metrics read in the past: the ``revisions`` of a
    :class:`~pyskydive.storage.base.TopologyBackend` (any backend is one)."""

    def revisions(
        self, kind: Literal["node", "edge"], ids: Iterable[str], start: int, end: int
    ) -> dict[str, list[dict[str, Any]]]: ...


class FlowMetrics:
    """``Metrics()``: flow UUID, node ID (interface metrics) or ``"Aggregated"`` → list of
    metric dicts."""

    kind = "metrics"
    __slots__ = ("metrics",)

    def __init__(self, metrics: dict[str, list[dict[str, Any]]]) -> None:
        self.metrics = metrics

    def to_wire(self) -> Any:
        return [self.metrics] if self.metrics else []


def read_storage(ctx: StepContext, what: str, call: Callable[..., R], *args: Any) -> R:
    """``call(*args)`` on storage, its error made a positioned ``QueryError``."""
    try:
        return call(*args)
    except StorageError as exc:
        raise ctx.error(f"{what}: {exc}") from exc


def _within(m: dict[str, Any], start: int, end: int) -> bool:
    """``m`` lies in ``[start, end]`` (Skydive's ``NewFilterIncludedIn``)."""
    return _int(m, "Start") >= start and _int(m, "Last") <= end


def past_flow_metrics(
    backend: FlowBackend, uuids: Iterable[str], window: TimeWindow, ctx: StepContext
) -> FlowMetrics:
    """Each flow's metric history lying within the window; up to ``t`` at an instant
    ``At(t)`` (Skydive's FlowMetrics leaves the range's From at 0 for a point). Flows without
    any are left out."""
    start = 0 if window.point else window.start
    wanted = list(dict.fromkeys(uuids))
    if not wanted:
        return FlowMetrics({})
    history = read_storage(ctx, "flow storage", backend.metrics, wanted, start, window.end)
    ctx.check()
    out: dict[str, list[dict[str, Any]]] = {}
    for uuid in wanted:
        metrics = [m for m in history.get(uuid, ()) if _within(m, start, window.end)]
        if metrics:
            out[uuid] = metrics
    return FlowMetrics(out)


def node_metrics(
    nodes: list[Node], args: tuple[Arg, ...], topology: RevisionSource | None, ctx: StepContext
) -> FlowMetrics:
    """``Metrics(key)`` on nodes: live, each node's metric; in a window, from ``topology``."""
    key = _node_metric_key(args, ctx)
    if ctx.window is None:
        return FlowMetrics(_live_node_metrics(nodes, key, ctx))
    if topology is None:
        raise ctx.error(NO_TOPOLOGY_HISTORY)
    return FlowMetrics(_past_node_metrics(topology, nodes, key, ctx.window, ctx))


def _node_metric_key(args: tuple[Arg, ...], ctx: StepContext) -> str:
    if not args:
        return "LastUpdateMetric"
    if len(args) > 1:
        raise ctx.error("accepts one parameter")
    key = _NODE_METRIC_KEYS.get(args[0]) if isinstance(args[0], str) else None
    if key is None:
        raise ctx.error(f"metric field unknown: {args[0]!r} (LastUpdateMetric, SFlow or Ovs)")
    return key


def _start(m: dict[str, Any]) -> int:
    return _int(m, "Start")


def _live_node_metrics(
    nodes: Iterable[Node], key: str, ctx: StepContext
) -> dict[str, list[dict[str, Any]]]:
    """Each node's current ``key`` metric (nodes without one are left out)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for node in ctx.iterate(nodes):
        m = node.get(key)
        if isinstance(m, dict) and node.id not in out:
            out[node.id] = [m]
    return out


def _past_node_metrics(
    topology: RevisionSource,
    nodes: Iterable[Node],
    key: str,
    window: TimeWindow,
    ctx: StepContext,
) -> dict[str, list[dict[str, Any]]]:
    """The ``key`` metric of each revision of each node in the window, one per Start (a
    revision made by another metadata change carries the same metric), oldest first; within
    the window, or the one current at an instant ``At(t)``."""
    ids = list(dict.fromkeys(node.id for node in nodes))
    if not ids:
        return {}
    revisions = read_storage(
        ctx, "topology history", topology.revisions, "node", ids, window.start, window.end
    )
    ctx.check()
    out: dict[str, list[dict[str, Any]]] = {}
    for node_id in ids:
        by_start: dict[int, dict[str, Any]] = {}
        for rev in revisions.get(node_id, ()):
            metadata = rev.get("Metadata")
            m = get_field(metadata, key) if isinstance(metadata, dict) else None
            if not isinstance(m, dict):
                continue
            if not window.point and not _within(m, window.start, window.end):
                continue
            by_start.setdefault(_start(m), m)
        if by_start:
            out[node_id] = sorted(by_start.values(), key=_start)
    return out


def metrics_count(value: FlowMetrics, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    """``Count()`` on metrics: the number of flows (nodes), as Skydive."""
    return Scalar(len(value.metrics))


def metrics_sum(value: FlowMetrics, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    """``Sum()`` / ``Sum(key)`` on metrics: the total metric, or the total of one field."""
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


def step_aggregates(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    """``Aggregates(seconds=30)``: the metrics added into time slices (see :func:`aggregate`)."""
    if not isinstance(value, FlowMetrics):
        return NotImplemented
    seconds = DEFAULT_AGGREGATE_SECONDS
    if args:
        arg = args[0]
        if len(args) > 1 or isinstance(arg, bool) or not isinstance(arg, int) or arg <= 0:
            raise ctx.error("Aggregates parameter has to be a positive number")
        seconds = arg
    metrics = [m for ms in value.metrics.values() for m in ms]
    window = ctx.window
    bounds = None if window is None or window.point else (window.start, window.end)
    try:
        aggregated = aggregate(metrics, seconds * 1000, bounds=bounds)
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


def aggregate(
    metrics: list[dict[str, Any]], slice_ms: int, *, bounds: tuple[int, int] | None = None
) -> list[dict[str, Any]]:
    """Skydive's ``Aggregates``: ``metrics`` added into slices ``[lo, lo + slice_ms)``, each
    metric split pro rata of time; empty slices are left out.

    The slices cover ``bounds`` (``(start, end)``, the last slice ending at ``end``; the parts
    of metrics outside are left out) when given, as Skydive in a time context, else the first
    Start to the last Last. Unlike Skydive, a metric starting exactly at that last Last (a
    one-packet flow, say) is counted, in a last slice, rather than dropped.

    Raises ``ValueError`` beyond :data:`MAX_AGGREGATE_SLICES` slices."""
    if slice_ms <= 0:
        raise ValueError("the slice length must be positive")
    if not metrics:
        return []
    if bounds is None:
        first = min(_int(m, "Start") for m in metrics)
        end = max(_int(m, "Last") for m in metrics)
        steps = (end - first) // slice_ms + 1
    else:
        first, end = bounds
        steps = max(0, -(-(end - first) // slice_ms))  # ceil
    if steps > MAX_AGGREGATE_SLICES:
        raise ValueError(f"Aggregates available slices exceeded: {steps}/{MAX_AGGREGATE_SLICES}")
    slices: list[dict[str, Any] | None] = [None] * steps
    for metric in metrics:
        rest = metric
        for j in range(steps):
            lo = first + j * slice_ms
            hi = lo + slice_ms if bounds is None else min(lo + slice_ms, end)
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
