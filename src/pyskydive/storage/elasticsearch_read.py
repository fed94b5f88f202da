"""The Elasticsearch store's queries: topology at a time, flows, metric history, resources.

Every query pages with ``search_after`` over a sort that ends on the fields identifying a
document, so that two hits with equal sort values are copies of one another (the same flow
state in two rolled-over indices, the same closed revision archived twice): skipping one at a
page boundary loses nothing. No point in time is kept open: a read runs while the writer
writes, and sees what was refreshed when each page was asked.

With rollover, one flow may have a document in two ``flow`` indices (its state before and
after the rollover); Start never changes, so its copies are neighbours in the (Start, UUID,
Last desc) order and the first one, the latest, is kept. For a topology element the latest
revision in the window wins; between the live copy and the archived copy of one revision,
the archived one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pyskydive.storage.elasticsearch_layout import Layout

__all__ = [
    "PAGE",
    "graph_at",
    "graph_during",
    "live",
    "live_docs",
    "query_flows",
    "query_metrics",
    "resources",
    "revisions",
]

PAGE = 5000
_TERMS_CHUNK = 10_000
Graph = tuple[list[dict[str, Any]], list[dict[str, Any]]]
_TOPO_SOURCE = ["Kind", "ID", "ValidFrom", "ValidTo", "Element", "RawElement"]
_TOPO_SORT: list[Any] = [
    {"Kind": "asc"},
    {"ID": "asc"},
    {"ValidFrom": "asc"},
    {"ValidTo": {"order": "asc", "missing": "_first"}},  # the archived copy after the live one
]


def scan(
    client: Any,
    index: str,
    query: dict[str, Any],
    sort: list[Any],
    *,
    source: list[str] | None = None,
    source_excludes: list[str] | None = None,
    page: int = PAGE,
) -> Iterator[dict[str, Any]]:
    """Every hit's ``_source`` matching ``query``, in ``sort`` order."""
    after: list[Any] | None = None
    while True:
        kwargs: dict[str, Any] = {}
        if after is not None:
            kwargs["search_after"] = after
        if source is not None:
            kwargs["source_includes"] = source
        if source_excludes is not None:
            kwargs["source_excludes"] = source_excludes
        resp = client.search(
            index=index,
            query=query,
            sort=sort,
            size=page,
            track_total_hits=False,
            ignore_unavailable=True,
            allow_no_indices=True,
            **kwargs,
        )
        hits = resp["hits"]["hits"]
        for hit in hits:
            yield hit["_source"]
        if len(hits) < page:
            return
        after = hits[-1]["sort"]


def _element(src: dict[str, Any]) -> dict[str, Any]:
    element = src.get("Element")
    if element is None:
        element = src.get("RawElement") or {}
    return dict(element)


def _open_at(t_from: int, t_to: int) -> dict[str, Any]:
    """Revisions whose ``[ValidFrom, ValidTo)`` meets ``[t_from, t_to]``."""
    return {
        "bool": {
            "filter": [{"range": {"ValidFrom": {"lte": t_to}}}],
            "should": [
                {"bool": {"must_not": {"exists": {"field": "ValidTo"}}}},
                {"range": {"ValidTo": {"gt": t_from}}},
            ],
            "minimum_should_match": 1,
        }
    }


def _latest(hits: Iterable[dict[str, Any]]) -> Graph:
    """The last hit of each (Kind, ID) in the topology sort order."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    key: tuple[str, str] | None = None
    last: dict[str, Any] | None = None
    for src in hits:
        k = (src["Kind"], src["ID"])
        if k != key and last is not None and key is not None:
            (nodes if key[0] == "node" else edges).append(_element(last))
        key, last = k, src
    if last is not None and key is not None:
        (nodes if key[0] == "node" else edges).append(_element(last))
    return nodes, edges


def _topology(layout: Layout) -> str:
    return f"{layout.alias('topology_live')},{layout.alias('topology_archive')}"


def graph_at(client: Any, layout: Layout, t: int) -> Graph:
    return _latest(scan(client, _topology(layout), _open_at(t, t), _TOPO_SORT, source=_TOPO_SOURCE))


def graph_during(client: Any, layout: Layout, start: int, end: int) -> Graph:
    hits = scan(client, _topology(layout), _open_at(start, end), _TOPO_SORT, source=_TOPO_SOURCE)
    return _latest(hits)


def live_docs(client: Any, layout: Layout) -> Iterator[dict[str, Any]]:
    return scan(
        client,
        layout.alias("topology_live"),
        {"match_all": {}},
        _TOPO_SORT,
        source=_TOPO_SOURCE,
    )


def live(client: Any, layout: Layout) -> Graph:
    return _latest(live_docs(client, layout))


def revisions(
    client: Any, layout: Layout, kind: str, ids: Iterable[str], start: int, end: int
) -> dict[str, list[dict[str, Any]]]:
    wanted = sorted(set(ids))
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in wanted}
    for n in range(0, len(wanted), _TERMS_CHUNK):
        query = _open_at(start, end)
        query["bool"]["filter"] += [
            {"term": {"Kind": kind}},
            {"terms": {"ID": wanted[n : n + _TERMS_CHUNK]}},
        ]
        prev: tuple[str, int] | None = None
        for src in scan(client, _topology(layout), query, _TOPO_SORT, source=_TOPO_SOURCE):
            key = (src["ID"], src["ValidFrom"])
            rows = out[src["ID"]]
            if key == prev:
                rows[-1] = _element(src)  # the archived copy of the same revision
            else:
                rows.append(_element(src))
            prev = key
    return out


def query_flows(
    client: Any,
    layout: Layout,
    start: int,
    end: int,
    node_tids: Iterable[str] | None = None,
    tracking_ids: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Latest state of the flows alive at some point of ``[start, end]``, oldest first."""
    filters: list[dict[str, Any]] = [
        {"range": {"Start": {"lte": end}}},
        {"range": {"Last": {"gte": start}}},
    ]
    if node_tids is not None:
        filters.append({"terms": {"NodeTID": sorted(node_tids)}})
    if tracking_ids is not None:
        filters.append({"terms": {"TrackingID": sorted(tracking_ids)}})
    out: list[dict[str, Any]] = []
    if limit is not None and limit <= 0:
        return out
    sort = [{"Start": "asc"}, {"UUID": "asc"}, {"Last": "desc"}]
    prev: tuple[Any, Any] | None = None
    page = PAGE if limit is None else max(1, min(PAGE, 2 * limit))
    for src in scan(client, layout.alias("flow"), {"bool": {"filter": filters}}, sort, page=page):
        key = (src.get("Start"), src.get("UUID"))
        if key == prev:
            continue  # an older state of the same flow, in an older index
        prev = key
        out.append(src)
        if limit is not None and len(out) >= limit:
            break
    return out


def query_metrics(
    client: Any, layout: Layout, uuids: Iterable[str], start: int, end: int
) -> dict[str, list[dict[str, Any]]]:
    wanted = sorted(set(uuids))
    out: dict[str, list[dict[str, Any]]] = {u: [] for u in wanted}
    sort = [{"Flow.UUID": "asc"}, {"Start": "asc"}, {"Last": "asc"}]
    for n in range(0, len(wanted), _TERMS_CHUNK):
        query = {
            "bool": {
                "filter": [
                    {"terms": {"Flow.UUID": wanted[n : n + _TERMS_CHUNK]}},
                    {"range": {"Start": {"lte": end}}},
                    {"range": {"Last": {"gte": start}}},
                ]
            }
        }
        prev: tuple[Any, ...] | None = None
        for src in scan(client, layout.alias("metric"), query, sort):
            flow = src.pop("Flow")
            key = (flow["UUID"], src.get("Start"), src.get("Last"))
            if key != prev:
                out[flow["UUID"]].append(src)
            prev = key
    return out


def resources(client: Any, layout: Layout) -> dict[tuple[str, str], dict[str, Any]]:
    """Every stored API resource by (kind, id)."""
    return {
        (src["Kind"], src["ID"]): src.get("Resource") or {}
        for src in scan(
            client,
            layout.alias("resources"),
            {"match_all": {}},
            [{"Kind": "asc"}, {"ID": "asc"}],
            source=["Kind", "ID", "Resource"],
        )
    }
