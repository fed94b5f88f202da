"""The Elasticsearch store's documents and ``_bulk`` lines (no I/O here).

Flows (Skydive v0.28 shapes, ``flow/storage/elasticsearch``):

* ``<prefix>flow``: the flow's wire dict as it is, doc id its UUID, written with
  ``version=Last, version_type=external_gte``: whatever order two requests land in, the
  latest state stays (an older one is answered 409, which is not an error).
* ``<prefix>metric``: one document per update, its ``LastUpdateMetric`` (or its ``Metric``
  when it has none) plus ``Flow``, the flow's identifying keys (UUID, NodeTID, TrackingID,
  addresses) so that history can be aggregated without a join. Doc id
  ``<UUID>:<Start>:<Last>``: a request retried after a timeout does not duplicate it.

Topology (``graffiti/graph/elasticsearch.go``: a live index and an archive):

* a current revision (``valid_to`` None) is ``<prefix>topology_live`` doc ``<kind>:<id>``,
  written with ``version=valid_from, version_type=external_gte`` (a later revision of the
  element replaces it; an earlier one, recorded late, is answered 409 and not kept: the
  live index holds one revision per element);
* a closed one is ``<prefix>topology_archive`` doc ``<kind>:<id>:<valid_from>`` (with
  ``ArchivedAt``), and the live doc is deleted with ``version=valid_from`` too: only if it
  is that revision (or an older one), not if a later revision already replaced it.

Each document is ``{"Kind", "ID", "ValidFrom", "ValidTo", "Element": wire dict}``; the
element's JSON bytes are pasted in as recorded, so reads give back exactly that dict. An
element whose fields the mapping refuses goes to ``RawElement`` (not indexed) instead.

Every bulk line pair is kept as one bytes object (:class:`Op`), so that the items an answer
refuses can be sent again alone (see :func:`classify`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pyskydive.storage.base import Revision, element_json

__all__ = [
    "FLOW_EMBED_KEYS",
    "BulkOutcome",
    "Op",
    "classify",
    "coalesce",
    "element_bytes",
    "flow_batch",
    "flow_ops",
    "resource_delete_op",
    "resource_put_op",
    "revision_ops",
    "split_ops",
]

#: The flow keys copied into each metric document (Skydive's ``embeddedFlow``, trimmed).
FLOW_EMBED_KEYS = (
    "UUID",
    "LayersPath",
    "Application",
    "TrackingID",
    "L3TrackingID",
    "NodeTID",
    "Network",
    "Transport",
)


@dataclass(slots=True)
class Op:
    """One bulk action with its source, ``item`` says what it belongs to (for counting)."""

    data: bytes
    item: str  # "flow", "metric", "revision", "delete", "resource"
    fallback: bytes | None = None  # a revision op with the element not indexed
    key: str = ""  # the flow, revision or resource it writes (its ops share it)


def _j(value: Any) -> bytes:
    return orjson.dumps(value)


def flow_ops(flows: Sequence[Mapping[str, Any]], flow_index: str, metric_index: str) -> bytes:
    """The NDJSON of a batch of flow updates (the latest state per UUID, every history row)
    as one body: the hot path (~5 µs per update here, most of it in orjson), hence bytes
    pasted together rather than Op objects (the fastest of the variants measured)."""
    flow_head = b'{"index":{"_index":' + _j(flow_index) + b',"_id":'
    metric_head = b'{"index":{"_index":' + _j(metric_index) + b',"_id":'
    parts: list[bytes] = []
    append = parts.append
    dumps = orjson.dumps
    for f in flows:
        uuid = f["UUID"]
        juuid = dumps(uuid)
        last = f.get("Last")
        if type(last) is int and last >= 0:
            append(
                flow_head
                + juuid
                + b',"version":'
                + str(last).encode()
                + b',"version_type":"external_gte"}}\n'
            )
        else:
            append(flow_head + juuid + b"}}\n")
        append(dumps(f) + b"\n")
        metric = f.get("LastUpdateMetric") or f.get("Metric")
        if metric:
            doc = dict(metric)
            doc["Flow"] = {k: f[k] for k in FLOW_EMBED_KEYS if k in f}
            mid = f"{uuid}:{metric.get('Start', '')}:{metric.get('Last', '')}"
            append(metric_head + dumps(mid) + b"}}\n")
            append(dumps(doc) + b"\n")
    return b"".join(parts)


def flow_batch(
    batch: Sequence[Mapping[str, Any]], flow_index: str, metric_index: str
) -> tuple[bytes, int]:
    """The body of a batch of flow updates, and how many were left out (no UUID string,
    or a value JSON cannot hold).

    One state document per UUID, the latest by ``Last`` (as the versions: a late older
    state cannot win); every update contributes its history row."""
    latest: dict[str, Mapping[str, Any]] = {}
    bad = 0
    for f in batch:
        u = f.get("UUID")
        if not isinstance(u, str):
            bad += 1
            continue
        before = latest.get(u)
        if before is None or not _older(f, before):
            latest[u] = f
    body, failed = _serialisable(list(latest.values()), flow_index, metric_index)
    bad += failed
    if len(latest) + bad - failed != len(batch):  # the earlier updates: history rows only
        earlier = [
            f for f in batch if isinstance(f.get("UUID"), str) and latest[f["UUID"]] is not f
        ]
        more, failed = _serialisable(earlier, "-", metric_index)
        bad += failed
        body += b"".join(op.data for op in split_ops(more, metric_index) if op.item == "metric")
    return body, bad


def _serialisable(
    flows: list[Mapping[str, Any]], flow_index: str, metric_index: str
) -> tuple[bytes, int]:
    try:
        return flow_ops(flows, flow_index, metric_index), 0
    except TypeError:  # orjson.JSONEncodeError: find the flows at fault, one by one
        parts: list[bytes] = []
        for f in flows:
            try:
                parts.append(flow_ops([f], flow_index, metric_index))
            except TypeError:
                continue
        return b"".join(parts), len(flows) - len(parts)


def _older(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether flow state ``a`` is older than ``b`` (a smaller ``Last``)."""
    la, lb = a.get("Last"), b.get("Last")
    return isinstance(la, int) and isinstance(lb, int) and la < lb


def split_ops(body: bytes, metric_index: str) -> list[Op]:
    """A flow body as Ops (only when an answer refused some of its items)."""
    metric_head = b'{"index":{"_index":' + _j(metric_index) + b","
    lines = body.split(b"\n")  # JSON from orjson holds no raw newline
    return [
        Op(
            lines[i] + b"\n" + lines[i + 1] + b"\n",
            "metric" if lines[i].startswith(metric_head) else "flow",
            key=str(orjson.loads(lines[i])["index"]["_id"]).split(":", 1)[0],
        )
        for i in range(0, len(lines) - 1, 2)
    ]


def _topology_doc(r: Revision, element: bytes, *, raw: bool = False) -> bytes:
    head = {"Kind": r.kind, "ID": r.id, "ValidFrom": r.valid_from}
    if r.valid_to is not None:
        head["ValidTo"] = r.valid_to
        head["ArchivedAt"] = r.valid_to
    field = b',"RawElement":' if raw else b',"Element":'
    return _j(head)[:-1] + field + element + b"}\n"


def revision_ops(r: Revision, element: bytes, live_index: str, archive_index: str) -> list[Op]:
    """The bulk actions of one (coalesced) revision, ``element`` its JSON."""
    version = (
        b',"version":' + str(max(0, r.valid_from)).encode() + b',"version_type":"external_gte"}}\n'
    )
    live_id = _j(f"{r.kind}:{r.id}")
    key = f"{r.kind}:{r.id}:{r.valid_from}"
    if r.valid_to is None:  # the current revision: replaces the element's live document
        action = b'{"index":{"_index":' + _j(live_index) + b',"_id":' + live_id + version
    else:  # a closed one: archived under its own id, and gone from the live index
        archive_id = _j(key)
        action = b'{"index":{"_index":' + _j(archive_index) + b',"_id":' + archive_id + b"}}\n"
    ops = [
        Op(
            action + _topology_doc(r, element),
            "revision",
            action + _topology_doc(r, element, raw=True),
            key,
        )
    ]
    if r.valid_to is not None:
        delete = b'{"delete":{"_index":' + _j(live_index) + b',"_id":' + live_id + version
        ops.append(Op(delete, "delete", key=key))
    return ops


def coalesce(revisions: Sequence[Revision]) -> dict[tuple[str, str, int], Revision]:
    """The last record of each revision in a batch; an empty element keeps the earlier one."""
    latest: dict[tuple[str, str, int], Revision] = {}
    for r in revisions:
        key = (r.kind, r.id, r.valid_from)
        before = latest.get(key)
        if before is not None and not r.element:
            r = Revision(r.kind, r.id, before.element, r.valid_from, r.valid_to)
        latest[key] = r
    return latest


def element_bytes(r: Revision) -> bytes:
    return element_json(r.element)


def resource_put_op(
    index: str, kind: str, resource_id: str, resource: Mapping[str, Any], now: int, origin: str
) -> Op:
    action = b'{"index":{"_index":' + _j(index) + b',"_id":' + _j(f"{kind}/{resource_id}") + b"}}\n"
    doc = {"Kind": kind, "ID": resource_id, "UpdatedAt": now, "Origin": origin}
    data = action + _j(doc)[:-1] + b',"Resource":' + _j(resource) + b"}\n"
    return Op(data, "resource", key=f"{kind}/{resource_id}")


def resource_delete_op(index: str, kind: str, resource_id: str) -> Op:
    action = b'{"delete":{"_index":' + _j(index) + b',"_id":' + _j(f"{kind}/{resource_id}")
    return Op(action + b"}}\n", "resource", key=f"{kind}/{resource_id}")


_MAPPING_ERRORS = frozenset(
    {"document_parsing_exception", "mapper_parsing_exception", "illegal_argument_exception"}
)


@dataclass(slots=True)
class BulkOutcome:
    """How a ``_bulk`` answer splits the request's items."""

    retry: list[int]  # positions to send again (429, 5xx)
    rejected: list[tuple[int, str]]  # positions refused for their content, and why
    #: positions the mapping refused, and why (a revision is sent again as RawElement)
    fallback: list[tuple[int, str]]
    missing_alias: bool = False  # an alias is gone: set the layout up again


def classify(answer: Mapping[str, Any]) -> BulkOutcome:
    """Sort an answer's items: done (2xx, a 409 version conflict, a 404 delete), to retry,
    refused. ``answer`` is filtered to ``errors,items.*.status,items.*.error``."""
    out = BulkOutcome([], [], [])
    if not answer.get("errors"):
        return out
    for pos, item in enumerate(answer.get("items", ())):
        ((action, result),) = item.items()
        status = result.get("status", 200)
        if status < 300 or status == 409 or (status == 404 and action == "delete"):
            continue
        error = result.get("error") or {}
        etype = str(error.get("type", ""))
        reason = str(error.get("reason", ""))
        if status == 429 or status >= 500:
            out.retry.append(pos)
        elif status == 404 or "require_alias" in reason:
            out.retry.append(pos)
            out.missing_alias = True
        elif etype in _MAPPING_ERRORS:
            out.fallback.append((pos, f"{etype}: {reason}"))
        else:
            out.rejected.append((pos, f"{etype}: {reason}" if etype else f"HTTP {status}"))
    return out
