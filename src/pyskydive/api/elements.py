"""Nodes and edges created through the REST API (``/api/node``, ``/api/edge``), sans HTTP.

They have the analyzer's origin (``analyzer.<host_id>``) and are kept in the embedded store
until deleted through the API, so they come back after an analyzer restart. An API edge may
join nodes that an agent owns: such an edge disappears with its ends (agent gone) and is added
again, from the store, as soon as both ends exist again.

JSON Patch on an element applies to its wire form and may only touch ``/Metadata/...``;
``Metadata.Name``, ``Metadata.Type`` and ``Metadata.TID`` (and an edge's
``Metadata.RelationType``) cannot change. Any node or edge may be patched or deleted; only API
elements are persisted.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections.abc import Callable
from typing import Any

from pyskydive.api.jsonpatch import apply_patch, parse_pointer
from pyskydive.errors import MessageError
from pyskydive.graph import BaseListener, Edge, Graph, Node
from pyskydive.graph import messages as wire
from pyskydive.storage.base import ResourceBackend

__all__ = ["ApiElements", "Conflict", "NotFound"]

log = logging.getLogger(__name__)

NODE, EDGE = "node", "edge"
_FROZEN = {NODE: ("Name", "Type", "TID"), EDGE: ("RelationType",)}


class NotFound(MessageError):
    """No such element."""


class Conflict(MessageError):
    """An element with that ID exists already."""


class ApiElements(BaseListener):
    """Creates, patches and deletes API nodes and edges; keeps them in the store."""

    def __init__(
        self,
        graph: Graph,
        store: ResourceBackend,
        origin: str,
        transient_keys: Callable[[str], set[str]] = lambda element_id: set(),
    ) -> None:
        self.graph = graph
        self.store = store
        self.origin = origin
        # keys that node rules merged into a node: not part of what is persisted
        self.transient_keys = transient_keys
        self._pending: dict[str, dict[str, Any]] = {}  # stored edges waiting for their ends
        self._retry_scheduled = False
        # the IDs of the stored elements, as of the last look at the store
        self._stored: dict[str, set[str]] = {NODE: set(), EDGE: set()}
        graph.add_listener(self)

    def restore(self) -> None:
        """Add the stored nodes and edges to the graph (at start-up)."""
        self._add_stored({NODE: self.store.list(NODE), EDGE: self.store.list(EDGE)})

    def _add_stored(self, stored: dict[str, dict[str, dict[str, Any]]]) -> None:
        for node_id, obj in stored[NODE].items():
            if node_id not in self.graph.nodes:
                self._add_node(wire.node_from_obj(obj))
        self._pending.update(stored[EDGE])
        self._stored = {kind: set(objs) for kind, objs in stored.items()}
        self._retry_pending(None)

    def resync(self) -> None:
        """The store changed behind our back (another analyzer on the same Elasticsearch):
        remove the elements deleted there, take the metadata patched there, and add the
        elements created there."""
        lists = {EDGE: self.store.list(EDGE), NODE: self.store.list(NODE)}
        for kind, stored in lists.items():
            for element_id in self._stored[kind] - set(stored):
                self._pending.pop(element_id, None)
                element = self._find(kind, element_id)
                if isinstance(element, Node):
                    self.graph.delete_node(element)
                elif element is not None:
                    self.graph.delete_edge(element)
            for element_id, obj in stored.items():
                element = self._find(kind, element_id)
                metadata = obj.get("Metadata")
                if element is None or not isinstance(metadata, dict):
                    continue
                skip = self.transient_keys(element_id) if kind == NODE else set()
                if metadata != {k: v for k, v in element.metadata.items() if k not in skip}:
                    merged = {**metadata, **{k: element.metadata[k] for k in skip}}
                    if isinstance(element, Node):
                        self.graph.replace_node_metadata(element, merged)
                    else:
                        self.graph.replace_edge_metadata(element, merged)
        self._add_stored(lists)

    def _find(self, kind: str, element_id: str) -> Node | Edge | None:
        if kind == NODE:
            return self.graph.get_node(element_id)
        return self.graph.get_edge(element_id)

    # -- create ----------------------------------------------------------------------------

    def create_node(self, body: dict[str, Any]) -> Node:
        body = dict(body)
        if not body.get("ID"):
            body["ID"] = str(uuid.uuid4())
        rec = wire.node_from_obj(body)
        if rec.id in self.graph.nodes:
            raise Conflict(f"node {rec.id} already exists")
        node = self._add_node(rec)
        self.store.put(NODE, node.id, node.to_wire())
        self._stored[NODE].add(node.id)
        return node

    def _add_node(self, rec: wire.NodeRecord) -> Node:
        return self.graph.add_node(
            rec.id,
            copy.deepcopy(rec.metadata),
            origin=self.origin,
            host=rec.host or self.graph.host,
            created_at=rec.created_at,
            updated_at=rec.updated_at,
            revision=rec.revision or 1,
        )

    def create_edge(self, body: dict[str, Any]) -> Edge:
        body = dict(body)
        if not body.get("ID"):
            body["ID"] = str(uuid.uuid4())
        rec = wire.edge_from_obj(body)
        if rec.id in self.graph.edges:
            raise Conflict(f"edge {rec.id} already exists")
        for field, end in (("Parent", rec.parent), ("Child", rec.child)):
            if end not in self.graph.nodes:
                raise MessageError(f"{field}: node {end} does not exist")
        edge = self._add_edge(rec)
        self.store.put(EDGE, edge.id, edge.to_wire())
        self._stored[EDGE].add(edge.id)
        return edge

    def _add_edge(self, rec: wire.EdgeRecord) -> Edge:
        return self.graph.add_edge(
            rec.id,
            rec.parent,
            rec.child,
            copy.deepcopy(rec.metadata),
            origin=self.origin,
            host=rec.host or self.graph.host,
            created_at=rec.created_at,
            updated_at=rec.updated_at,
            revision=rec.revision or 1,
        )

    # -- patch -----------------------------------------------------------------------------

    def patch(self, kind: str, element_id: str, patch: Any) -> Node | Edge | None:
        """Apply a JSON Patch; the element, or ``None`` if nothing changed (304)."""
        element = self._get(kind, element_id)
        if not isinstance(patch, list):
            raise MessageError("a JSON Patch must be an array of operations")
        for i, op in enumerate(patch):
            if not isinstance(op, dict):
                raise MessageError(f"operation {i} must be an object")
            for key in ("path", "from"):
                if key in op:
                    tokens = parse_pointer(op[key])
                    if len(tokens) < 2 or tokens[0] != "Metadata":
                        raise MessageError(
                            f"operation {i}: {op[key]}: only /Metadata/... can be patched"
                        )
        doc = element.to_wire()
        new = apply_patch(doc, patch)
        metadata = new.get("Metadata")
        if not isinstance(metadata, dict):
            raise MessageError("Metadata must be an object")
        for key in _FROZEN[kind]:
            if metadata.get(key) != element.metadata.get(key):
                raise MessageError(f"Metadata.{key} is not patchable")
        if metadata == element.metadata:
            return None
        if isinstance(element, Node):
            self.graph.replace_node_metadata(element, metadata)
        else:
            self.graph.replace_edge_metadata(element, metadata)
        if self.store.get(kind, element_id) is not None:
            stored = element.to_wire()
            skip = self.transient_keys(element_id) if kind == NODE else set()
            stored["Metadata"] = {k: v for k, v in metadata.items() if k not in skip}
            self.store.put(kind, element_id, stored)
        return element

    # -- delete ----------------------------------------------------------------------------

    def delete(self, kind: str, element_id: str) -> None:
        element = self._get(kind, element_id)
        if isinstance(element, Node):
            for edge_id, obj in self.store.list(EDGE).items():
                if element_id in (obj.get("Parent"), obj.get("Child")):
                    self.store.delete(EDGE, edge_id)
                    self._pending.pop(edge_id, None)
                    self._stored[EDGE].discard(edge_id)
            self.store.delete(NODE, element_id)
            self._stored[NODE].discard(element_id)
            self.graph.delete_node(element)
        else:
            self.store.delete(EDGE, element_id)
            self._pending.pop(element_id, None)
            self._stored[EDGE].discard(element_id)
            self.graph.delete_edge(element)

    def _get(self, kind: str, element_id: str) -> Node | Edge:
        element = self._find(kind, element_id)
        if element is None:
            raise NotFound(f"{kind} {element_id} not found")
        return element

    # -- pending edges (graph listener) ----------------------------------------------------

    def _retry_pending(self, node_id: str | None) -> None:
        for edge_id, obj in list(self._pending.items()):
            if node_id is not None and node_id not in (obj.get("Parent"), obj.get("Child")):
                continue
            if obj.get("Parent") in self.graph.nodes and obj.get("Child") in self.graph.nodes:
                del self._pending[edge_id]
                if edge_id not in self.graph.edges:
                    try:
                        self._add_edge(wire.edge_from_obj(obj))
                    except (MessageError, KeyError) as exc:
                        log.warning("cannot restore edge %s: %s", edge_id, exc)

    def on_node_added(self, node: Node) -> None:
        # Not from inside the graph's event dispatch (the other listeners must see the node
        # added before its edge): on the next loop iteration when there is a loop.
        if not self._pending or self._retry_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._retry_pending(node.id)
            return
        self._retry_scheduled = True
        loop.call_soon(self._retry_later)

    def _retry_later(self) -> None:
        self._retry_scheduled = False
        self._retry_pending(None)

    def on_edge_deleted(self, edge: Edge) -> None:
        stored = self.store.get(EDGE, edge.id)
        if stored is not None:  # its end went away, not an API delete: wait for it
            self._pending[edge.id] = stored
