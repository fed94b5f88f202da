"""One suite of history, flow and resource tests run against both storage backends.

The embedded store runs on a temporary directory; the Elasticsearch store on the real node of
tests/es (a JVM from Maven Central artifacts), each test under its own index prefix. A test
writes through the public interface, ``flush()``es (written and searchable), and checks what
a user of ``G.At()``, ``Flows()``, ``Metrics()`` and the resource API would read; the restart
tests close the store and open a new one on the same directory or prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyskydive.storage.base import FlowQuery, Revision
from pyskydive.storage.open import Store

Opener = Callable[[], Any]


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("elasticsearch", marks=[pytest.mark.functional, pytest.mark.slow]),
    ]
)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the backend under test on the same directory or index prefix each time."""
    opened: list[Any] = []
    if request.param == "embedded":
        from pyskydive.storage.embedded import EmbeddedStore

        def make() -> Any:
            return EmbeddedStore(tmp_path / "store")

    else:
        from pyskydive.storage.elasticsearch import ElasticsearchStore

        node = request.getfixturevalue("es_node")
        prefix = request.getfixturevalue("es_prefix")

        def make() -> Any:
            return ElasticsearchStore(hosts=[node.url], index_prefix=prefix, bulk_maxdelay=0.05)

    def open_store() -> Any:
        store = make()
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture
def store(opener: Opener) -> Store:
    s: Store = opener()
    return s


def flushed(store: Store) -> Store:
    assert store.flush(60.0), store.status()
    return store


def node(node_id: str, **metadata: Any) -> dict[str, Any]:
    return {
        "ID": node_id,
        "Host": "h1",
        "Origin": "agent.h1",
        "Metadata": {"Name": node_id, "Type": "veth", **metadata},
        "CreatedAt": 100,
        "UpdatedAt": 100,
        "Revision": 1,
    }


def edge(edge_id: str, parent: str, child: str) -> dict[str, Any]:
    return {
        "ID": edge_id,
        "Host": "h1",
        "Origin": "agent.h1",
        "Parent": parent,
        "Child": child,
        "Metadata": {"RelationType": "ownership"},
        "CreatedAt": 150,
        "UpdatedAt": 150,
        "Revision": 1,
    }


def flow(
    uuid: str, start: int, last: int, *, total: int, delta: int, **extra: Any
) -> dict[str, Any]:
    def metric(ab: int, s: int, e: int) -> dict[str, Any]:
        return {
            "ABPackets": ab // 100,
            "ABBytes": ab,
            "BAPackets": 0,
            "BABytes": 0,
            "Start": s,
            "Last": e,
            "RTT": 0,
        }

    return {
        "UUID": uuid,
        "LayersPath": "Ethernet/IPv4/UDP",
        "Application": "UDP",
        "TrackingID": extra.pop("TrackingID", "t-" + uuid),
        "L3TrackingID": "l3-" + uuid,
        "NodeTID": extra.pop("NodeTID", "tid1"),
        "CaptureID": "cap1",
        "Start": start,
        "Last": last,
        "Metric": metric(total, start, last),
        "LastUpdateMetric": metric(delta, max(start, last - 1000), last),
        "Link": {"Protocol": "ETHERNET", "A": "02:00:00:00:00:01", "B": "02:00:00:00:00:02"},
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": "10.0.0.2"},
        "Transport": {"Protocol": "UDP", "A": 40000, "B": 53},
        **extra,
    }


def ids(elements: list[dict[str, Any]]) -> list[str]:
    return sorted(e["ID"] for e in elements)


def record_history(store: Store) -> None:
    """n1 from 100, metadata changed at 200, deleted at 300; n2 from 150; e1 150..250."""
    n1b = {**node("n1", MTU=9000), "UpdatedAt": 200, "Revision": 2}
    store.record(
        [
            Revision("node", "n1", node("n1", MTU=1500), 100),
            Revision("node", "n2", node("n2"), 150),
            Revision("edge", "e1", edge("e1", "n1", "n2"), 150),
        ]
    )
    store.record(
        [
            Revision("node", "n1", node("n1", MTU=1500), 100, 200),
            Revision("node", "n1", n1b, 200),
        ]
    )
    e1_closed = {**edge("e1", "n1", "n2"), "DeletedAt": 250}
    store.record([Revision("edge", "e1", e1_closed, 150, 250)])
    store.record([Revision("node", "n1", {**n1b, "DeletedAt": 300}, 200, 300)])


# -- topology history --------------------------------------------------------------------------


def test_graph_at_follows_revisions_and_deletions(store: Store) -> None:
    record_history(store)
    flushed(store)
    nodes, edges = store.graph_at(99)
    assert (nodes, edges) == ([], [])
    nodes, edges = store.graph_at(160)
    assert ids(nodes) == ["n1", "n2"] and ids(edges) == ["e1"]
    assert next(n for n in nodes if n["ID"] == "n1") == node("n1", MTU=1500)
    nodes, edges = store.graph_at(200)  # the new revision starts at 200 (inclusive)
    assert next(n for n in nodes if n["ID"] == "n1")["Metadata"]["MTU"] == 9000
    nodes, edges = store.graph_at(250)  # e1 ended at 250 (exclusive)
    assert ids(nodes) == ["n1", "n2"] and edges == []
    nodes, _ = store.graph_at(300)
    assert ids(nodes) == ["n2"]


def test_graph_during_gives_each_element_in_its_latest_revision_there(store: Store) -> None:
    record_history(store)
    flushed(store)
    nodes, edges = store.graph_during(120, 210)
    assert ids(nodes) == ["n1", "n2"] and ids(edges) == ["e1"]
    assert next(n for n in nodes if n["ID"] == "n1")["Metadata"]["MTU"] == 9000
    nodes, edges = store.graph_during(310, 400)
    assert ids(nodes) == ["n2"] and edges == []
    nodes, _ = store.graph_during(260, 400)  # n1 was deleted at 300: still in the window
    assert ids(nodes) == ["n1", "n2"]
    assert next(n for n in nodes if n["ID"] == "n1")["DeletedAt"] == 300


def test_live_and_revisions(store: Store) -> None:
    record_history(store)
    flushed(store)
    nodes, edges = store.live()
    assert ids(nodes) == ["n2"] and edges == []
    revs = store.revisions("node", ["n1", "n2", "nx"], 0, 1000)
    assert [r["Metadata"]["MTU"] for r in revs["n1"]] == [1500, 9000]
    assert len(revs["n2"]) == 1 and revs["nx"] == []
    assert [r["Metadata"]["MTU"] for r in store.revisions("node", ["n1"], 250, 260)["n1"]] == [9000]


def test_close_live_ends_every_current_revision(store: Store) -> None:
    store.record([Revision("node", "n1", node("n1"), 100), Revision("node", "n2", node("n2"), 100)])
    store.close_live(500)
    store.record([Revision("node", "n2", {**node("n2"), "UpdatedAt": 600}, 600)])  # re-synced
    flushed(store)
    assert ids(store.graph_at(499)[0]) == ["n1", "n2"]
    assert store.graph_at(550) == ([], [])
    assert ids(store.live()[0]) == ["n2"]
    gone = store.graph_during(400, 550)[0]
    assert {n["ID"]: n.get("DeletedAt") for n in gone} == {"n1": 500, "n2": 500}


def test_a_closure_without_element_keeps_the_recorded_one(store: Store) -> None:
    store.record([Revision("node", "n1", node("n1", MTU=1500), 100)])
    flushed(store)
    store.record([Revision("node", "n1", {}, 100, 180)])
    flushed(store)
    assert store.graph_at(150)[0] == [node("n1", MTU=1500)]
    assert store.graph_at(180) == ([], [])


# -- flows -------------------------------------------------------------------------------------


def test_flows_keep_the_latest_state_and_the_metric_history(store: Store) -> None:
    store.write_flows([flow("f1", 1000, 2000, total=300, delta=300)])
    flushed(store)
    store.write_flows([flow("f1", 1000, 3000, total=500, delta=200)])
    store.write_flows([flow("f1", 1000, 4000, total=600, delta=100, FinishType="TIMEOUT")])
    flushed(store)
    [f1] = store.query_flows(FlowQuery(0, 10_000))
    assert f1 == flow("f1", 1000, 4000, total=600, delta=100, FinishType="TIMEOUT")
    history = store.metrics(["f1"], 0, 10_000)["f1"]
    assert [m["ABBytes"] for m in history] == [300, 200, 100]
    assert [m["Last"] for m in history] == [2000, 3000, 4000]
    assert [m["ABBytes"] for m in store.metrics(["f1"], 2100, 2900)["f1"]] == [200]


def test_a_flow_without_update_metric_keeps_its_metric_as_history(store: Store) -> None:
    f = flow("p1", 5000, 6000, total=700, delta=0)
    del f["LastUpdateMetric"]  # as /api/pcap gives them: at the packets' own timestamps
    store.write_flows([f])
    flushed(store)
    assert store.query_flows(FlowQuery(5500, 5500)) == [f]
    assert [m["ABBytes"] for m in store.metrics(["p1"], 0, 10_000)["p1"]] == [700]


def test_query_window_and_filters(store: Store) -> None:
    store.write_flows(
        [
            flow("a", 1000, 2000, total=1, delta=1),
            flow("b", 3000, 4000, total=1, delta=1, NodeTID="tid2"),
            flow("c", 1500, 5000, total=1, delta=1, TrackingID="shared"),
            flow("d", 6000, 7000, total=1, delta=1, TrackingID="shared", NodeTID="tid2"),
        ]
    )
    flushed(store)

    def uuids(query: FlowQuery) -> list[str]:
        return sorted(f["UUID"] for f in store.query_flows(query))

    assert uuids(FlowQuery(0, 10_000)) == ["a", "b", "c", "d"]
    assert uuids(FlowQuery(2500, 3500)) == ["b", "c"]  # alive at some point of the window
    assert uuids(FlowQuery(2000, 2000)) == ["a", "c"]  # a point: Start <= t <= Last
    assert uuids(FlowQuery(0, 10_000, node_tids=frozenset({"tid2"}))) == ["b", "d"]
    assert uuids(FlowQuery(0, 10_000, tracking_ids=frozenset({"shared"}))) == ["c", "d"]
    assert len(store.query_flows(FlowQuery(0, 10_000, limit=2))) == 2


def test_unknown_keys_and_labels_survive(store: Store) -> None:
    f = flow("x", 1, 2, total=1, delta=1, Custom={"k": [1, 2]}, RawPacketsCaptured=3)
    store.write_flows([f])
    n = node("n1", Labels={f"app.kubernetes.io/k{i}": f"v{i}" for i in range(50)})
    store.record([Revision("node", "n1", n, 100)])
    flushed(store)
    assert store.query_flows(FlowQuery(0, 10)) == [f]
    assert store.graph_at(100)[0] == [n]


# -- resources ---------------------------------------------------------------------------------


def test_resources(store: Store) -> None:
    capture = {"UUID": "c1", "GremlinQuery": "G.V().Has('Name', 'eth0')", "Type": "pcap"}
    store.put("capture", "c1", capture)
    store.put("alert", "a1", {"UUID": "a1", "Expression": "G.V().Count()"})
    assert store.get("capture", "c1") == capture
    assert store.list("capture") == {"c1": capture}
    assert store.get("capture", "nope") is None
    assert store.delete("alert", "a1") is True
    assert store.delete("alert", "a1") is False
    assert store.list("alert") == {}


# -- restart -----------------------------------------------------------------------------------


def test_history_flows_and_resources_survive_a_restart(opener: Opener) -> None:
    first = opener()
    record_history(first)
    first.write_flows([flow("f1", 1000, 2000, total=300, delta=300)])
    first.write_flows([flow("f1", 1000, 3000, total=500, delta=200)])
    capture = {"UUID": "c1", "GremlinQuery": "G.V()", "Type": "afpacket"}
    first.put("capture", "c1", capture)
    assert first.close(60.0)

    second = opener()
    assert ids(second.graph_at(160)[0]) == ["n1", "n2"]
    assert ids(second.live()[0]) == ["n2"]
    assert [f["Metric"]["ABBytes"] for f in second.query_flows(FlowQuery(0, 10_000))] == [500]
    assert [m["ABBytes"] for m in second.metrics(["f1"], 0, 10_000)["f1"]] == [300, 200]
    assert second.get("capture", "c1") == capture


def test_status_counts_what_was_written(store: Store) -> None:
    store.write_flows([flow(f"s{i}", 1, 2, total=1, delta=1) for i in range(10)])
    store.record([Revision("node", "n1", node("n1"), 100)])
    flushed(store)
    status = store.status()
    assert status.connected and status.queued == 0 and status.dropped == 0
    assert status.written >= 11
