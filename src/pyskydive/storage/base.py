"""The storage interface of the analyzer (DESIGN.md §2.6): what a backend must do.

Theory of operation
-------------------
The analyzer owns the live graph and the live flows in memory; a backend keeps their history
and the API resources, so that the past can be asked (``G.At(t, d)``, ``SyncRequest.Time``,
flows in the past) and nothing is lost on restart. Two backends implement these protocols:
``embedded`` (a directory on local disk, the default) and ``elasticsearch``.

Writes are fire-and-forget from the analyzer's loop: ``record_*`` and ``write_flows`` must not
block (a backend queues them, bounded, and writes from its own thread or task; when the queue
is full it reports backlog in :meth:`StorageStatus`) — the live graph keeps being served while
a backend is slow or down. Reads may block and are called from a worker thread.

Topology history: every revision of every node and edge is a :class:`Revision` (the wire dict
of the element as it was, and the interval during which it was the current one: ``valid_from``
inclusive to ``valid_to`` exclusive, ``None`` = still current). A node's ``Metadata`` change
ends one revision and starts the next at the same millisecond; a deletion ends the last one.

Times are Unix epoch milliseconds everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

__all__ = [
    "FlowBackend",
    "FlowQuery",
    "JsonElement",
    "ResourceBackend",
    "Revision",
    "StorageStatus",
    "TopologyBackend",
    "element_dict",
    "element_json",
]


class JsonElement(Mapping[str, Any]):
    """A wire dict kept as its JSON bytes: what a recorded revision holds.

    A revision is written once and read rarely, so the bytes (a few hundred per node) are kept
    rather than the decoded tree (several KiB); :func:`element_dict` decodes once per read.
    The Mapping methods decode on each call: use them for a key or two, not in loops.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    @classmethod
    def of(cls, wire: Mapping[str, Any]) -> JsonElement:
        return cls(orjson.dumps(wire))

    def __getitem__(self, key: str) -> Any:
        return orjson.loads(self.raw)[key]

    def __iter__(self) -> Iterator[str]:
        return iter(orjson.loads(self.raw))

    def __len__(self) -> int:
        return len(orjson.loads(self.raw))

    def __bool__(self) -> bool:
        return self.raw not in (b"{}", b"")

    def __repr__(self) -> str:
        return f"JsonElement({self.raw[:60]!r}...)"


def element_dict(element: Mapping[str, Any]) -> dict[str, Any]:
    """A revision's element as a fresh dict."""
    if isinstance(element, JsonElement):
        decoded: dict[str, Any] = orjson.loads(element.raw)
        return decoded
    return dict(element)


def element_json(element: Mapping[str, Any]) -> bytes:
    """A revision's element as JSON bytes."""
    if isinstance(element, JsonElement):
        return element.raw
    return orjson.dumps(dict(element))


@dataclass(frozen=True, slots=True)
class Revision:
    """One revision of a node or an edge and when it was the current one."""

    kind: Literal["node", "edge"]
    id: str
    #: The wire dict (``Node.to_wire()`` / ``Edge.to_wire()``); recorders give a JsonElement.
    element: Mapping[str, Any]
    valid_from: int
    valid_to: int | None = None  # None: still current


@dataclass(frozen=True, slots=True)
class FlowQuery:
    """Which stored flows: those alive at some point of ``[start, end]`` (ms), optionally
    only of some capture nodes (NodeTID) or some TrackingIDs, at most ``limit``."""

    start: int
    end: int
    node_tids: frozenset[str] | None = None
    tracking_ids: frozenset[str] | None = None
    limit: int | None = None


@dataclass(slots=True)
class StorageStatus:
    """What ``/api/status`` shows of a backend."""

    backend: str
    connected: bool = True
    queued: int = 0  # writes waiting
    dropped: int = 0  # writes lost because the bounded queue was full
    written: int = 0
    last_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class TopologyBackend(Protocol):
    def record(self, revisions: Iterable[Revision]) -> None:
        """Queue revisions (new ones and closures of previous ones); never blocks."""

    def graph_at(self, t: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Nodes and edges (wire dicts) as they were at ``t``."""

    def graph_during(
        self, start: int, end: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Nodes and edges that existed at any time in ``[start, end]``, each in its latest
        revision within that window (Skydive's ``At(t, duration)``)."""

    def live(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The revisions still current: what the analyzer reloads at start."""

    def close_live(self, t: int) -> None:
        """Queue the end, at ``t``, of every revision current when it is applied (before
        anything recorded after this call): at start the analyzer archives what was live when
        it stopped, as Skydive does, since the agents re-sync it. Never blocks."""

    def revisions(
        self, kind: Literal["node", "edge"], ids: Iterable[str], start: int, end: int
    ) -> dict[str, list[dict[str, Any]]]:
        """Each element's revisions overlapping ``[start, end]`` (wire dicts, oldest first):
        what ``Metrics()`` on nodes reads in the past (their ``LastUpdateMetric``)."""


class FlowBackend(Protocol):
    def write_flows(self, flows: Iterable[Mapping[str, Any]]) -> None:
        """Queue flow updates (wire dicts, latest state; ``LastUpdateMetric`` is the delta of
        the metric history); never blocks."""

    def query_flows(self, query: FlowQuery) -> list[dict[str, Any]]:
        """Flows alive in the window, latest state of each, as wire dicts."""

    def metrics(
        self, uuids: Iterable[str], start: int, end: int
    ) -> dict[str, list[dict[str, Any]]]:
        """Each flow's metric history (the ``LastUpdateMetric`` deltas) in the window."""


class ResourceBackend(Protocol):
    """API resources (captures, alerts, rules, API nodes and edges), as the embedded
    ``analyzer.store.ResourceStore`` already keeps them."""

    def list(self, kind: str) -> dict[str, dict[str, Any]]: ...

    def get(self, kind: str, resource_id: str) -> dict[str, Any] | None: ...

    def put(self, kind: str, resource_id: str, resource: dict[str, Any]) -> None: ...

    def delete(self, kind: str, resource_id: str) -> bool: ...
