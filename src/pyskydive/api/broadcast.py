"""Graph events to WebSocket text, encoded once and fanned out to every subscriber.

:class:`Broadcaster` is the graph listener; each :class:`Subscriber` has a bounded queue of
ready-to-send text. A subscriber that cannot keep up (queue full) is cut off rather than
letting the analyzer's memory grow without bound; it can reconnect and resync.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pyskydive.api.filtered import GraphFilter
from pyskydive.graph import Edge, Graph, Node, Op
from pyskydive.graph import messages as wire

__all__ = ["Broadcaster", "Subscriber"]

log = logging.getLogger(__name__)

QUEUE_LIMIT = 100_000


class Subscriber:
    """One connected client of the graph stream."""

    def __init__(self, remote: str, *, partial: bool, client_type: str, connected_at: int) -> None:
        self.remote = remote
        self.partial = partial
        self.client_type = client_type
        self.connected_at = connected_at
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.overflowed = False
        #: A Gremlin-filtered view (api/filtered.py): events go through it, not straight out.
        self.view: GraphFilter | None = None

    def push(self, text: str) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= QUEUE_LIMIT:
            self.overflowed = True
            log.warning("subscriber %s is too slow, disconnecting it", self.remote)
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(text)

    def status(self) -> dict[str, Any]:
        return {
            "Remote": self.remote,
            "ClientType": self.client_type,
            "ConnectTime": self.connected_at,
            "UpdatePolicy": "partial" if self.partial else "full",
        }


class Broadcaster:
    """Graph listener that serialises each event once and queues it for every subscriber."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.subscribers: set[Subscriber] = set()
        graph.add_listener(self)

    def add(self, sub: Subscriber) -> None:
        self.subscribers.add(sub)

    def discard(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def _send(self, type_: str, element: Node | Edge) -> None:
        if not self.subscribers:
            return
        text: str | None = None
        for sub in self.subscribers:
            if sub.view is not None:
                sub.view.touched(element.id)
                continue
            if text is None:
                text = wire.encode(wire.envelope(type_, element.to_wire()))
            sub.push(text)

    def _send_update(self, element: Node | Edge, ops: list[Op], full: str, partial: str) -> None:
        if not self.subscribers:
            return
        full_text: str | None = None
        partial_text: str | None = None
        for sub in self.subscribers:
            if sub.view is not None:
                sub.view.touched(element.id)
            elif sub.partial:
                if partial_text is None:
                    partial_text = wire.encode(
                        wire.envelope(partial, wire.ops_to_obj(element, ops))
                    )
                sub.push(partial_text)
            else:
                if full_text is None:
                    full_text = wire.encode(wire.envelope(full, element.to_wire()))
                sub.push(full_text)

    def on_node_added(self, node: Node) -> None:
        self._send(wire.NODE_ADDED, node)

    def on_node_updated(self, node: Node, ops: list[Op]) -> None:
        self._send_update(node, ops, wire.NODE_UPDATED, wire.NODE_PARTIALLY_UPDATED)

    def on_node_deleted(self, node: Node) -> None:
        self._send(wire.NODE_DELETED, node)

    def on_edge_added(self, edge: Edge) -> None:
        self._send(wire.EDGE_ADDED, edge)

    def on_edge_updated(self, edge: Edge, ops: list[Op]) -> None:
        self._send_update(edge, ops, wire.EDGE_UPDATED, wire.EDGE_PARTIALLY_UPDATED)

    def on_edge_deleted(self, edge: Edge) -> None:
        self._send(wire.EDGE_DELETED, edge)
