"""The Elasticsearch test node (tests/es) with the official Python client.

The groundwork of the Elasticsearch storage backend's tests (DESIGN.md §2.6): a real node from
Maven Central artifacts, started by the test run on a loopback port, takes the mapping the
backend uses (strings as keyword, counters as long, times as epoch_millis dates, labels in one
flattened field), bulk writes, aggregations and rollover, and keeps its data across a clean
restart and across a crash.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = [pytest.mark.functional, pytest.mark.slow]


FLOW_MAPPING: dict[str, Any] = {
    "dynamic_templates": [
        {"strings": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}},
        {"counters": {"match_mapping_type": "long", "mapping": {"type": "long"}}},
    ],
    "properties": {
        "UUID": {"type": "keyword"},
        "LayersPath": {"type": "keyword"},
        "Start": {"type": "date", "format": "epoch_millis"},
        "Last": {"type": "date", "format": "epoch_millis"},
        "Metric": {
            "properties": {
                "ABBytes": {"type": "long"},
                "BABytes": {"type": "long"},
                "ABPackets": {"type": "long"},
                "BAPackets": {"type": "long"},
            }
        },
        # high-cardinality metadata: one field in the mapping whatever the keys
        "Labels": {"type": "flattened"},
    },
}

N_DOCS = 10_000
PATHS = ("Ethernet/IPv4/TCP", "Ethernet/IPv4/UDP", "Ethernet/IPv6/ICMPv6", "Ethernet/ARP")
T0 = 1_700_000_000_000  # epoch millis


def _flow(i: int) -> dict[str, Any]:
    return {
        "UUID": f"flow-{i}",
        "LayersPath": PATHS[i % len(PATHS)],
        "Start": T0 + i,
        "Last": T0 + i + 1000,
        "Metric": {"ABBytes": i, "BABytes": 2 * i, "ABPackets": 1, "BAPackets": 2},
        "Labels": {f"label{i % 97}": f"v{i}"},
    }


def _create_flow_index(es: Any, prefix: str) -> tuple[str, str]:
    alias = f"{prefix}skydive_flow"
    first = f"{alias}-000001"
    es.indices.create(
        index=first,
        mappings=FLOW_MAPPING,
        settings={"number_of_shards": 1, "number_of_replicas": 0},
        aliases={alias: {"is_write_index": True}},
    )
    return alias, first


def test_client_matches_server(es_client: Any) -> None:
    import elasticsearch

    info = es_client.info()
    assert info["version"]["number"].split(".")[0] == str(elasticsearch.VERSION[0])
    assert info["tagline"] == "You Know, for Search"
    assert es_client.ping()


def test_mapping_bulk_aggregation_rollover(es_client: Any, es_prefix: str) -> None:
    from elasticsearch import helpers

    es = es_client
    alias, first = _create_flow_index(es, es_prefix)

    ok, errors = helpers.bulk(
        es, ({"_index": alias, "_id": f"flow-{i}", "_source": _flow(i)} for i in range(N_DOCS))
    )
    assert (ok, errors) == (N_DOCS, [])
    es.indices.refresh(index=alias)
    assert es.count(index=alias)["count"] == N_DOCS

    props = es.indices.get_mapping(index=first)[first]["mappings"]["properties"]
    assert props["Start"] == {"type": "date", "format": "epoch_millis"}
    assert props["Metric"]["properties"]["ABBytes"] == {"type": "long"}
    assert props["LayersPath"] == {"type": "keyword"}
    assert props["Labels"] == {"type": "flattened"}  # 97 label keys, still one field

    resp = es.search(
        index=alias,
        size=0,
        aggs={
            "paths": {
                "terms": {"field": "LayersPath", "size": 10},
                "aggs": {"ab": {"sum": {"field": "Metric.ABBytes"}}},
            },
            "start": {"max": {"field": "Start"}},
        },
    )
    buckets = {b["key"]: b for b in resp["aggregations"]["paths"]["buckets"]}
    assert set(buckets) == set(PATHS)
    for k, path in enumerate(PATHS):
        ids = range(k, N_DOCS, len(PATHS))
        assert buckets[path]["doc_count"] == len(ids)
        assert buckets[path]["ab"]["value"] == sum(ids)
    assert resp["aggregations"]["start"]["value"] == T0 + N_DOCS - 1

    # epoch_millis range query and a term query on a label
    resp = es.count(index=alias, query={"range": {"Start": {"gte": T0, "lt": T0 + 100}}})
    assert resp["count"] == 100
    resp = es.count(index=alias, query={"term": {"Labels.label5": "v5"}})
    assert resp["count"] == 1

    # rollover by size: the write alias moves to a new index, reads span both
    resp = es.indices.rollover(alias=alias, conditions={"max_docs": N_DOCS})
    assert resp["rolled_over"] is True
    second = resp["new_index"]
    assert second == f"{alias}-000002"
    es.index(index=alias, id="after-rollover", document=_flow(N_DOCS), refresh="wait_for")
    assert es.get(index=second, id="after-rollover")["found"]
    assert es.count(index=f"{alias}-*")["count"] == N_DOCS + 1

    # retention: delete the old index by name
    es.indices.delete(index=first)
    assert not es.indices.exists(index=first)
    assert es.count(index=f"{alias}-*")["count"] == 1


def test_data_survives_restart_and_crash(es_node: Any, es_client: Any, es_prefix: str) -> None:
    es = es_client
    alias, _ = _create_flow_index(es, es_prefix)
    port = es_node.port

    for i in range(100):
        es.index(index=alias, id=f"flow-{i}", document=_flow(i))
    es.indices.refresh(index=alias)

    es_node.restart()  # clean: SIGTERM, then a new JVM on the same port and data
    assert es_node.port == port
    assert es.count(index=alias)["count"] == 100

    # acknowledged but never refreshed nor flushed: only in the translog when the JVM dies
    for i in range(100, 150):
        es.index(index=alias, id=f"flow-{i}", document=_flow(i))
    pid = es_node.pid
    es_node.kill()
    es_node.start()
    assert es_node.pid != pid
    deadline = time.monotonic() + 60
    while es.cluster.health(index=alias)["status"] == "red" and time.monotonic() < deadline:
        time.sleep(0.2)
    es.indices.refresh(index=alias)
    assert es.count(index=alias)["count"] == 150
    assert es.get(index=alias, id="flow-149")["_source"] == _flow(149)


def test_best_compression_codec(es_client: Any, es_prefix: str) -> None:
    # zstd needs the node's native libraries (tests/es/setup.sh): without them the write below
    # would never be answered, hence the short request timeout
    es = es_client.options(request_timeout=30)
    index = f"{es_prefix}skydive_topology_archive-000001"
    es.indices.create(
        index=index,
        settings={"index.codec": "best_compression", "number_of_replicas": 0},
        mappings={"properties": {"Revision": {"type": "long"}}},
    )
    from elasticsearch import helpers

    ok, _ = helpers.bulk(
        es, ({"_index": index, "_source": {"Revision": i, "Host": "h" * 100}} for i in range(500))
    )
    assert ok == 500
    es.indices.flush(index=index)
    es.indices.refresh(index=index)
    assert es.count(index=index)["count"] == 500
