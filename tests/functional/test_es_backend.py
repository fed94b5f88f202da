"""The Elasticsearch storage backend (pyskydive.storage.elasticsearch) against a real node.

The node is tests/es's (Maven Central jars, a JVM on a loopback port); every test works
under its own index prefix, deleted afterwards. Tests that stop or kill the node leave it to
the next test's fixtures to start it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyskydive.errors import StorageError
from pyskydive.storage.base import FlowQuery, JsonElement, Revision

pytestmark = [pytest.mark.functional, pytest.mark.slow]


T0 = 1_767_225_600_000


def _store(node: Any, prefix: str, **options: Any) -> Any:
    from pyskydive.storage.elasticsearch import ElasticsearchStore

    options.setdefault("bulk_maxdelay", 0.05)
    options.setdefault("retry_interval", 0.2)
    options.setdefault("resource_poll_interval", 0.2)
    return ElasticsearchStore([node.url], index_prefix=prefix, **options)


@pytest.fixture
def store(es_node: Any, es_prefix: str) -> Iterator[Any]:
    s = _store(es_node, es_prefix)
    yield s
    s.close(30)


def _flow(i: int, last: int | None = None, *, tid: str = "tid-a") -> dict[str, Any]:
    start = T0 + i * 10
    last = start + 5 if last is None else last
    metric = {
        "ABPackets": i + 1,
        "ABBytes": 100 * (i + 1),
        "BAPackets": 1,
        "BABytes": 60,
        "Start": start,
        "Last": last,
        "RTT": 7,
    }
    return {
        "UUID": f"u{i:06d}",
        "LayersPath": "Ethernet/IPv4/TCP",
        "Application": "TCP",
        "TrackingID": f"t{i:06d}",
        "L3TrackingID": f"l{i:06d}",
        "NodeTID": tid,
        "Start": start,
        "Last": last,
        "Metric": metric,
        "LastUpdateMetric": dict(metric),
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": f"10.0.{i % 250}.2", "ID": 0},
        "Transport": {"Protocol": "TCP", "A": 40000 + i % 1000, "B": 443, "ID": 0},
    }


def _update(flow: dict[str, Any], dt: int = 1000) -> dict[str, Any]:
    last = flow["Last"] + dt
    delta = {
        "ABPackets": 2,
        "ABBytes": 200,
        "BAPackets": 0,
        "BABytes": 0,
        "Start": flow["Last"],
        "Last": last,
        "RTT": 7,
    }
    m = flow["Metric"]
    metric = {**m, "ABPackets": m["ABPackets"] + 2, "ABBytes": m["ABBytes"] + 200, "Last": last}
    return {**flow, "Last": last, "Metric": metric, "LastUpdateMetric": delta}


def _node(i: int, rev: int = 1, **metadata: Any) -> dict[str, Any]:
    return {
        "ID": f"n{i}",
        "Host": "h1",
        "Origin": "agent.h1",
        "CreatedAt": T0,
        "UpdatedAt": T0 + rev,
        "Revision": rev,
        "Metadata": {"Name": f"eth{i}", "Type": "veth", "MTU": 1500, **metadata},
    }


def _wait(cond: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _mapping(es: Any, index: str) -> dict[str, Any]:
    body = es.indices.get_mapping(index=index)
    (only,) = body.values()
    props: dict[str, Any] = only["mappings"]["properties"]
    return props


def _field_count(props: dict[str, Any]) -> int:
    n = 0
    for spec in props.values():
        n += 1
        n += _field_count(spec.get("properties", {}))
    return n


# -- layout ---------------------------------------------------------------------------------


def test_templates_indices_and_mapping_types(store: Any, es_client: Any, es_prefix: str) -> None:
    es = es_client
    for kind in ("flow", "metric", "topology_live", "topology_archive", "resources"):
        alias = f"{es_prefix}{kind}"
        assert es.indices.exists_alias(name=alias), alias
        (index,) = es.indices.get_alias(name=alias)
        assert index == f"{alias}_v1-000001"
        tpl = es.indices.get_index_template(name=alias)["index_templates"][0]["index_template"]
        assert tpl["index_patterns"] == [f"{alias}_v1-*"]
        assert tpl["_meta"]["pyskydive"] == 1

    store.write_flows([{**_flow(1), "Extra": {"Foo": "bar", "Count": 3}}])
    store.record([Revision("node", "n1", _node(1, Labels={"app": "web"}), T0)])
    assert store.flush(60)
    flow = _mapping(es, f"{es_prefix}flow")
    assert flow["UUID"]["type"] == "keyword"
    assert flow["Start"] == {"type": "date", "format": "epoch_millis"}
    assert flow["Metric"]["properties"]["ABBytes"] == {"type": "long"}
    assert flow["Metric"]["properties"]["Last"] == {"type": "date", "format": "epoch_millis"}
    assert flow["Extra"]["properties"]["Foo"]["type"] == "keyword"  # dynamic: strings
    assert flow["Extra"]["properties"]["Count"] == {"type": "long"}  # dynamic: counters
    metric = _mapping(es, f"{es_prefix}metric")
    assert metric["Start"] == {"type": "date", "format": "epoch_millis"}
    assert metric["Flow"]["properties"]["UUID"]["type"] == "keyword"
    topo = _mapping(es, f"{es_prefix}topology_live")
    element = topo["Element"]["properties"]
    assert element["CreatedAt"] == {"type": "date", "format": "epoch_millis"}
    assert element["Metadata"]["properties"]["Labels"] == {"type": "flattened"}
    assert element["Metadata"]["properties"]["Name"]["type"] == "keyword"
    assert element["Metadata"]["properties"]["MTU"] == {"type": "long"}
    settings = es.indices.get_settings(index=f"{es_prefix}flow_v1-000001")
    (s,) = settings.values()
    assert s["settings"]["index"]["mapping"]["total_fields"]["limit"] == "1000"

    # 2,000 distinct label keys (docker/k8s labels): one flattened field, the count is flat
    before = _field_count(topo)
    store.record(
        [
            Revision("node", f"l{i}", _node(i, Labels={f"key{i}": "v", f"x.y/z{i}": "w"}), T0)
            for i in range(1000)
        ]
    )
    assert store.flush(60)
    after = _mapping(es, f"{es_prefix}topology_live")
    assert _field_count(after) == before
    hits = es.count(
        index=f"{es_prefix}topology_live", query={"term": {"Element.Metadata.Labels.key7": "v"}}
    )
    assert hits["count"] == 1


def test_incompatible_index_is_refused(es_node: Any, es_client: Any, es_prefix: str) -> None:
    es_client.indices.create(
        index=f"{es_prefix}flow",
        mappings={"properties": {"Start": {"type": "keyword"}, "UUID": {"type": "keyword"}}},
    )
    with pytest.raises(StorageError) as err:
        _store(es_node, es_prefix)
    message = str(err.value)
    assert f"{es_prefix}flow" in message and "Start" in message
    assert "\n" not in message
    assert es_client.count(index=f"{es_prefix}flow")["count"] == 0


def test_incompatible_rolled_index_and_foreign_template(
    es_node: Any, es_client: Any, es_prefix: str
) -> None:
    es = es_client
    index = f"{es_prefix}metric_v1-000001"
    es.indices.create(
        index=index,
        mappings={"properties": {"Start": {"type": "long"}}},
        aliases={f"{es_prefix}metric": {"is_write_index": True}},
    )
    with pytest.raises(StorageError, match=f"{index}: field Start is mapped as long"):
        _store(es_node, es_prefix)
    es.indices.delete(index=index)
    es.indices.put_index_template(
        name=f"{es_prefix}flow", index_patterns=[f"{es_prefix}other-*"], template={}
    )
    with pytest.raises(StorageError, match=f"index template {es_prefix}flow: not a pyskydive"):
        _store(es_node, es_prefix)


# -- flows ----------------------------------------------------------------------------------


def test_flows_latest_state_and_metric_history(store: Any) -> None:
    flows = [_flow(i, tid="tid-a" if i % 2 else "tid-b") for i in range(300)]
    store.write_flows(flows)
    updated = [_update(f) for f in flows[:50]]
    twice = [_update(f) for f in updated[:10]]
    store.write_flows(updated)
    store.write_flows(twice)
    store.write_flows([flows[0]])  # an older state arriving late does not win
    assert store.flush(60)

    got = store.query_flows(FlowQuery(T0 - 1, T0 + 10**7))
    latest = {f["UUID"]: f for f in [*flows, *updated, *twice]}
    assert len(got) == 300
    assert {f["UUID"]: f for f in got} == latest  # exact wire dicts, latest state
    assert [f["Start"] for f in got] == sorted(f["Start"] for f in got)

    window = store.query_flows(FlowQuery(T0 + 1000, T0 + 1500))
    assert {f["UUID"] for f in window} == {
        u for u, f in latest.items() if f["Start"] <= T0 + 1500 and f["Last"] >= T0 + 1000
    }
    only_b = store.query_flows(FlowQuery(T0, T0 + 10**7, node_tids=frozenset({"tid-b"})))
    assert len(only_b) == 150 and all(f["NodeTID"] == "tid-b" for f in only_b)
    by_tracking = store.query_flows(
        FlowQuery(T0, T0 + 10**7, tracking_ids=frozenset({"t000003", "t000004"}))
    )
    assert sorted(f["UUID"] for f in by_tracking) == ["u000003", "u000004"]
    assert [f["UUID"] for f in store.query_flows(FlowQuery(T0, T0 + 10**7, limit=5))] == [
        f"u{i:06d}" for i in range(5)
    ]

    history = store.metrics(["u000000", "u000020", "u000200", "nope"], T0, T0 + 10**7)
    assert history["u000000"] == [
        flows[0]["LastUpdateMetric"],
        updated[0]["LastUpdateMetric"],
        twice[0]["LastUpdateMetric"],
    ]
    assert history["u000020"] == [flows[20]["LastUpdateMetric"], updated[20]["LastUpdateMetric"]]
    assert history["u000200"] == [flows[200]["LastUpdateMetric"]]
    assert history["nope"] == []
    late = store.metrics(["u000000"], updated[0]["Last"] + 1, T0 + 10**7)
    assert late["u000000"] == [twice[0]["LastUpdateMetric"]]
    status = store.status()
    assert status.backend == "elasticsearch" and status.connected
    assert status.queued == 0 and status.dropped == 0 and status.extra["rejected"] == 0


def test_flow_without_last_update_metric_keeps_its_metric(store: Any) -> None:
    flow = _flow(1)
    del flow["LastUpdateMetric"]
    store.write_flows([flow])
    assert store.flush(60)
    assert store.metrics(["u000001"], T0, T0 + 10**6)["u000001"] == [flow["Metric"]]


def test_rejected_items_do_not_drop_the_batch(store: Any, caplog: pytest.LogCaptureFixture) -> None:
    good = [_flow(i) for i in range(20)]
    bad = {**_flow(99), "Network": "not an object"}  # an object field given a string
    store.write_flows([*good[:10], bad, *good[10:]])
    assert store.flush(60)
    got = store.query_flows(FlowQuery(T0, T0 + 10**7))
    assert [f["UUID"] for f in got] == [f["UUID"] for f in good]
    status = store.status()
    assert status.extra["rejected"] == 1
    assert "refused 1 items" in status.last_error
    assert any("refused 1 items" in r.getMessage() for r in caplog.records)


def test_a_cluster_refusing_large_requests_gets_every_flow(es_node: Any, tmp_path: Any) -> None:
    """413 (``http.max_content_length`` here; a proxy's body limit does the same): the
    requests are sent again in halves until the cluster takes them, nothing refused."""
    node = type(es_node)(
        tmp_path / "esnode",
        settings={"http.max_content_length": "64kb"},
        build_dir=es_node.build_dir,
    )
    node.start()
    try:
        s = _store(node, "sktsmall_")
        try:
            flows = [_flow(i) for i in range(2000)]  # one request of ~2 MB
            s.write_flows(flows)
            s.record(
                [
                    Revision("node", f"n{i}", {"ID": f"n{i}", "Pad": "x" * 500}, T0)
                    for i in range(300)
                ]
            )
            assert s.flush(120)
            got = s.query_flows(FlowQuery(T0 - 1, T0 + 10**7))
            assert {f["UUID"]: f for f in got} == {f["UUID"]: f for f in flows}
            assert len(s.live()[0]) == 300
            status = s.status()
            assert status.dropped == 0 and status.extra["rejected"] == 0
            # a single item larger than the limit is refused alone, and said so
            s.write_flows([{**_flow(5000), "Pad": "x" * 100_000}, _flow(5001)])
            assert s.flush(60)
            assert [f["UUID"] for f in s.query_flows(FlowQuery(T0 + 50_000, T0 + 10**7))] == [
                "u005001"
            ]
            assert s.status().extra["rejected"] == 1
        finally:
            s.close(30)
    finally:
        node.stop()


# -- topology -------------------------------------------------------------------------------


def test_topology_history(store: Any) -> None:
    n1a, n1b = _node(1, 1), _node(1, 2, State="UP")
    n2 = _node(2)
    edge = {"ID": "e1", "Parent": "n1", "Child": "n2", "Metadata": {"RelationType": "ownership"}}
    store.record(
        [
            Revision("node", "n1", JsonElement.of(n1a), T0),
            Revision("node", "n2", n2, T0),
            Revision("edge", "e1", edge, T0 + 5),
        ]
    )
    assert store.flush(60)
    # n1 changes at T0+100 (closure + new revision); the closure's element is empty
    store.record(
        [
            Revision("node", "n1", JsonElement(b"{}"), T0, T0 + 100),
            Revision("node", "n1", n1b, T0 + 100),
        ]
    )
    # n2 is deleted at T0+200, and so is the edge, in the same batch as its creation's closure
    store.record(
        [Revision("node", "n2", {}, T0, T0 + 200), Revision("edge", "e1", {}, T0 + 5, T0 + 200)]
    )
    assert store.flush(60)

    assert store.graph_at(T0 - 1) == ([], [])
    assert store.graph_at(T0 + 50) == ([n1a, n2], [edge])
    assert store.graph_at(T0 + 100) == ([n1b, n2], [edge])
    assert store.graph_at(T0 + 300) == ([n1b], [])
    assert store.graph_during(T0 + 50, T0 + 300) == ([n1b, n2], [edge])
    assert store.live() == ([n1b], [])
    assert store.revisions("node", ["n1", "n2", "n9"], T0, T0 + 1000) == {
        "n1": [n1a, n1b],
        "n2": [n2],
        "n9": [],
    }
    assert store.revisions("node", ["n1"], T0 + 150, T0 + 160) == {"n1": [n1b]}

    # close_live: what was current ends, what is recorded after it stays current
    n3 = _node(3)
    store.close_live(T0 + 500)
    store.record([Revision("node", "n3", n3, T0 + 600)])
    assert store.flush(60)
    assert store.live() == ([n3], [])
    n1b_closed = {**n1b, "DeletedAt": T0 + 500}  # as a deletion at that time would give it
    assert store.graph_at(T0 + 499) == ([n1b_closed], [])
    assert store.graph_at(T0 + 550) == ([], [])
    assert store.revisions("node", ["n1"], T0, T0 + 10**6) == {"n1": [n1a, n1b_closed]}


def test_unindexable_element_is_kept(store: Any) -> None:
    a = _node(1, Value={"nested": 1})
    b = _node(2, Value="a string where an object was mapped")
    store.record([Revision("node", "n1", a, T0)])
    assert store.flush(60)
    store.record([Revision("node", "n2", b, T0)])
    assert store.flush(60)
    assert store.live() == ([a, b], [])
    assert store.status().extra["rejected"] == 0


# -- rollover and retention ----------------------------------------------------------------


def test_rollover_by_entries_and_retention(es_node: Any, es_client: Any, es_prefix: str) -> None:
    with _store(es_node, es_prefix, index_entries_limit=100, indices_to_keep=1) as store:
        first = [_flow(i) for i in range(120)]
        store.write_flows(first)
        assert store.flush(60)
        created = store.rollover()
        assert f"{es_prefix}flow_v1-000002" in created
        assert f"{es_prefix}metric_v1-000002" in created
        # the same flows updated: a second document per UUID, in the new index
        second = [_update(f) for f in first[:30]]
        store.write_flows(second)
        store.write_flows([_flow(i) for i in range(120, 200)])
        assert store.flush(60)
        got = store.query_flows(FlowQuery(T0, T0 + 10**7))
        expected = {f["UUID"]: f for f in [*first, *second, *(_flow(i) for i in range(120, 200))]}
        assert len(got) == 200
        assert {f["UUID"]: f for f in got} == expected  # deduplicated: the latest state
        assert store.metrics(["u000001"], T0, T0 + 10**7)["u000001"] == [
            first[1]["LastUpdateMetric"],
            second[1]["LastUpdateMetric"],
        ]

        created = store.rollover()  # 110 documents in -000002: rolls, and -000001 goes
        assert f"{es_prefix}flow_v1-000003" in created
        indices = sorted(es_client.indices.get_alias(name=f"{es_prefix}flow"))
        assert indices == [f"{es_prefix}flow_v1-000002", f"{es_prefix}flow_v1-000003"]
        got = store.query_flows(FlowQuery(T0, T0 + 10**7))
        assert {f["UUID"] for f in got} == {f["UUID"] for f in [*second, *expected.values()]} - {
            f["UUID"] for f in first[30:]
        }
        store.write_flows([_flow(500)])
        assert store.flush(60)
        assert es_client.count(index=f"{es_prefix}flow_v1-000003")["count"] == 1
        # topology_live never rolls over
        assert list(es_client.indices.get_alias(name=f"{es_prefix}topology_live")) == [
            f"{es_prefix}topology_live_v1-000001"
        ]


def test_rollover_by_age(es_node: Any, es_client: Any, es_prefix: str) -> None:
    with _store(es_node, es_prefix, index_age_limit=1, rollover_interval=0.2) as store:
        store.write_flows([_flow(1)])
        assert store.flush(60)
        time.sleep(1.2)
        store.write_flows([_flow(2)])  # the writer checks the age before this batch
        assert _wait(lambda: len(es_client.indices.get_alias(name=f"{es_prefix}flow")) >= 2)
        store.write_flows([_flow(3)])
        assert store.flush(60)
        assert {f["UUID"] for f in store.query_flows(FlowQuery(T0, T0 + 10**6))} == {
            "u000001",
            "u000002",
            "u000003",
        }


# -- outages --------------------------------------------------------------------------------


def test_unreachable_at_start_buffers_then_writes(es_node: Any, es_prefix: str) -> None:
    es_node.stop()
    store = _store(es_node, es_prefix)
    try:
        flows = [_flow(i) for i in range(500)]
        store.write_flows(flows)
        store.record([Revision("node", "n1", _node(1), T0)])
        store.put("capture", "c1", {"GremlinQuery": "G.V()"})
        assert not store.flush(1)
        status = store.status()
        assert not status.connected and status.last_error
        assert status.queued == 502 and status.dropped == 0
        with pytest.raises(StorageError):
            store.live()
        es_node.start()
        assert store.flush(120)
        assert len(store.query_flows(FlowQuery(T0, T0 + 10**7))) == 500
        assert store.live() == ([_node(1)], [])
        assert store.status().connected
    finally:
        store.close(30)
    with _store(es_node, es_prefix) as again:
        assert again.list("capture") == {"c1": {"GremlinQuery": "G.V()"}}


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_node_down_during_ingest_loses_nothing(es_node: Any, es_prefix: str, how: str) -> None:
    store = _store(es_node, es_prefix, bulk_max_docs=2000)
    try:
        flows = [_flow(i) for i in range(6000)]
        down = threading.Event()

        def feed() -> None:  # before, while and after the node goes down
            left = 20
            for n in range(0, len(flows), 100):
                store.write_flows(flows[n : n + 100])
                time.sleep(0.01)
                if down.is_set():
                    left -= 1
                    if left == 0:
                        store.write_flows(flows[n + 100 :])
                        return

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            assert _wait(lambda: store.status().written > 0)
            getattr(es_node, how)()
        finally:
            down.set()
            feeder.join()
        assert _wait(lambda: not store.status().connected)
        status = store.status()
        assert status.queued > 0 and status.last_error
        es_node.start()
        assert store.flush(180)
        got = store.query_flows(FlowQuery(T0, T0 + 10**7))
        assert [f["UUID"] for f in got] == [f["UUID"] for f in flows]
        history = store.metrics([f["UUID"] for f in flows], T0, T0 + 10**7)
        assert all(history[f["UUID"]] == [f["LastUpdateMetric"]] for f in flows)
        status = store.status()
        assert status.dropped == 0 and status.extra["rejected"] == 0 and status.connected
        assert status.written == 6000
    finally:
        store.close(30)


def test_queue_bound_drops_the_oldest(es_node: Any, es_prefix: str) -> None:
    es_node.stop()
    store = _store(es_node, es_prefix, queue_size=100)
    try:
        store.write_flows([_flow(i) for i in range(150)])
        status = store.status()
        assert status.dropped == 50 and status.extra["dropped_flows"] == 50
        es_node.start()
        assert store.flush(120)
        got = store.query_flows(FlowQuery(T0, T0 + 10**7))
        assert [f["UUID"] for f in got] == [f"u{i:06d}" for i in range(50, 150)]
    finally:
        store.close(30)


# -- resources ------------------------------------------------------------------------------


def test_two_analyzers_share_resources(es_node: Any, es_prefix: str) -> None:
    a = _store(es_node, es_prefix)
    b = _store(es_node, es_prefix)
    calls: list[str] = []
    b.on_resources_changed = lambda: calls.append("b")
    a.on_resources_changed = lambda: calls.append("a")
    try:
        a.put("capture", "c1", {"GremlinQuery": "G.V().Has('Name', 'eth0')", "Type": "pcap"})
        assert a.get("capture", "c1") is not None  # at once, from the cache
        assert _wait(lambda: b.get("capture", "c1") is not None)
        assert b.get("capture", "c1") == a.get("capture", "c1")
        assert "b" in calls
        b.put("alert", "al1", {"Expression": "true"})
        assert b.delete("capture", "c1")
        assert _wait(lambda: a.get("capture", "c1") is None and "al1" in a.list("alert"))
        assert "a" in calls
        # a change of ours still being written is not undone by a poll
        a.put("capture", "c2", {"N": 1})
        for n in range(2, 30):
            a.put("capture", "c2", {"N": n})
        time.sleep(0.5)
        assert a.get("capture", "c2") == {"N": 29}
        assert _wait(lambda: b.get("capture", "c2") == {"N": 29})
        assert not a.delete("capture", "nope")
    finally:
        a.close(30)
        b.close(30)


def test_reopened_store_sees_everything(es_node: Any, es_prefix: str) -> None:
    flows = [_flow(i) for i in range(100)]
    n1 = _node(1, Labels={"app": "db"})
    with _store(es_node, es_prefix) as store:
        store.write_flows(flows)
        store.record([Revision("node", "n1", n1, T0)])
        store.put("noderule", "r1", {"Action": "create", "Metadata": {"Name": "x"}})
        store.put("noderule", "r2", {"Action": "create"})
        assert store.delete("noderule", "r2")
        assert store.close(60)
    with _store(es_node, es_prefix) as again:
        assert again.query_flows(FlowQuery(T0, T0 + 10**7)) == flows
        assert again.live() == ([n1], [])
        assert again.list("noderule") == {"r1": {"Action": "create", "Metadata": {"Name": "x"}}}
        assert again.metrics(["u000042"], T0, T0 + 10**7)["u000042"] == [
            flows[42]["LastUpdateMetric"]
        ]


def test_deleted_alias_is_set_up_again(store: Any, es_client: Any, es_prefix: str) -> None:
    store.write_flows([_flow(1)])
    assert store.flush(60)
    es_client.indices.delete(index=f"{es_prefix}flow_v1-000001")  # its alias goes with it
    store.write_flows([_flow(2)])
    assert store.flush(60)
    # written through a new alias over an index of ours, not into one the cluster guessed
    assert es_client.indices.exists_alias(name=f"{es_prefix}flow")
    mapping = _mapping(es_client, f"{es_prefix}flow")
    assert mapping["Start"] == {"type": "date", "format": "epoch_millis"}
    assert [f["UUID"] for f in store.query_flows(FlowQuery(T0, T0 + 10**7))] == ["u000002"]


def test_close_timeout_counts_what_is_left(es_node: Any, es_prefix: str) -> None:
    store = _store(es_node, es_prefix)
    es_node.stop()
    store.write_flows([_flow(i) for i in range(10)])
    store.record([Revision("node", "n1", _node(1), T0)])
    assert not store.close(1)
    status = store.status()
    assert status.dropped == 11 and status.queued == 0
    assert status.extra["dropped_flows"] == 10 and status.extra["dropped_revisions"] == 1
    with pytest.raises(StorageError):
        store.write_flows([_flow(11)])
