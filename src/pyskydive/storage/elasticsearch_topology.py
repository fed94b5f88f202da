"""Topology revisions of the Elasticsearch store: turning queued records into bulk ops.

Run by the store's ordered writer, after everything queued before has been written, so the
reads here see it (a ``GET`` by id is real-time; a search needs the refresh done first):

* a closure recorded with an empty element takes the stored one: the live document of that
  revision if it is still there, else its archived copy (it was closed before), else ``{}``;
* :class:`CloseLive` (``close_live(t)``) becomes a closure at ``t`` of every document of the
  live index at that point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from pyskydive.storage import elasticsearch_docs as _docs
from pyskydive.storage import elasticsearch_read as _read
from pyskydive.storage.base import JsonElement, Revision, element_dict
from pyskydive.storage.elasticsearch_layout import Layout

__all__ = ["CloseLive", "revision_ops"]


class CloseLive:
    """A marker in the revision queue: end at ``t`` every revision current when applied."""

    __slots__ = ("t",)

    def __init__(self, t: int) -> None:
        self.t = t


def revision_ops(
    client: Any, layout: Layout, items: Sequence[Revision | CloseLive]
) -> tuple[list[_docs.Op], int]:
    """The bulk ops of a batch of queued revisions, and how many were left out (an element
    JSON cannot hold). Reads the index; may raise the client's errors (the caller
    retries)."""
    live_index = layout.alias("topology_live")
    archive_index = layout.alias("topology_archive")
    revisions: list[Revision] = []
    for item in items:
        if isinstance(item, CloseLive):
            revisions.extend(_closures(client, layout, revisions, item.t))
        else:
            revisions.append(item)
    latest = _docs.coalesce(revisions)
    missing = [r for r in latest.values() if not r.element]
    stored = _stored_elements(client, layout, missing) if missing else {}
    ops: list[_docs.Op] = []
    bad = 0
    for key, r in latest.items():
        try:
            element = _docs.element_bytes(r) if r.element else stored.get(key, b"{}")
        except TypeError:  # orjson.JSONEncodeError
            bad += 1
            continue
        ops.extend(_docs.revision_ops(r, element, live_index, archive_index))
    return ops, bad


def _element_json(src: Mapping[str, Any]) -> bytes:
    element = src.get("Element")
    if element is None:
        element = src.get("RawElement") or {}
    data: bytes = orjson.dumps(element_dict(element))
    return data


def _closures(client: Any, layout: Layout, before: list[Revision], t: int) -> list[Revision]:
    """Closures at ``t`` of what is current once ``before`` (this batch so far) is applied:
    the revisions of the batch left open, and the live index's documents the batch does not
    touch. Each closed element gets ``DeletedAt`` = ``t``, as a deletion gives it."""
    batch = _docs.coalesce(before)
    client.indices.refresh(index=layout.alias("topology_live"))
    current = [r for r in batch.values() if r.valid_to is None and r.element]
    current += [
        Revision(src["Kind"], src["ID"], JsonElement(_element_json(src)), src["ValidFrom"])
        for src in _read.live_docs(client, layout)
        if (src["Kind"], src["ID"], src["ValidFrom"]) not in batch
    ]
    out: list[Revision] = []
    for r in current:
        end = max(t, r.valid_from)
        last = element_dict(r.element)
        last["DeletedAt"] = end
        out.append(Revision(r.kind, r.id, JsonElement.of(last), r.valid_from, end))
    return out


def _stored_elements(
    client: Any, layout: Layout, revisions: list[Revision]
) -> dict[tuple[str, str, int], bytes]:
    out: dict[tuple[str, str, int], bytes] = {}
    ids = [f"{r.kind}:{r.id}" for r in revisions]
    resp = client.mget(index=layout.alias("topology_live"), ids=ids)
    for r, doc in zip(revisions, resp["docs"], strict=True):
        src = doc.get("_source") if doc.get("found") else None
        if src is not None and src.get("ValidFrom") == r.valid_from:
            out[(r.kind, r.id, r.valid_from)] = _element_json(src)
    rest = [r for r in revisions if (r.kind, r.id, r.valid_from) not in out]
    if rest:
        resp = client.search(
            index=layout.alias("topology_archive"),
            query={"ids": {"values": [f"{r.kind}:{r.id}:{r.valid_from}" for r in rest]}},
            size=len(rest),
            ignore_unavailable=True,
        )
        for hit in resp["hits"]["hits"]:
            src = hit["_source"]
            out[(src["Kind"], src["ID"], src["ValidFrom"])] = _element_json(src)
    return out
