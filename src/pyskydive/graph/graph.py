"""The in-memory graph: elements, indexes, origins and change events.

Theory of operation
-------------------
One :class:`Graph` per process, owned by the event loop: probes, the agent link and the API all
run on that loop, so the graph is edited from one thread only and takes no locks. Every change
bumps the element's ``Revision`` and ``UpdatedAt`` and is reported synchronously to the
registered :class:`GraphListener` objects, in the order it happened. Deleting a node first
deletes its edges (each reported), then the node.

Lookups by the indexed metadata keys (``Type``, ``Name``, ``IfIndex``, ``MAC``, ``TID``, ...)
never scan the graph; other keys fall back to a scan of the candidates. Elements are grouped by
``Origin`` (``agent.<host>``, ``analyzer.<host>``) so that the analyzer can replace or drop the
sub-graph an agent sent as a whole.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from pyskydive.graph.elements import Edge, Element, Metadata, Node, get_field, now_ms

__all__ = [
    "DEL_OP",
    "INDEXED_KEYS",
    "SET_OP",
    "Graph",
    "GraphListener",
    "Op",
    "matches",
]

#: Partial update op types, as in Skydive's ``*PartiallyUpdated`` messages.
SET_OP = 1
DEL_OP = 2

#: One metadata change: ``(type, key, value)``; ``value`` is ``None`` for deletions.
Op = tuple[int, str, Any]

#: Metadata keys kept in an index (on nodes).
INDEXED_KEYS: tuple[str, ...] = (
    "Type",
    "Name",
    "IfIndex",
    "MAC",
    "TID",
    "UUID",
    "PeerIfIndex",
    "Path",
    "IPV4",
)


class GraphListener(Protocol):
    """Receives every change of a graph, synchronously, in order."""

    def on_node_added(self, node: Node) -> None: ...
    def on_node_updated(self, node: Node, ops: list[Op]) -> None: ...
    def on_node_deleted(self, node: Node) -> None: ...
    def on_edge_added(self, edge: Edge) -> None: ...
    def on_edge_updated(self, edge: Edge, ops: list[Op]) -> None: ...
    def on_edge_deleted(self, edge: Edge) -> None: ...


class BaseListener:
    """A :class:`GraphListener` that ignores everything: subclass it, override what matters."""

    def on_node_added(self, node: Node) -> None:
        pass

    def on_node_updated(self, node: Node, ops: list[Op]) -> None:
        pass

    def on_node_deleted(self, node: Node) -> None:
        pass

    def on_edge_added(self, edge: Edge) -> None:
        pass

    def on_edge_updated(self, edge: Edge, ops: list[Op]) -> None:
        pass

    def on_edge_deleted(self, edge: Edge) -> None:
        pass


def _match_value(actual: Any, expected: Any) -> bool:
    if callable(expected):
        return bool(expected(actual))
    if isinstance(actual, list) and not isinstance(expected, list):
        return any(_match_value(a, expected) for a in actual)
    return bool(actual == expected)


def matches(element: Element, match: Mapping[str, Any]) -> bool:
    """True if every ``key: value`` of ``match`` holds on ``element``'s metadata.

    Keys may be dotted; a list value matches if any element does; a callable value is a
    predicate applied to the actual value (``None`` when the key is absent).
    """
    md = element.metadata
    for key, expected in match.items():
        actual = md[key] if key in md else get_field(md, key)
        if actual is None and not callable(expected):
            return False
        if not _match_value(actual, expected):
            return False
    return True


_EMPTY: Mapping[str, Node] = types.MappingProxyType({})
_NO_EDGES: Mapping[str, Edge] = types.MappingProxyType({})


def _indexable(value: Any) -> bool:
    """Values an index lookup answers exactly (bools would collide with 0/1)."""
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _index_values(value: Any) -> Iterator[Hashable]:
    if isinstance(value, list):
        for v in value:
            if isinstance(v, Hashable):
                yield v
    elif isinstance(value, Hashable):
        yield value


class Graph:
    """A mutable graph of :class:`Node` and :class:`Edge` with change events."""

    def __init__(self, host: str, clock: Callable[[], int] = now_ms) -> None:
        self.host = host
        self._clock = clock
        self._nodes: dict[str, Node] = {}
        self._edges: dict[str, Edge] = {}
        self._out: dict[str, dict[str, Edge]] = {}  # node id -> edges where it is the parent
        self._in: dict[str, dict[str, Edge]] = {}  # node id -> edges where it is the child
        # key -> value -> {node id: node}: holding the nodes (not just IDs) lets a lookup
        # copy its answer at C speed instead of fetching every node by ID.
        self._index: dict[str, dict[Hashable, dict[str, Node]]] = {k: {} for k in INDEXED_KEYS}
        self._origins: dict[str, set[str]] = {}  # origin -> ids of its nodes and edges
        self._listeners: list[GraphListener] = []

    # -- listeners -------------------------------------------------------------------------

    def add_listener(self, listener: GraphListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: GraphListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def now(self) -> int:
        return self._clock()

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def nodes(self) -> Mapping[str, Node]:
        return self._nodes

    @property
    def edges(self) -> Mapping[str, Edge]:
        return self._edges

    def get_node(self, node_id: str) -> Node | None:
        return self._nodes.get(node_id)

    def get_edge(self, edge_id: str) -> Edge | None:
        return self._edges.get(edge_id)

    def get_nodes(self, match: Mapping[str, Any] | None = None) -> list[Node]:
        """Nodes whose metadata matches ``match``; indexed keys are looked up, not scanned."""
        if not match:
            return list(self._nodes.values())
        found: list[Mapping[str, Node]] = []
        rest: dict[str, Any] = {}
        for key, value in match.items():
            if key in self._index and _indexable(value):
                found.append(self._index[key].get(value, _EMPTY))
            else:
                rest[key] = value
        if not found:
            return [n for n in self._nodes.values() if matches(n, match)]
        found.sort(key=len)
        smallest = found[0]
        if len(found) == 1:
            candidates = list(smallest.values())
        else:
            candidates = [n for i, n in smallest.items() if all(i in f for f in found[1:])]
        if not rest:  # every term was answered by an index: no re-check needed
            return candidates
        return [n for n in candidates if matches(n, rest)]

    def get_edges(self, match: Mapping[str, Any] | None = None) -> list[Edge]:
        if not match:
            return list(self._edges.values())
        return [e for e in self._edges.values() if matches(e, match)]

    def out_edges(self, node_id: str, match: Mapping[str, Any] | None = None) -> list[Edge]:
        edges = self._out.get(node_id, {}).values()
        return [e for e in edges if not match or matches(e, match)]

    def in_edges(self, node_id: str, match: Mapping[str, Any] | None = None) -> list[Edge]:
        edges = self._in.get(node_id, {}).values()
        return [e for e in edges if not match or matches(e, match)]

    def links(self, node_id: str) -> Iterator[tuple[Edge, str]]:
        """Every edge of a node, in then out, with the node at its other end (no copies)."""
        for e in self._in.get(node_id, _NO_EDGES).values():
            yield e, e.parent
        for e in self._out.get(node_id, _NO_EDGES).values():
            yield e, e.child

    def children(self, node_id: str, edge_match: Mapping[str, Any] | None = None) -> list[Node]:
        return [self._nodes[e.child] for e in self.out_edges(node_id, edge_match)]

    def parents(self, node_id: str, edge_match: Mapping[str, Any] | None = None) -> list[Node]:
        return [self._nodes[e.parent] for e in self.in_edges(node_id, edge_match)]

    def edge_between(
        self, parent: str, child: str, match: Mapping[str, Any] | None = None
    ) -> Edge | None:
        for e in self._out.get(parent, {}).values():
            if e.child == child and (not match or matches(e, match)):
                return e
        return None

    def origin_ids(self, origin: str) -> set[str]:
        """IDs of the nodes and edges that came from ``origin``."""
        return set(self._origins.get(origin, ()))

    def origins(self) -> list[str]:
        return [o for o, ids in self._origins.items() if ids]

    def to_wire(self) -> dict[str, list[dict[str, Any]]]:
        """``{"Nodes": [...], "Edges": [...]}`` as in ``GET /api/topology``."""
        return {
            "Nodes": [n.to_wire() for n in self._nodes.values()],
            "Edges": [e.to_wire() for e in self._edges.values()],
        }

    # -- index upkeep ----------------------------------------------------------------------

    def _index_add(self, node: Node) -> None:
        md = node.metadata
        for key, idx in self._index.items():
            if key in md:
                for v in _index_values(md[key]):
                    idx.setdefault(v, {})[node.id] = node

    def _index_remove(self, node: Node) -> None:
        md = node.metadata
        for key, idx in self._index.items():
            if key in md:
                for v in _index_values(md[key]):
                    nodes = idx.get(v)
                    if nodes is not None:
                        nodes.pop(node.id, None)
                        if not nodes:
                            del idx[v]

    def _origin_add(self, element: Element) -> None:
        self._origins.setdefault(element.origin, set()).add(element.id)

    def _origin_remove(self, element: Element) -> None:
        ids = self._origins.get(element.origin)
        if ids is not None:
            ids.discard(element.id)
            if not ids:
                del self._origins[element.origin]

    # -- writing: nodes --------------------------------------------------------------------

    def add_node(
        self,
        node_id: str,
        metadata: Metadata,
        *,
        origin: str,
        host: str | None = None,
        created_at: int | None = None,
        updated_at: int | None = None,
        revision: int = 1,
    ) -> Node:
        """Add a node; an existing ID raises ``KeyError`` (use :meth:`upsert_node`)."""
        if node_id in self._nodes:
            raise KeyError(f"node {node_id} already exists")
        t = self._clock() if created_at is None else created_at
        node = Node(
            id=node_id,
            metadata=metadata,
            host=self.host if host is None else host,
            origin=origin,
            created_at=t,
            updated_at=t if updated_at is None else updated_at,
            revision=revision,
        )
        self._nodes[node_id] = node
        self._out[node_id] = {}
        self._in[node_id] = {}
        self._index_add(node)
        self._origin_add(node)
        for listener in self._listeners:
            listener.on_node_added(node)
        return node

    def update_node(
        self,
        node: Node,
        set_: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        *,
        updated_at: int | None = None,
        revision: int | None = None,
    ) -> list[Op]:
        """Set and delete top-level metadata keys; report and return what changed."""
        ops = _diff_ops(node.metadata, set_ or {}, delete)
        if ops:
            self._apply(node, ops, updated_at, revision)
            for listener in self._listeners:
                listener.on_node_updated(node, ops)
        return ops

    def replace_node_metadata(
        self,
        node: Node,
        metadata: Metadata,
        *,
        updated_at: int | None = None,
        revision: int | None = None,
    ) -> list[Op]:
        """Make ``node``'s metadata equal to ``metadata``; report the difference."""
        gone = [k for k in node.metadata if k not in metadata]
        return self.update_node(node, metadata, gone, updated_at=updated_at, revision=revision)

    def _apply(
        self, element: Element, ops: list[Op], updated_at: int | None, revision: int | None
    ) -> None:
        is_node = isinstance(element, Node)
        if is_node:
            self._index_remove(element)  # type: ignore[arg-type]
        md = element.metadata
        for op_type, key, value in ops:
            if op_type == SET_OP:
                md[key] = value
            else:
                md.pop(key, None)
        if is_node:
            self._index_add(element)  # type: ignore[arg-type]
        element.updated_at = self._clock() if updated_at is None else updated_at
        element.revision = element.revision + 1 if revision is None else revision

    def delete_node(self, node: Node, *, deleted_at: int | None = None) -> None:
        """Delete a node and, before it, every edge touching it."""
        if self._nodes.get(node.id) is not node:
            return
        t = self._clock() if deleted_at is None else deleted_at
        for edge in list(self._out[node.id].values()) + list(self._in[node.id].values()):
            self.delete_edge(edge, deleted_at=t)
        del self._nodes[node.id]
        del self._out[node.id]
        del self._in[node.id]
        self._index_remove(node)
        self._origin_remove(node)
        node.deleted_at = t
        for listener in self._listeners:
            listener.on_node_deleted(node)

    # -- writing: edges --------------------------------------------------------------------

    def add_edge(
        self,
        edge_id: str,
        parent: str,
        child: str,
        metadata: Metadata,
        *,
        origin: str,
        host: str | None = None,
        created_at: int | None = None,
        updated_at: int | None = None,
        revision: int = 1,
    ) -> Edge:
        """Add an edge between two existing nodes (``KeyError`` otherwise)."""
        if edge_id in self._edges:
            raise KeyError(f"edge {edge_id} already exists")
        if parent not in self._nodes or child not in self._nodes:
            missing = parent if parent not in self._nodes else child
            raise KeyError(f"edge {edge_id}: node {missing} does not exist")
        t = self._clock() if created_at is None else created_at
        edge = Edge(
            id=edge_id,
            metadata=metadata,
            host=self.host if host is None else host,
            origin=origin,
            created_at=t,
            updated_at=t if updated_at is None else updated_at,
            revision=revision,
            parent=parent,
            child=child,
        )
        self._edges[edge_id] = edge
        self._out[parent][edge_id] = edge
        self._in[child][edge_id] = edge
        self._origin_add(edge)
        for listener in self._listeners:
            listener.on_edge_added(edge)
        return edge

    def update_edge(
        self,
        edge: Edge,
        set_: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        *,
        updated_at: int | None = None,
        revision: int | None = None,
    ) -> list[Op]:
        ops = _diff_ops(edge.metadata, set_ or {}, delete)
        if ops:
            self._apply(edge, ops, updated_at, revision)
            for listener in self._listeners:
                listener.on_edge_updated(edge, ops)
        return ops

    def replace_edge_metadata(
        self,
        edge: Edge,
        metadata: Metadata,
        *,
        updated_at: int | None = None,
        revision: int | None = None,
    ) -> list[Op]:
        gone = [k for k in edge.metadata if k not in metadata]
        return self.update_edge(edge, metadata, gone, updated_at=updated_at, revision=revision)

    def delete_edge(self, edge: Edge, *, deleted_at: int | None = None) -> None:
        if self._edges.get(edge.id) is not edge:
            return
        del self._edges[edge.id]
        self._out[edge.parent].pop(edge.id, None)
        self._in[edge.child].pop(edge.id, None)
        self._origin_remove(edge)
        edge.deleted_at = self._clock() if deleted_at is None else deleted_at
        for listener in self._listeners:
            listener.on_edge_deleted(edge)

    # -- sub-graphs ------------------------------------------------------------------------

    def delete_origin(self, origin: str) -> int:
        """Delete every node and edge that came from ``origin``; returns how many."""
        ids = self._origins.get(origin)
        if not ids:
            return 0
        count = 0
        for element_id in [i for i in ids if i in self._edges]:
            edge = self._edges.get(element_id)
            if edge is not None:
                self.delete_edge(edge)
                count += 1
        for element_id in list(self._origins.get(origin, ())):
            node = self._nodes.get(element_id)
            if node is not None:
                self.delete_node(node)
                count += 1
        return count

    def descendants(self, node_id: str, edge_match: Mapping[str, Any]) -> list[Node]:
        """Every node reachable from ``node_id`` through edges matching ``edge_match``."""
        seen: set[str] = {node_id}
        out: list[Node] = []
        stack = [node_id]
        while stack:
            for child in self.children(stack.pop(), edge_match):
                if child.id not in seen:
                    seen.add(child.id)
                    out.append(child)
                    stack.append(child.id)
        return out


def _diff_ops(current: Metadata, set_: Mapping[str, Any], delete: Iterable[str]) -> list[Op]:
    ops: list[Op] = []
    for key, value in set_.items():
        if key not in current or current[key] != value:
            ops.append((SET_OP, key, value))
    for key in delete:
        if key in current and key not in set_:
            ops.append((DEL_OP, key, None))
    return ops
