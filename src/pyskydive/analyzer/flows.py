"""The analyzer's in-memory flow store (DESIGN.md §2.5).

Flows arrive as wire dicts (``Flow.to_wire()``): from ``POST /api/pcap`` today, from the agents
later. The store keeps the latest version of each flow by UUID, bounded by ``max_flows`` with the
oldest (least recently written) flow evicted first and counted in ``evicted``. Lookups by
NodeTID and by TrackingID use secondary indexes kept in step with the main map.

Items are :class:`StoredFlow` objects: ``get(key)`` (dotted keys over the wire dict; ``Link``,
``Network`` and ``Transport`` alone give ``[A, B]`` so that ``Has('Network', x)`` matches
either end, as in Skydive v0.28) and ``to_wire()``, which is what the Gremlin steps need.

Listeners (``add_listener(fn)``) are called synchronously after each ``put`` (with a one-flow
list) and each ``put_many`` (with the whole batch, once), with the wire dicts just stored; the
flow stream (``/ws/subscriber/flow``) is one. They must be quick and must not raise: an
exception is logged and counted in ``listener_errors``, and the other listeners still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from pyskydive.graph.elements import get_field

__all__ = ["DEFAULT_MAX_FLOWS", "FlowListener", "FlowStore", "StoredFlow"]

log = logging.getLogger(__name__)

#: Called with the wire dicts of the flows just stored.
FlowListener = Callable[[list[dict[str, Any]]], None]

DEFAULT_MAX_FLOWS = 500_000

_ENDPOINT_LAYERS = frozenset(("Link", "Network", "Transport"))


class StoredFlow:
    """One flow as stored: its wire dict, readable by Gremlin predicates."""

    __slots__ = ("wire",)

    def __init__(self, wire: dict[str, Any]) -> None:
        self.wire = wire

    @property
    def uuid(self) -> str:
        return str(self.wire.get("UUID", ""))

    def get(self, key: str) -> Any:
        if key in _ENDPOINT_LAYERS:
            layer = self.wire.get(key)
            if isinstance(layer, dict):
                return [layer.get("A"), layer.get("B")]
            return None
        return get_field(self.wire, key)

    def to_wire(self) -> dict[str, Any]:
        return self.wire

    def __repr__(self) -> str:
        return f"StoredFlow({self.uuid!r})"


class FlowStore:
    """Flows by UUID (latest version wins), bounded, indexed by NodeTID and TrackingID."""

    def __init__(self, max_flows: int = DEFAULT_MAX_FLOWS) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.max_flows = max_flows
        self.evicted = 0
        self._flows: dict[str, StoredFlow] = {}  # insertion order = age (oldest first)
        self._by_node: dict[str, dict[str, None]] = {}
        self._by_tracking: dict[str, dict[str, None]] = {}
        self._listeners: list[FlowListener] = []
        self.listener_errors = 0

    def __len__(self) -> int:
        return len(self._flows)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._flows

    def get(self, uuid: str) -> StoredFlow | None:
        return self._flows.get(uuid)

    def add_listener(self, listener: FlowListener) -> None:
        """Call ``listener`` with the wire dicts of every later ``put``/``put_many``."""
        self._listeners.append(listener)

    def remove_listener(self, listener: FlowListener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def put(self, wire: dict[str, Any]) -> None:
        """Store (or replace) one flow given as its wire dict; it needs a non-empty UUID."""
        self._store(wire)
        self._notify([wire])

    def put_many(self, wires: Iterable[dict[str, Any]]) -> int:
        """Store a batch; listeners hear of it once. A flow without UUID raises ``ValueError``
        after the flows before it were stored (and notified)."""
        stored: list[dict[str, Any]] = []
        try:
            for w in wires:
                self._store(w)
                stored.append(w)
        finally:
            if stored:
                self._notify(stored)
        return len(stored)

    def _store(self, wire: dict[str, Any]) -> None:
        uuid = wire.get("UUID")
        if not isinstance(uuid, str) or not uuid:
            raise ValueError("a flow needs a UUID")
        old = self._flows.pop(uuid, None)
        if old is not None:
            self._unindex(old)
        flow = StoredFlow(wire)
        self._flows[uuid] = flow
        _add(self._by_node, str(wire.get("NodeTID", "")), uuid)
        _add(self._by_tracking, str(wire.get("TrackingID", "")), uuid)
        while len(self._flows) > self.max_flows:
            oldest = next(iter(self._flows))
            self._unindex(self._flows.pop(oldest))
            self.evicted += 1

    def _notify(self, wires: list[dict[str, Any]]) -> None:
        for listener in list(self._listeners):
            try:
                listener(wires)
            except Exception:  # a listener's bug must not undo or block the store
                self.listener_errors += 1
                log.exception("flow listener %r failed", listener)

    def remove(self, uuid: str) -> bool:
        flow = self._flows.pop(uuid, None)
        if flow is None:
            return False
        self._unindex(flow)
        return True

    def flows(self) -> list[StoredFlow]:
        """Every stored flow, oldest first."""
        return list(self._flows.values())

    def by_node(self, node_tid: str) -> list[StoredFlow]:
        return [self._flows[u] for u in self._by_node.get(node_tid, ())]

    def by_nodes(self, node_tids: Iterable[str]) -> list[StoredFlow]:
        out: list[StoredFlow] = []
        for tid in dict.fromkeys(node_tids):
            out.extend(self.by_node(tid))
        return out

    def by_tracking_id(self, tracking_id: str) -> list[StoredFlow]:
        return [self._flows[u] for u in self._by_tracking.get(tracking_id, ())]

    def status(self) -> dict[str, Any]:
        return {"Flows": len(self._flows), "MaxFlows": self.max_flows, "Evicted": self.evicted}

    def _unindex(self, flow: StoredFlow) -> None:
        wire = flow.wire
        _discard(self._by_node, str(wire.get("NodeTID", "")), flow.uuid)
        _discard(self._by_tracking, str(wire.get("TrackingID", "")), flow.uuid)


def _add(index: dict[str, dict[str, None]], key: str, uuid: str) -> None:
    index.setdefault(key, {})[uuid] = None


def _discard(index: dict[str, dict[str, None]], key: str, uuid: str) -> None:
    bucket = index.get(key)
    if bucket is not None:
        bucket.pop(uuid, None)
        if not bucket:
            del index[key]
