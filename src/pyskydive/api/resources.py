"""REST resources with Skydive's CRUD shape (DESIGN.md §2.2).

``capture``, ``alert``, ``noderule`` and ``edgerule`` live in the embedded store; ``node`` and
``edge`` are graph elements (see :mod:`pyskydive.api.elements`). For each ``X``:

* ``GET /api/X`` -> ``{id: resource}``; ``GET /api/X/ID`` -> the resource, 404 if missing;
* ``POST /api/X`` -> 201 with the created resource (``UUID`` generated when absent);
* ``PATCH /api/X/ID`` (RFC 6902 JSON Patch) -> 200 with the new resource, 304 if unchanged;
* ``DELETE /api/X/ID`` -> 200.

Errors are ``{"Error": reason}`` (400s add ``"Field"``): 400 for a body that is not JSON or a
field that is missing or of the wrong type (the reason names the field), 404, 409 for a
duplicate capture (same Type, GremlinQuery and BPFFilter, as in Skydive) or an existing ID.
Unknown fields are dropped and ``null`` reads as the default, as Skydive's JSON decoding does.
Gremlin queries of captures, alerts and rules are evaluated once on creation, so a bad one is a
400 with the parser's message.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pyskydive.analyzer.ondemand import capture_nodes
from pyskydive.analyzer.rules import RuleEngine
from pyskydive.api.elements import ApiElements, Conflict, NotFound
from pyskydive.api.jsonpatch import apply_patch
from pyskydive.errors import MessageError, SkydiveError
from pyskydive.flow.captures import CAPTURE_TYPES, unsupported_reason
from pyskydive.gremlin.probepath import capture_query
from pyskydive.protocols.bpf import BPFError, compile_filter
from pyskydive.storage.base import ResourceBackend

__all__ = [
    "KINDS",
    "ResourceContext",
    "ResourceError",
    "resource_routes",
    "restore_resources",
    "validate",
]


class ResourceError(MessageError):
    """An API error with its HTTP status and, for 400s, the field at fault."""

    def __init__(self, status: int, reason: str, field: str | None = None) -> None:
        self.status = status
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


_REQUIRED = object()
_Spec = dict[str, tuple[type | tuple[type, ...], Any]]

_CAPTURE: _Spec = {
    "UUID": (str, ""),
    "GremlinQuery": (str, _REQUIRED),
    "BPFFilter": (str, ""),
    "Name": (str, ""),
    "Description": (str, ""),
    "Type": (str, ""),
    "Count": (int, 0),
    "Port": (int, 0),
    "SamplingRate": (int, 1),
    "PollingInterval": (int, 10),
    "RawPacketLimit": (int, 0),
    "HeaderSize": (int, 0),
    "ExtraTCPMetric": (bool, False),
    "IPDefrag": (bool, False),
    "ReassembleTCP": (bool, False),
    "LayerKeyMode": (str, "L2"),
    "Target": (str, ""),
    "TargetType": (str, ""),
}
_ALERT: _Spec = {
    "UUID": (str, ""),
    "Name": (str, ""),
    "Description": (str, ""),
    "Expression": (str, _REQUIRED),
    "Action": (str, ""),
    "Trigger": (str, "graph"),
    "CreateTime": (str, ""),
}
_NODERULE: _Spec = {
    "UUID": (str, ""),
    "Name": (str, ""),
    "Description": (str, ""),
    "Metadata": (dict, _REQUIRED),
    "Action": (str, _REQUIRED),
    "Query": (str, ""),
}
_EDGERULE: _Spec = {
    "UUID": (str, ""),
    "Name": (str, ""),
    "Description": (str, ""),
    "Src": (str, _REQUIRED),
    "Dst": (str, _REQUIRED),
    "Metadata": (dict, _REQUIRED),
}

#: The store-backed kinds and their fields (type, default).
KINDS: dict[str, _Spec] = {
    "capture": _CAPTURE,
    "alert": _ALERT,
    "noderule": _NODERULE,
    "edgerule": _EDGERULE,
}

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object"}


def _bad(field: str, reason: str) -> ResourceError:
    return ResourceError(400, reason, field)


def _check_type(field: str, value: Any, expected: type | tuple[type, ...]) -> None:
    if expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if not ok:
        name = _TYPE_NAMES.get(expected) if isinstance(expected, type) else None
        raise _bad(field, f"must be {name or expected}")


def _valid_duration(text: str) -> bool:
    return bool(re.fullmatch(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", text))


def validate(kind: str, body: Any) -> dict[str, Any]:
    """Check and normalise a resource of ``kind``: defaults filled in, unknown fields dropped.

    Raises :class:`ResourceError` (400) naming the field. Gremlin queries are not evaluated
    here (see :func:`_check_queries`).
    """
    if not isinstance(body, dict):
        raise ResourceError(400, "body must be a JSON object")
    out: dict[str, Any] = {}
    for field, (expected, default) in KINDS[kind].items():
        value = body.get(field)
        if value is None or (default is _REQUIRED and value in ("", {})):
            if default is _REQUIRED:
                raise _bad(field, "is required")
            out[field] = default
            continue
        _check_type(field, value, expected)
        if expected is int and value < 0:
            raise _bad(field, "must not be negative")
        out[field] = value
    if kind == "capture" and out["LayerKeyMode"] not in ("L2", "L3"):
        raise _bad("LayerKeyMode", "must be L2 or L3")
    elif kind == "alert":
        action, trigger = out["Action"], out["Trigger"]
        if action and not action.startswith(("http://", "https://", "file://")):
            raise _bad("Action", "must be an http://, https:// or file:// URL")
        if trigger != "graph" and not (
            trigger.startswith("duration:") and _valid_duration(trigger[len("duration:") :])
        ):
            raise _bad("Trigger", 'must be "graph" or "duration:<duration>" (e.g. duration:10s)')
    elif kind == "noderule":
        if out["Action"] not in ("create", "update"):
            raise _bad("Action", "must be create or update")
        if out["Action"] == "update" and not out["Query"]:
            raise _bad("Query", "is required for Action update")
        if out["Action"] == "create":
            for key in ("Name", "Type"):
                value = out["Metadata"].get(key)
                if not isinstance(value, str) or not value:
                    raise _bad(f"Metadata.{key}", "is required for Action create")
    elif kind == "edgerule":
        relation = out["Metadata"].get("RelationType")
        if not isinstance(relation, str) or not relation:
            raise _bad("Metadata.RelationType", "is required")
    return out


def _now_rfc3339() -> str:
    """Like Go's ``time.Time`` in JSON (RFC 3339, UTC, sub-second digits)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(eq=False)
class ResourceContext:
    """What the resource routes need of the analyzer."""

    store: ResourceBackend
    rules: RuleEngine
    elements: ApiElements
    #: Called when a capture is created, edited or deleted (on-demand captures re-place).
    captures_changed: Callable[[], None] | None = None


def restore_resources(rc: ResourceContext) -> None:
    """At start-up: re-add the API nodes and edges, and re-arm the stored rules."""
    rc.elements.restore()
    for rule in rc.store.list("noderule").values():
        rc.rules.add_node_rule(rule)
    for rule in rc.store.list("edgerule").values():
        rc.rules.add_edge_rule(rule)


def resync_resources(rc: ResourceContext) -> None:
    """The store changed behind our back (another analyzer on the same Elasticsearch): bring
    the rules, the API nodes and edges, and the captures in line with it."""
    for kind, armed, add, remove in (
        ("noderule", rc.rules.node_rules, rc.rules.add_node_rule, rc.rules.remove_node_rule),
        ("edgerule", rc.rules.edge_rules, rc.rules.add_edge_rule, rc.rules.remove_edge_rule),
    ):
        stored = rc.store.list(kind)
        for rule_id in [r for r in armed if r not in stored]:
            remove(rule_id)
        for rule_id, rule in stored.items():
            if armed.get(rule_id) != rule:
                remove(rule_id)
                add(rule)
    rc.elements.resync()
    if rc.captures_changed is not None:
        rc.captures_changed()


# -- store-backed kinds --------------------------------------------------------------------


class _StoreKind:
    def __init__(self, kind: str, rc: ResourceContext) -> None:
        self.kind = kind
        self.rc = rc

    def _check_queries(self, resource: dict[str, Any]) -> None:
        fields = {
            "capture": ("GremlinQuery",),
            "noderule": ("Query",),
            "edgerule": ("Src", "Dst"),
        }.get(self.kind, ())
        for field in fields:
            if resource.get(field):
                query = resource[field]
                try:
                    if self.kind == "capture":  # a capture may be written as a probe path
                        query = capture_query(query)
                    self.rc.rules.check_query(query)
                except (ValueError, SkydiveError) as exc:
                    raise _bad(field, str(exc)) from None

    def _check_capture(self, resource: dict[str, Any]) -> None:
        """400 for a filter libpcap rejects, an unknown type, or nodes none can run on."""
        if self.kind != "capture":
            return
        ctype = str(resource.get("Type") or "")
        if ctype and ctype not in CAPTURE_TYPES:
            raise _bad("Type", f"{ctype!r} is not a capture type ({', '.join(CAPTURE_TYPES)})")
        try:
            compile_filter(str(resource.get("BPFFilter") or ""))
        except BPFError as exc:
            raise _bad("BPFFilter", exc.reason) from None
        try:
            nodes = capture_nodes(resource, self.rc.rules.graph)
        except SkydiveError:
            return  # _check_queries reported it
        reasons = [unsupported_reason(ctype, n.metadata) for n in nodes]
        if nodes and all(reasons):
            raise _bad("GremlinQuery", f"no node it selects can be captured: {reasons[0]}")

    def _check_duplicate(self, resource: dict[str, Any]) -> None:
        if self.kind != "capture":
            return
        for other in self.rc.store.list("capture").values():
            if other.get("UUID") == resource["UUID"]:
                continue
            if all(other.get(k) == resource[k] for k in ("Type", "GremlinQuery", "BPFFilter")):
                raise ResourceError(409, f"duplicate capture, uuid={other.get('UUID')}")

    def _arm(self, resource: dict[str, Any]) -> None:
        if self.kind == "noderule":
            self.rc.rules.add_node_rule(resource)
        elif self.kind == "edgerule":
            self.rc.rules.add_edge_rule(resource)
        elif self.kind == "capture" and self.rc.captures_changed is not None:
            self.rc.captures_changed()

    def _disarm(self, resource_id: str) -> None:
        if self.kind == "noderule":
            self.rc.rules.remove_node_rule(resource_id)
        elif self.kind == "edgerule":
            self.rc.rules.remove_edge_rule(resource_id)
        elif self.kind == "capture" and self.rc.captures_changed is not None:
            self.rc.captures_changed()

    def list(self) -> dict[str, Any]:
        return self.rc.store.list(self.kind)

    def get(self, resource_id: str) -> dict[str, Any]:
        resource = self.rc.store.get(self.kind, resource_id)
        if resource is None:
            raise ResourceError(404, f"{self.kind} {resource_id} not found")
        return resource

    def create(self, body: Any) -> dict[str, Any]:
        resource = validate(self.kind, body)
        if not resource["UUID"]:
            resource["UUID"] = str(uuid.uuid4())
        elif self.rc.store.get(self.kind, resource["UUID"]) is not None:
            raise ResourceError(409, f"{self.kind} {resource['UUID']} already exists")
        if self.kind == "alert":
            resource["CreateTime"] = _now_rfc3339()
        self._check_queries(resource)
        self._check_duplicate(resource)
        self._check_capture(resource)
        self.rc.store.put(self.kind, resource["UUID"], resource)
        self._arm(resource)
        return resource

    def patch(self, resource_id: str, patch: Any) -> dict[str, Any] | None:
        old = self.get(resource_id)
        new = validate(self.kind, apply_patch(old, patch))
        if new["UUID"] != resource_id:
            raise _bad("UUID", "is not patchable")
        if self.kind == "alert" and new["CreateTime"] != old.get("CreateTime"):
            raise _bad("CreateTime", "is not patchable")
        if new == old:
            return None
        self._check_queries(new)
        self._check_duplicate(new)
        self._check_capture(new)
        self.rc.store.put(self.kind, resource_id, new)
        self._disarm(resource_id)
        self._arm(new)
        return new

    def delete(self, resource_id: str) -> None:
        self.get(resource_id)
        self.rc.store.delete(self.kind, resource_id)
        self._disarm(resource_id)


# -- graph kinds ---------------------------------------------------------------------------


class _ElementKind:
    def __init__(self, kind: str, rc: ResourceContext) -> None:
        self.kind = kind
        self.rc = rc

    def list(self) -> dict[str, Any]:
        graph = self.rc.elements.graph
        elements = graph.nodes if self.kind == "node" else graph.edges
        return {i: e.to_wire() for i, e in elements.items()}

    def get(self, element_id: str) -> dict[str, Any]:
        graph = self.rc.elements.graph
        element = graph.get_node(element_id) if self.kind == "node" else graph.get_edge(element_id)
        if element is None:
            raise ResourceError(404, f"{self.kind} {element_id} not found")
        return element.to_wire()

    def create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ResourceError(400, "body must be a JSON object")
        if self.kind == "node":
            element: Any = self.rc.elements.create_node(body)
        else:
            element = self.rc.elements.create_edge(body)
        return element.to_wire()  # type: ignore[no-any-return]

    def patch(self, element_id: str, patch: Any) -> dict[str, Any] | None:
        element = self.rc.elements.patch(self.kind, element_id, patch)
        return None if element is None else element.to_wire()

    def delete(self, element_id: str) -> None:
        self.rc.elements.delete(self.kind, element_id)


# -- HTTP ----------------------------------------------------------------------------------


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


_FIELD = re.compile(
    r"\b(Metadata(?:\.\w+)?|Parent|Child|ID|Host|Origin|CreatedAt|UpdatedAt|Revision)\b"
)


def _field_of(reason: str) -> str | None:
    """The element field a graph-message error names (``node X: Metadata.Name is missing``)."""
    m = _FIELD.search(
        reason.split(": ", 1)[-1] if reason.startswith(("node ", "edge ")) else reason
    )
    return m.group(1) if m else None


def _error(exc: Exception) -> Response:
    status = 400
    field: str | None = None
    if isinstance(exc, ResourceError):
        status, field = exc.status, exc.field
    elif isinstance(exc, NotFound):
        status = 404
    elif isinstance(exc, Conflict):
        status = 409
    else:
        field = _field_of(str(exc))
    body: dict[str, Any] = {"Error": str(exc)}
    if status == 400 and field:
        body["Field"] = field
    return _JSON(body, status_code=status)


#: Bounds on a request body: its size in bytes and how deeply its JSON may nest.
MAX_BODY = 16 * 1024 * 1024
MAX_DEPTH = 64


def _depth_ok(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


async def _body(request: Request) -> Any:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ResourceError(413, f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise ResourceError(400, f"body is not JSON: {exc}") from None
    if not _depth_ok(body):
        raise ResourceError(400, f"body is nested more than {MAX_DEPTH} levels deep")
    return body


def _handlers(
    kind: _StoreKind | _ElementKind,
) -> tuple[Callable[[Request], Awaitable[Response]], Callable[[Request], Awaitable[Response]]]:
    async def collection(request: Request) -> Response:
        try:
            if request.method == "POST":
                return _JSON(kind.create(await _body(request)), status_code=201)
            return _JSON(kind.list())
        except MessageError as exc:
            return _error(exc)

    async def item(request: Request) -> Response:
        resource_id = request.path_params["id"]
        try:
            if request.method == "GET":
                return _JSON(kind.get(resource_id))
            if request.method == "DELETE":
                kind.delete(resource_id)
                return _JSON({"UUID": resource_id})
            new = kind.patch(resource_id, await _body(request))
            return Response(status_code=304) if new is None else _JSON(new)
        except MessageError as exc:
            return _error(exc)

    return collection, item


def resource_routes(rc: ResourceContext) -> list[Route]:
    """The routes of every resource, with and without a trailing slash."""
    routes: list[Route] = []
    kinds: list[_StoreKind | _ElementKind] = [_StoreKind(k, rc) for k in KINDS]
    kinds += [_ElementKind("node", rc), _ElementKind("edge", rc)]
    for kind in kinds:
        collection, item = _handlers(kind)
        for suffix in ("", "/"):
            base = f"/api/{kind.kind}"
            routes.append(Route(base + suffix, collection, methods=["GET", "POST"]))
            routes.append(Route(f"{base}/{{id}}{suffix}", item, methods=["GET", "PATCH", "DELETE"]))
    return routes
