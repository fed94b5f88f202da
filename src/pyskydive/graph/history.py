"""Topology history: the revisions of a live graph, and an in-memory store of them.

Theory of operation
-------------------
:class:`HistoryRecorder` listens to a live :class:`~pyskydive.graph.Graph` and turns each
change into :class:`~pyskydive.storage.base.Revision` objects handed to a sink (a topology
backend's ``record``), synchronously and in order:

==================  ==========================================================================
change              revisions
==================  ==========================================================================
added               a new one, ``valid_from`` = the element's ``UpdatedAt``
updated             the current one closed at the new ``UpdatedAt``, a new one opened there
deleted             the current one closed at ``DeletedAt`` (its element then has DeletedAt)
==================  ==========================================================================

A revision's element is the wire dict as JSON bytes (:class:`JsonElement`): a copy (the graph
mutates metadata in place) that costs a few hundred bytes, not a decoded tree of several KiB.
Times never go backwards within one element: a change stamped before the current revision
started (a peer's clock) is recorded at that revision's start.

:class:`MemoryHistory` is a :class:`~pyskydive.storage.base.TopologyBackend` kept in memory,
for tests and for an analyzer without storage: closed revisions are dropped once older than
``max_age_ms`` or beyond ``max_revisions`` (oldest closed first); current ones are the live
graph and are always kept. It is thread safe: the loop records, worker threads read.

:func:`graph_from_wire` builds a throwaway :class:`Graph` from what a backend answers, for a
query to run on the graph as it was.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Literal

from pyskydive.errors import MessageError
from pyskydive.graph.elements import Edge, Element, Node, now_ms
from pyskydive.graph.graph import BaseListener, Graph, Op
from pyskydive.graph.messages import EdgeRecord, NodeRecord, edge_from_obj, node_from_obj
from pyskydive.storage.base import JsonElement, Revision, element_dict

__all__ = ["HistoryRecorder", "MemoryHistory", "RevisionSink", "graph_from_wire"]

#: Where revisions go: a topology backend's ``record``.
RevisionSink = Callable[[list[Revision]], None]

_Key = tuple[str, str]
Wire = list[dict[str, Any]]


def _snapshot(element: Element) -> JsonElement:
    """The element's wire dict as JSON bytes (a copy: the graph mutates metadata in place)."""
    return JsonElement.of(element.to_wire())


class HistoryRecorder(BaseListener):
    """A graph listener that turns every change into revisions for ``sink``."""

    def __init__(self, sink: RevisionSink) -> None:
        self._sink = sink
        self._current: dict[_Key, Revision] = {}

    def attach(self, graph: Graph) -> None:
        """Record what ``graph`` holds now, then every change of it."""
        revisions = [self._open("node", n, n.updated_at) for n in graph.nodes.values()]
        revisions += [self._open("edge", e, e.updated_at) for e in graph.edges.values()]
        if revisions:
            self._sink(revisions)
        graph.add_listener(self)

    def detach(self, graph: Graph) -> None:
        graph.remove_listener(self)

    def _open(self, kind: Literal["node", "edge"], element: Element, t: int) -> Revision:
        rev = Revision(kind, element.id, _snapshot(element), valid_from=t)
        self._current[(kind, element.id)] = rev
        return rev

    def _added(self, kind: Literal["node", "edge"], element: Element) -> None:
        out: list[Revision] = []
        t = element.updated_at
        prev = self._current.get((kind, element.id))
        if prev is not None:  # re-added without a deletion we saw: close the stale one
            t = max(t, prev.valid_from)
            out.append(replace(prev, valid_to=t))
        out.append(self._open(kind, element, t))
        self._sink(out)

    def _updated(self, kind: Literal["node", "edge"], element: Element) -> None:
        prev = self._current.get((kind, element.id))
        if prev is None:
            self._added(kind, element)
            return
        t = max(element.updated_at, prev.valid_from)
        self._sink([replace(prev, valid_to=t), self._open(kind, element, t)])

    def _deleted(self, kind: Literal["node", "edge"], element: Element) -> None:
        prev = self._current.pop((kind, element.id), None)
        if prev is None:
            return
        t = element.deleted_at if element.deleted_at is not None else element.updated_at
        t = max(t, prev.valid_from)
        last = element_dict(prev.element)
        last["DeletedAt"] = t
        self._sink([replace(prev, element=JsonElement.of(last), valid_to=t)])

    def on_node_added(self, node: Node) -> None:
        self._added("node", node)

    def on_node_updated(self, node: Node, ops: list[Op]) -> None:
        self._updated("node", node)

    def on_node_deleted(self, node: Node) -> None:
        self._deleted("node", node)

    def on_edge_added(self, edge: Edge) -> None:
        self._added("edge", edge)

    def on_edge_updated(self, edge: Edge, ops: list[Op]) -> None:
        self._updated("edge", edge)

    def on_edge_deleted(self, edge: Edge) -> None:
        self._deleted("edge", edge)


class MemoryHistory:
    """An in-memory :class:`~pyskydive.storage.base.TopologyBackend`, bounded by age and size."""

    def __init__(
        self,
        *,
        max_age_ms: int = 3_600_000,
        max_revisions: int = 200_000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if max_age_ms <= 0 or max_revisions <= 0:
            raise ValueError("max_age_ms and max_revisions must be positive")
        self.max_age_ms = max_age_ms
        self.max_revisions = max_revisions
        self._clock = clock
        self._lock = threading.Lock()
        # (kind, id) -> revisions by valid_from; the current one (valid_to None) is last
        self._by_key: dict[_Key, list[Revision]] = {}
        self._closed: deque[Revision] = deque()  # in the order they were closed
        self._count = 0
        self.dropped = 0  # closed revisions forgotten because of the bounds

    def __len__(self) -> int:
        return self._count

    # -- writing ---------------------------------------------------------------------------

    def record(self, revisions: Iterable[Revision]) -> None:
        with self._lock:
            for rev in revisions:
                self._record(rev)
            self._prune(self._clock())

    def close_live(self, t: int) -> None:
        """End every current revision at ``t`` (its element then has ``DeletedAt``)."""
        with self._lock:
            for revs in self._by_key.values():
                cur = revs[-1]
                if cur.valid_to is None and cur.valid_from <= t:
                    last = element_dict(cur.element)
                    last["DeletedAt"] = t
                    revs[-1] = replace(cur, element=JsonElement.of(last), valid_to=t)
                    self._closed.append(revs[-1])
            self._prune(self._clock())

    def _record(self, rev: Revision) -> None:
        revs = self._by_key.setdefault((rev.kind, rev.id), [])
        for i in range(len(revs) - 1, -1, -1):  # the closure of a current revision
            old = revs[i]
            if old.valid_to is None and old.valid_from == rev.valid_from:
                revs[i] = rev
                if rev.valid_to is not None:
                    self._closed.append(rev)
                return
        bisect.insort_right(revs, rev, key=_valid_from)
        self._count += 1
        if rev.valid_to is not None:
            self._closed.append(rev)

    def _prune(self, now: int) -> None:
        horizon = now - self.max_age_ms
        closed = self._closed
        while closed and (self._count > self.max_revisions or _end(closed[0]) < horizon):
            rev = closed.popleft()
            key = (rev.kind, rev.id)
            revs = self._by_key.get(key)
            if revs is None:
                continue
            for i, old in enumerate(revs):
                if old is rev:
                    del revs[i]
                    self._count -= 1
                    self.dropped += 1
                    break
            if not revs:
                del self._by_key[key]

    # -- reading ---------------------------------------------------------------------------

    def graph_at(self, t: int) -> tuple[Wire, Wire]:
        """Nodes and edges as they were at ``t`` (ms)."""

        def pick(revs: list[Revision]) -> Revision | None:
            for rev in reversed(revs):
                if rev.valid_from <= t:
                    return rev if rev.valid_to is None or rev.valid_to > t else None
            return None

        return self._collect(pick)

    def graph_during(self, start: int, end: int) -> tuple[Wire, Wire]:
        """Every element alive at some point of ``[start, end]``, in its latest revision."""

        def pick(revs: list[Revision]) -> Revision | None:
            for rev in reversed(revs):
                if rev.valid_from <= end:
                    return rev if rev.valid_to is None or rev.valid_to > start else None
            return None

        return self._collect(pick)

    def live(self) -> tuple[Wire, Wire]:
        return self._collect(lambda revs: revs[-1] if revs[-1].valid_to is None else None)

    def revisions(
        self, kind: Literal["node", "edge"], ids: Iterable[str], start: int, end: int
    ) -> dict[str, Wire]:
        """Each element's revisions overlapping ``[start, end]`` (``valid_from <= end`` and
        still current or ending after ``start``), oldest first; ``[]`` for an id with none."""
        picked: dict[str, list[Mapping[str, Any]]] = {}
        with self._lock:
            for element_id in ids:
                revs = self._by_key.get((kind, element_id), ())
                picked[element_id] = [
                    rev.element
                    for rev in revs
                    if rev.valid_from <= end and (rev.valid_to is None or rev.valid_to > start)
                ]
        return {i: [element_dict(e) for e in elements] for i, elements in picked.items()}

    def _collect(self, pick: Callable[[list[Revision]], Revision | None]) -> tuple[Wire, Wire]:
        nodes: Wire = []
        edges: Wire = []
        with self._lock:
            for (kind, _), revs in self._by_key.items():
                rev = pick(revs)
                if rev is not None:
                    (nodes if kind == "node" else edges).append(element_dict(rev.element))
        return nodes, edges


def _valid_from(rev: Revision) -> int:
    return rev.valid_from


def _end(rev: Revision) -> int:
    return rev.valid_from if rev.valid_to is None else rev.valid_to


def graph_from_wire(
    nodes: Iterable[Mapping[str, Any]], edges: Iterable[Mapping[str, Any]], host: str
) -> Graph:
    """A new graph holding ``nodes`` and ``edges`` (wire dicts, e.g. from a backend).

    The dicts' ``Metadata`` become the elements' metadata (not copied): the graph is meant to
    be read, not edited. Edges whose ends are absent are left out; a malformed element raises
    :class:`~pyskydive.errors.MessageError`.
    """
    graph = Graph(host)
    for obj in nodes:
        n = node_from_obj(obj, require_metadata=False)
        if n.id not in graph.nodes:
            node = graph.add_node(n.id, n.metadata, **_stamps(n))
            node.deleted_at = _deleted_at(obj)
    for obj in edges:
        e = edge_from_obj(obj, require_metadata=False)
        if e.parent in graph.nodes and e.child in graph.nodes and e.id not in graph.edges:
            edge = graph.add_edge(e.id, e.parent, e.child, e.metadata, **_stamps(e))
            edge.deleted_at = _deleted_at(obj)
    return graph


def _stamps(rec: NodeRecord | EdgeRecord) -> dict[str, Any]:
    """A wire record's origin, host, times and revision, as the graph's add_* take them."""
    return {
        "origin": rec.origin,
        "host": rec.host,
        "created_at": rec.created_at if rec.created_at is not None else 0,
        "updated_at": rec.updated_at,
        "revision": rec.revision if rec.revision is not None else 1,
    }


def _deleted_at(obj: Mapping[str, Any]) -> int | None:
    value = obj.get("DeletedAt")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise MessageError(f"element {obj.get('ID')}: DeletedAt must be an integer")
    return value
