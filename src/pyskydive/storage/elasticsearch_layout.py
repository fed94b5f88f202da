"""The Elasticsearch store's indices: names, index templates, set-up checks, rollover.

Five kinds of index, each behind an alias named ``<prefix><kind>``::

    flow              latest state of each flow (doc id: its UUID)          rolls over
    metric            metric history, one doc per update (Skydive shape)     rolls over
    topology_archive  closed revisions of nodes and edges                    rolls over
    topology_live     current revisions (doc id: "<kind>:<id>")              never
    resources         API resources (doc id: "<kind>/<id>")                  never

An alias points at versioned indices ``<prefix><kind>_v1-000001``, ``-000002``... The
newest is the alias's write index (``_rollover`` adds the next one); reads go through the
alias, which keeps the older ones until retention deletes them by name. ``topology_live`` and
``resources`` do not roll over: their documents are replaced and deleted by id, which only
reaches the write index. The composable index template ``<prefix><kind>`` (pattern
``<prefix><kind>_v1-*``) carries the mapping and the settings, and its ``_meta`` marks it
ours (``{"pyskydive": 1, "kind": ...}``), as it marks the indices it creates.

Mapping rules (DESIGN.md §2.6): strings are ``keyword``; integers ``long``; times (``Start``,
``Last``, ``*Start``, ``CreatedAt``, ``UpdatedAt``, ``DeletedAt``, ``ArchivedAt``,
``ValidFrom``, ``ValidTo``) ``date`` in ``epoch_millis``; ``Labels``, ``Annotations`` and
``ExtID`` objects (docker/k8s labels, free maps: high cardinality) one ``flattened`` field
each, whatever their keys. On top, ``index.mapping.total_fields.limit`` bounds the rest, with
``ignore_dynamic_beyond_limit`` (a document with one field too many keeps it in ``_source``,
unindexed, rather than being rejected) and ``ignore_malformed`` (a string where a number was
mapped is not indexed; the document is kept).

Set-up (:func:`ensure_layout`) refuses, with a one-line :class:`StorageError` naming the
index and the field, an existing alias, index or template of ours whose mapping is not
compatible (``Start`` not an epoch_millis date...), or that is not ours at all (no ``_meta``,
or a plain index where the alias should be): it never writes into such an index.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from pyskydive.errors import StorageError

__all__ = [
    "KINDS",
    "LAYOUT_VERSION",
    "ROLLING",
    "Layout",
    "check_mapping",
    "ensure_layout",
    "mapping_for",
    "template_for",
]

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1
KINDS = ("flow", "metric", "topology_live", "topology_archive", "resources")
ROLLING = ("flow", "metric", "topology_archive")

_KEYWORD = {"type": "keyword", "ignore_above": 8191}
_DATE = {"type": "date", "format": "epoch_millis"}
_LONG = {"type": "long"}
_FLAT = {"type": "flattened"}
_OPAQUE = {"type": "object", "enabled": False}

_DYNAMIC_TEMPLATES: list[dict[str, Any]] = [
    {
        "free_maps": {
            "match": ["Labels", "Annotations", "ExtID"],
            "match_mapping_type": "object",
            "mapping": _FLAT,
        }
    },
    {
        "times": {
            "match": [
                "Start",
                "Last",
                "*Start",
                "CreatedAt",
                "UpdatedAt",
                "DeletedAt",
                "ArchivedAt",
                "Timestamp",
            ],
            "match_mapping_type": "long",
            "mapping": _DATE,
        }
    },
    {"counters": {"match_mapping_type": "long", "mapping": _LONG}},
    {"strings": {"match_mapping_type": "string", "mapping": _KEYWORD}},
]

_METRIC_PROPS: dict[str, Any] = {
    "ABPackets": _LONG,
    "ABBytes": _LONG,
    "BAPackets": _LONG,
    "BABytes": _LONG,
    "Start": _DATE,
    "Last": _DATE,
    "RTT": _LONG,
}
_L2L3 = {"properties": {"Protocol": _KEYWORD, "A": _KEYWORD, "B": _KEYWORD, "ID": _LONG}}
_L4 = {"properties": {"Protocol": _KEYWORD, "A": _LONG, "B": _LONG, "ID": _LONG}}
_FLOW_KEYS: dict[str, Any] = {
    "UUID": _KEYWORD,
    "LayersPath": _KEYWORD,
    "Application": _KEYWORD,
    "TrackingID": _KEYWORD,
    "L3TrackingID": _KEYWORD,
    "ParentUUID": _KEYWORD,
    "NodeTID": _KEYWORD,
    "CaptureID": _KEYWORD,
    "Link": _L2L3,
    "Network": _L2L3,
    "Transport": _L4,
}
_ELEMENT: dict[str, Any] = {
    "properties": {
        "ID": _KEYWORD,
        "Host": _KEYWORD,
        "Origin": _KEYWORD,
        "Parent": _KEYWORD,
        "Child": _KEYWORD,
        "CreatedAt": _DATE,
        "UpdatedAt": _DATE,
        "DeletedAt": _DATE,
        "Revision": _LONG,
        "Metadata": {"properties": {"Labels": _FLAT}},
    }
}
_TOPOLOGY: dict[str, Any] = {
    "Kind": _KEYWORD,
    "ID": _KEYWORD,
    "ValidFrom": _DATE,
    "ValidTo": _DATE,
    "ArchivedAt": _DATE,
    "Element": _ELEMENT,
    # an element the mapping refused (a field both an object and a value): kept unindexed
    "RawElement": _OPAQUE,
}
_PROPERTIES: dict[str, dict[str, Any]] = {
    "flow": {
        **_FLOW_KEYS,
        "Start": _DATE,
        "Last": _DATE,
        "FinishType": _KEYWORD,
        "Metric": {"properties": _METRIC_PROPS},
        "LastUpdateMetric": {"properties": _METRIC_PROPS},
        "ICMP": {"properties": {"Type": _KEYWORD, "Code": _LONG, "ID": _LONG}},
        "TCPMetric": {
            "properties": {
                k: _DATE
                for k in (
                    "ABSynStart",
                    "BASynStart",
                    "ABFinStart",
                    "BAFinStart",
                    "ABRstStart",
                    "BARstStart",
                )
            }
        },
    },
    "metric": {**_METRIC_PROPS, "Flow": {"properties": _FLOW_KEYS}},
    "topology_live": _TOPOLOGY,
    "topology_archive": _TOPOLOGY,
    "resources": {
        "Kind": _KEYWORD,
        "ID": _KEYWORD,
        "UpdatedAt": _DATE,
        "Origin": _KEYWORD,
        "Resource": _OPAQUE,
    },
}

#: What an existing index must map as we do, or we refuse to write into it.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "flow": ("UUID", "Start", "Last", "NodeTID", "TrackingID"),
    "metric": ("Start", "Last", "Flow.UUID"),
    "topology_live": ("Kind", "ID", "ValidFrom", "ValidTo", "Element", "RawElement"),
    "topology_archive": ("Kind", "ID", "ValidFrom", "ValidTo", "Element", "RawElement"),
    "resources": ("Kind", "ID", "Resource"),
}

_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def mapping_for(kind: str) -> dict[str, Any]:
    return {
        "_meta": {"pyskydive": LAYOUT_VERSION, "kind": kind},
        "dynamic_templates": _DYNAMIC_TEMPLATES,
        "properties": _PROPERTIES[kind],
    }


def template_for(kind: str, pattern: str, total_fields_limit: int) -> dict[str, Any]:
    return {
        "index_patterns": [pattern],
        "priority": 500,
        "_meta": {"pyskydive": LAYOUT_VERSION, "kind": kind},
        "template": {
            "settings": {
                "index.auto_expand_replicas": "0-1",
                "index.mapping.total_fields.limit": total_fields_limit,
                "index.mapping.total_fields.ignore_dynamic_beyond_limit": True,
                "index.mapping.ignore_malformed": True,
            },
            "mappings": mapping_for(kind),
        },
    }


def _describe(spec: dict[str, Any] | None) -> str:
    if spec is None:
        return "missing"
    typ = spec.get("type", "object")
    if typ == "date":
        return f"date ({spec.get('format', 'default format')})"
    if typ == "object" and spec.get("enabled") is False:
        return "object (not indexed)"
    return str(typ)


def _lookup(properties: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    spec: dict[str, Any] | None = None
    for part in dotted.split("."):
        spec = properties.get(part)
        if spec is None:
            return None
        properties = spec.get("properties", {})
    return spec


def check_mapping(kind: str, index: str, mappings: dict[str, Any]) -> None:
    """Raise StorageError if ``index``'s mapping is not the one we write with."""
    ours = _PROPERTIES[kind]
    got = mappings.get("properties", {})
    for field in _REQUIRED[kind]:
        want, have = _lookup(ours, field), _lookup(got, field)
        assert want is not None
        if have is None and "_meta" in mappings:
            continue  # an index of ours without that field yet (older layout): dynamic adds it
        if _describe(have) != _describe(want):
            raise StorageError(
                f"Elasticsearch index {index}: field {field} is mapped as {_describe(have)}, "
                f"pyskydive writes it as {_describe(want)}: not writing to it"
            )
    meta = mappings.get("_meta") or {}
    if meta.get("pyskydive") != LAYOUT_VERSION:
        raise StorageError(
            f"Elasticsearch index {index}: not a pyskydive index of layout {LAYOUT_VERSION} "
            f"(its _meta: {meta or 'none'}): not writing to it"
        )


@dataclass(frozen=True, slots=True)
class Layout:
    """The names of one prefix's aliases, indices and templates."""

    prefix: str

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise StorageError(
                f"Elasticsearch index prefix {self.prefix!r}: lower-case letters, digits, "
                "'_', '-' and '.' only"
            )

    def alias(self, kind: str) -> str:
        return f"{self.prefix}{kind}"

    def pattern(self, kind: str) -> str:
        return f"{self.prefix}{kind}_v{LAYOUT_VERSION}-*"

    def first_index(self, kind: str) -> str:
        return f"{self.prefix}{kind}_v{LAYOUT_VERSION}-000001"

    def aliases(self) -> list[str]:
        return [self.alias(k) for k in KINDS]


def _status(exc: BaseException) -> int | None:
    meta = getattr(exc, "meta", None)
    status = getattr(meta, "status", None)
    return status if isinstance(status, int) else None


def ensure_layout(client: Any, layout: Layout, total_fields_limit: int) -> None:
    """Create what is missing of the templates, aliases and first indices, and check what
    exists (StorageError if incompatible). Transport errors propagate (the caller retries)."""
    for kind in KINDS:
        _ensure_template(client, layout, kind, total_fields_limit)
        _ensure_alias(client, layout, kind)


def _ensure_template(client: Any, layout: Layout, kind: str, limit: int) -> None:
    name = layout.alias(kind)
    import elasticsearch

    try:
        existing = client.indices.get_index_template(name=name)["index_templates"]
    except elasticsearch.NotFoundError:
        existing = []
    for t in existing:
        meta = t["index_template"].get("_meta") or {}
        if meta.get("pyskydive") is None:
            raise StorageError(
                f"Elasticsearch index template {name}: not a pyskydive template "
                f"(patterns {t['index_template'].get('index_patterns')}): not replacing it"
            )
    body = template_for(kind, layout.pattern(kind), limit)
    client.indices.put_index_template(name=name, **body)


def _ensure_alias(client: Any, layout: Layout, kind: str) -> None:
    import elasticsearch

    alias = layout.alias(kind)
    if client.indices.exists(index=alias):
        if not client.indices.exists_alias(name=alias):
            mappings = client.indices.get_mapping(index=alias)[alias]["mappings"]
            check_mapping(kind, alias, mappings)  # names the field when it is incompatible
            raise StorageError(
                f"Elasticsearch index {alias}: a plain index where pyskydive keeps an alias "
                "(cannot roll over): not writing to it"
            )
        _check_indices(client, kind, alias)
        return
    first = layout.first_index(kind)
    try:
        client.indices.create(index=first, aliases={alias: {"is_write_index": True}})
        log.info("created Elasticsearch index %s (alias %s)", first, alias)
    except elasticsearch.BadRequestError as exc:
        if "resource_already_exists" not in str(exc):
            raise StorageError(f"Elasticsearch index {first}: cannot create ({exc})") from exc
        # another analyzer created it meanwhile, or a leftover without the alias
        if not client.indices.exists_alias(name=alias):
            _check_indices(client, kind, first)
            client.indices.put_alias(index=first, name=alias, is_write_index=True)
    _check_indices(client, kind, alias)


def _check_indices(client: Any, kind: str, name: str) -> None:
    for index, body in client.indices.get_mapping(index=name).items():
        check_mapping(kind, index, body.get("mappings", {}))


def rollover(
    client: Any,
    layout: Layout,
    *,
    max_docs: int,
    max_age_s: int,
    indices_to_keep: int,
) -> list[str]:
    """Roll the rolling aliases over when a condition holds, then delete the rolled-over
    indices beyond ``indices_to_keep`` (0: keep all). Returns the new indices."""
    conditions: dict[str, Any] = {}
    if max_docs > 0:
        conditions["max_docs"] = max_docs
    if max_age_s > 0:
        conditions["max_age"] = f"{max_age_s}s"
    created: list[str] = []
    for kind in ROLLING:
        alias = layout.alias(kind)
        if conditions:
            client.indices.refresh(index=alias)  # max_docs counts refreshed documents only
            resp = client.indices.rollover(alias=alias, conditions=conditions)
            if resp.get("rolled_over"):
                log.info("Elasticsearch alias %s rolled over to %s", alias, resp["new_index"])
                created.append(resp["new_index"])
        if indices_to_keep > 0:
            _delete_old(client, alias, indices_to_keep)
    return created


def _delete_old(client: Any, alias: str, keep: int) -> None:
    body = client.indices.get_alias(name=alias)
    rolled = sorted(
        index
        for index, spec in body.items()
        if not spec.get("aliases", {}).get(alias, {}).get("is_write_index", False)
    )
    old = rolled[: max(0, len(rolled) - keep)]
    if old:
        client.indices.delete(index=",".join(old))
        log.info("Elasticsearch retention: deleted indices %s", ", ".join(old))
