"""Subscriber filters: a subscriber whose view of the graph is a Gremlin query's result.

A subscriber may ask for a filtered stream (``X-Gremlin-Filter`` header, or
``SyncRequest.Obj.GremlinFilter``). Its view is the set of nodes and edges the filter selects
(a graph-shaped result as is; a node list with the edges between those nodes; an edge list
with the nodes at their ends). Graph changes are not forwarded one by one: they mark the view
dirty, and on the next loop iteration the filter is evaluated once for the whole burst. What
left the view is sent as ``EdgeDeleted``/``NodeDeleted`` (edges first), what entered as
``NodeAdded``/``EdgeAdded`` (nodes first), and what stayed but changed as ``NodeUpdated``/
``EdgeUpdated``, so the client's copy always equals the filter's current result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pyskydive.graph import Graph
from pyskydive.graph import messages as wire

__all__ = ["GraphFilter", "Selection", "select"]

log = logging.getLogger(__name__)

#: ``evaluate(query, graph)`` as provided by the Gremlin package.
Evaluate = Callable[[str, Graph], Any]

Selection = tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]


def select(result: Any, graph: Graph) -> Selection:
    """Turn a query result into ``(nodes, edges)`` maps of wire dicts by ID."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: dict[str, dict[str, Any]] = {}
    items = result if isinstance(result, list) else [result]
    for item in items:
        if not isinstance(item, dict):
            continue
        if "Nodes" in item or "Edges" in item:
            for n in item.get("Nodes") or []:
                nodes[n["ID"]] = n
            for e in item.get("Edges") or []:
                edges[e["ID"]] = e
        elif "Parent" in item and "Child" in item:
            edges[item["ID"]] = item
        elif "ID" in item:
            nodes[item["ID"]] = item
    # Edges bring their ends; nodes bring the edges between them.
    for e in list(edges.values()):
        for end in (e["Parent"], e["Child"]):
            if end not in nodes and (n := graph.get_node(end)) is not None:
                nodes[end] = n.to_wire()
    for node_id in list(nodes):
        for edge in graph.out_edges(node_id):
            if edge.child in nodes and edge.id not in edges:
                edges[edge.id] = edge.to_wire()
    return nodes, edges


class GraphFilter:
    """The filtered view of one subscriber; ``send(text)`` delivers to it."""

    def __init__(
        self, query: str, graph: Graph, evaluate: Evaluate, send: Callable[[str], None]
    ) -> None:
        self.query = query
        self.graph = graph
        self._evaluate = evaluate
        self._send = send
        self._nodes: dict[str, dict[str, Any]] = {}
        self._edges: dict[str, dict[str, Any]] = {}
        self._changed: set[str] = set()
        self._scheduled = False

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Evaluate now and make that the view; the ``SyncReply`` body."""
        self._nodes, self._edges = select(self._evaluate(self.query, self.graph), self.graph)
        self._changed.clear()
        return {"Nodes": list(self._nodes.values()), "Edges": list(self._edges.values())}

    def touched(self, element_id: str) -> None:
        """Something changed in the graph: re-evaluate after the current burst."""
        self._changed.add(element_id)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._refresh)

    def _refresh(self) -> None:
        self._scheduled = False
        try:
            nodes, edges = select(self._evaluate(self.query, self.graph), self.graph)
        except Exception as exc:  # the filter was valid at subscribe time; keep the stream
            log.warning("subscriber filter %r failed: %s", self.query, exc)
            return
        changed, self._changed = self._changed, set()
        out: list[tuple[str, dict[str, Any]]] = []
        out += [(wire.EDGE_DELETED, e) for i, e in self._edges.items() if i not in edges]
        out += [(wire.NODE_DELETED, n) for i, n in self._nodes.items() if i not in nodes]
        for i, n in nodes.items():
            if i not in self._nodes:
                out.append((wire.NODE_ADDED, n))
            elif i in changed:
                out.append((wire.NODE_UPDATED, n))
        for i, e in edges.items():
            if i not in self._edges:
                out.append((wire.EDGE_ADDED, e))
            elif i in changed:
                out.append((wire.EDGE_UPDATED, e))
        self._nodes, self._edges = nodes, edges
        for type_, obj in out:
            self._send(wire.encode(wire.envelope(type_, obj)))
