"""Graph elements in Skydive's wire format (DESIGN.md §2.1).

A node is ``{"ID", "Metadata", "Host", "Origin", "CreatedAt", "UpdatedAt", "Revision"}``
(plus ``"DeletedAt"`` once deleted); an edge adds ``"Parent"`` and ``"Child"``. Times are Unix
milliseconds. Elements are mutable, but only the :class:`~pyskydive.graph.graph.Graph` that owns
them mutates them: everyone else reads, or asks the graph.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

Metadata = dict[str, Any]

__all__ = ["Edge", "Element", "Metadata", "Node", "get_field", "now_ms"]


def now_ms() -> int:
    """The current Unix time in milliseconds, the unit of every wire timestamp."""
    return time.time_ns() // 1_000_000


_MISSING = object()


def get_field(metadata: Metadata, key: str) -> Any:
    """Value at a dotted ``key`` (``"Captures.ID"``), or ``None`` when absent."""
    if key in metadata:
        return metadata[key]
    value: Any = metadata
    for part in key.split("."):
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
            if value is _MISSING:
                return None
        else:
            return None
    return value


@dataclass(slots=True, eq=False)
class Element:
    """What nodes and edges share."""

    id: str
    metadata: Metadata
    host: str
    origin: str
    created_at: int
    updated_at: int
    revision: int = 1
    deleted_at: int | None = field(default=None)

    def to_wire(self) -> dict[str, Any]:
        """The element as Skydive serialises it (the metadata is shared, not copied)."""
        out: dict[str, Any] = {
            "ID": self.id,
            "Metadata": self.metadata,
            "Host": self.host,
            "Origin": self.origin,
            "CreatedAt": self.created_at,
            "UpdatedAt": self.updated_at,
            "Revision": self.revision,
        }
        if self.deleted_at is not None:
            out["DeletedAt"] = self.deleted_at
        return out

    def get(self, key: str) -> Any:
        """Metadata value at a dotted key, or ``None``."""
        return get_field(self.metadata, key)


@dataclass(slots=True, eq=False)
class Node(Element):
    """A vertex: a host, a namespace, an interface, a bridge, ..."""


@dataclass(slots=True, eq=False)
class Edge(Element):
    """A directed relation from ``parent`` to ``child`` (node IDs)."""

    parent: str = ""
    child: str = ""

    def to_wire(self) -> dict[str, Any]:
        out = Element.to_wire(self)
        out["Parent"] = self.parent
        out["Child"] = self.child
        return out
