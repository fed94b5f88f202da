"""WebSocket wire messages of namespace ``Graph`` (DESIGN.md §2.3), sans I/O.

Envelope: ``{"Namespace", "Type", "UUID", "Status", "Obj"}`` as JSON text. :func:`parse` turns
text into a :class:`Message` or raises :class:`~pyskydive.errors.MessageError` with a one-line
reason; :func:`node_from_obj` / :func:`edge_from_obj` check the shape of a pushed element.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pyskydive.errors import MessageError
from pyskydive.graph.elements import Edge, Node
from pyskydive.graph.graph import Op

__all__ = [
    "EDGE_TYPES",
    "GRAPH_NS",
    "NODE_TYPES",
    "EdgeRecord",
    "Message",
    "NodeRecord",
    "edge_from_obj",
    "encode",
    "envelope",
    "node_from_obj",
    "ops_from_obj",
    "ops_to_obj",
    "parse",
]

GRAPH_NS = "Graph"

SYNC_REQUEST = "SyncRequest"
SYNC_REPLY = "SyncReply"
SYNC = "Sync"
NODE_ADDED, NODE_UPDATED, NODE_DELETED = "NodeAdded", "NodeUpdated", "NodeDeleted"
EDGE_ADDED, EDGE_UPDATED, EDGE_DELETED = "EdgeAdded", "EdgeUpdated", "EdgeDeleted"
NODE_PARTIALLY_UPDATED = "NodePartiallyUpdated"
EDGE_PARTIALLY_UPDATED = "EdgePartiallyUpdated"

NODE_TYPES = frozenset({NODE_ADDED, NODE_UPDATED, NODE_DELETED, NODE_PARTIALLY_UPDATED})
EDGE_TYPES = frozenset({EDGE_ADDED, EDGE_UPDATED, EDGE_DELETED, EDGE_PARTIALLY_UPDATED})
KNOWN_TYPES = NODE_TYPES | EDGE_TYPES | {SYNC_REQUEST, SYNC_REPLY, SYNC}


@dataclass(frozen=True, slots=True)
class Message:
    namespace: str
    type: str
    obj: Any
    uuid: str | None = None
    status: int | None = None


def envelope(
    type_: str,
    obj: Any,
    *,
    namespace: str = GRAPH_NS,
    uuid: str | None = None,
    status: int | None = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {"Namespace": namespace, "Type": type_, "Obj": obj}
    if uuid is not None:
        msg["UUID"] = uuid
    if status is not None:
        msg["Status"] = status
    return msg


def encode(msg: dict[str, Any]) -> str:
    """Serialise an envelope to JSON text (once; the text is shared by every receiver)."""
    return orjson.dumps(msg).decode()


def parse(text: str | bytes) -> Message:
    """Parse one envelope; a one-line :class:`MessageError` on anything malformed."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"message is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MessageError("message must be a JSON object")
    type_ = raw.get("Type")
    if not isinstance(type_, str) or not type_:
        raise MessageError("message has no Type")
    namespace = raw.get("Namespace", GRAPH_NS)
    if not isinstance(namespace, str):
        raise MessageError("Namespace must be a string")
    uuid = raw.get("UUID")
    status = raw.get("Status")
    return Message(
        namespace=namespace,
        type=type_,
        obj=raw.get("Obj"),
        uuid=uuid if isinstance(uuid, str) else None,
        status=status if isinstance(status, int) else None,
    )


@dataclass(frozen=True, slots=True)
class NodeRecord:
    id: str
    metadata: dict[str, Any]
    host: str
    origin: str
    created_at: int | None
    updated_at: int | None
    revision: int | None


@dataclass(frozen=True, slots=True)
class EdgeRecord:
    id: str
    parent: str
    child: str
    metadata: dict[str, Any]
    host: str
    origin: str
    created_at: int | None
    updated_at: int | None
    revision: int | None


def _common(obj: Any, what: str) -> tuple[str, dict[str, Any], str, str, Any, Any, Any]:
    if not isinstance(obj, dict):
        raise MessageError(f"{what} must be a JSON object")
    element_id = obj.get("ID")
    if not isinstance(element_id, str) or not element_id:
        raise MessageError(f"{what} has no ID")
    metadata = obj.get("Metadata", {})
    if not isinstance(metadata, dict):
        raise MessageError(f"{what} {element_id}: Metadata must be an object")
    host = obj.get("Host", "")
    origin = obj.get("Origin", "")
    if not isinstance(host, str) or not isinstance(origin, str):
        raise MessageError(f"{what} {element_id}: Host and Origin must be strings")
    times = []
    for key in ("CreatedAt", "UpdatedAt", "Revision"):
        value = obj.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise MessageError(f"{what} {element_id}: {key} must be an integer")
        times.append(value)
    return element_id, metadata, host, origin, times[0], times[1], times[2]


def node_from_obj(obj: Any, *, require_metadata: bool = True) -> NodeRecord:
    """Check a node pushed by a peer: it needs an ID and ``Metadata.Name``/``Type`` strings."""
    element_id, md, host, origin, created, updated, revision = _common(obj, "node")
    if require_metadata:
        for key in ("Name", "Type"):
            if not isinstance(md.get(key), str) or not md.get(key):
                raise MessageError(f"node {element_id}: Metadata.{key} is missing")
    return NodeRecord(element_id, md, host, origin, created, updated, revision)


def edge_from_obj(obj: Any, *, require_metadata: bool = True) -> EdgeRecord:
    """Check an edge pushed by a peer: ID, Parent, Child and ``Metadata.RelationType``."""
    element_id, md, host, origin, created, updated, revision = _common(obj, "edge")
    parent, child = obj.get("Parent"), obj.get("Child")
    if not isinstance(parent, str) or not parent or not isinstance(child, str) or not child:
        raise MessageError(f"edge {element_id}: Parent and Child are required")
    if require_metadata and not isinstance(md.get("RelationType"), str):
        raise MessageError(f"edge {element_id}: Metadata.RelationType is missing")
    return EdgeRecord(element_id, parent, child, md, host, origin, created, updated, revision)


def ops_to_obj(element: Node | Edge, ops: list[Op]) -> dict[str, Any]:
    """The Obj of a ``*PartiallyUpdated`` message."""
    return {
        "ID": element.id,
        "UpdatedAt": element.updated_at,
        "Revision": element.revision,
        "Ops": [
            {"Type": t, "Key": k} if v is None and t != 1 else {"Type": t, "Key": k, "Value": v}
            for t, k, v in ops
        ],
    }


def ops_from_obj(obj: Any) -> tuple[str, int | None, int | None, list[Op]]:
    """Parse a ``*PartiallyUpdated`` Obj into ``(id, updated_at, revision, ops)``."""
    if not isinstance(obj, dict) or not isinstance(obj.get("ID"), str):
        raise MessageError("partial update needs an ID")
    raw_ops = obj.get("Ops")
    if not isinstance(raw_ops, list):
        raise MessageError(f"partial update of {obj['ID']}: Ops must be a list")
    ops: list[Op] = []
    for i, raw in enumerate(raw_ops):
        if not isinstance(raw, dict) or raw.get("Type") not in (1, 2):
            raise MessageError(f"partial update of {obj['ID']}: Ops[{i}] needs Type 1 or 2")
        key = raw.get("Key")
        if not isinstance(key, str) or not key:
            raise MessageError(f"partial update of {obj['ID']}: Ops[{i}] needs a Key")
        ops.append((raw["Type"], key, raw.get("Value")))
    updated, revision = obj.get("UpdatedAt"), obj.get("Revision")
    return (
        obj["ID"],
        updated if isinstance(updated, int) else None,
        revision if isinstance(revision, int) else None,
        ops,
    )
