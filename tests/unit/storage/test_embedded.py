"""The embedded storage backend on a real DuckDB database in a temporary directory.

The tests that write flows run with both stagings (``staging`` fixture): Arrow batches built
by the C extension, the default, and NDJSON (``PYSKYDIVE_PURE=1``); they must store the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyskydive.errors import StorageError
from pyskydive.storage import embedded_flows
from pyskydive.storage.base import FlowQuery, Revision
from pyskydive.storage.embedded import DB_FILE, FORMAT_FILE, EmbeddedStore


@pytest.fixture(params=["arrow", "ndjson"])
def staging(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Stores opened in the test (and in its subprocesses) stage flows this way."""
    if request.param == "arrow":
        if not embedded_flows.COMPILED:
            if os.environ.get("PYSKYDIVE_REQUIRE_COMPILED") == "1":
                pytest.fail("pyskydive.storage._flowarrow did not build or load")
            pytest.skip("the C extension pyskydive.storage._flowarrow is not built")
        monkeypatch.delenv("PYSKYDIVE_PURE", raising=False)
    else:
        monkeypatch.setenv("PYSKYDIVE_PURE", "1")
    return str(request.param)


@pytest.fixture
def store(tmp_path: Path, staging: str) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(tmp_path / "store")
    assert s.compiled == (staging == "arrow")
    assert s.status().extra["staging"] == staging  # /api/status: Storage.Flows.Staging
    yield s
    s.close()


def node(node_id: str, **metadata: Any) -> dict[str, Any]:
    return {"ID": node_id, "Host": "h1", "Metadata": metadata, "CreatedAt": 0, "UpdatedAt": 0}


def edge(edge_id: str, parent: str, child: str) -> dict[str, Any]:
    return {"ID": edge_id, "Parent": parent, "Child": child, "Metadata": {"RelationType": "x"}}


def flow(
    uuid: str, start: int, last: int, ab_bytes: int, delta: int, **extra: Any
) -> dict[str, Any]:
    metric = {"ABPackets": 1, "ABBytes": ab_bytes, "BAPackets": 0, "BABytes": 0, "RTT": 0}
    return {
        "UUID": uuid,
        "LayersPath": "Ethernet/IPv4/TCP",
        "Application": "TCP",
        "TrackingID": "t-" + uuid,
        "L3TrackingID": "l3-" + uuid,
        "NodeTID": extra.pop("NodeTID", "tid1"),
        "CaptureID": "cap",
        "Start": start,
        "Last": last,
        "Metric": {**metric, "Start": start, "Last": last},
        "LastUpdateMetric": {**metric, "ABBytes": delta, "Start": last - 10, "Last": last},
        "Link": {
            "Protocol": "ETHERNET",
            "A": "02:00:00:00:00:01",
            "B": "02:00:00:00:00:02",
            "ID": 0,
        },
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": "10.0.0.2", "ID": 0},
        "Transport": {"Protocol": "TCP", "A": 40000, "B": 80, "ID": 0},
        **extra,
    }


def ids(elements: list[dict[str, Any]]) -> list[str]:
    return [e["ID"] for e in elements]


# -- topology history -------------------------------------------------------------------------


def history(store: EmbeddedStore) -> None:
    """n1 from 100, its metadata changes at 200, deleted at 300; n2 from 150; e1 150-250."""
    store.record(
        [
            Revision("node", "n1", node("n1", v=1), 100),
            Revision("node", "n2", node("n2"), 150),
            Revision("edge", "e1", edge("e1", "n1", "n2"), 150),
        ]
    )
    store.record(
        [
            Revision("node", "n1", node("n1", v=1), 100, 200),  # closure
            Revision("node", "n1", node("n1", v=2), 200),
        ]
    )
    store.record([Revision("edge", "e1", {}, 150, 250)])  # closure with no element: kept
    store.record([Revision("node", "n1", node("n1", v=2), 200, 300)])
    assert store.flush()


def test_graph_at_follows_revisions_and_deletions(store: EmbeddedStore) -> None:
    history(store)
    assert store.graph_at(99) == ([], [])
    nodes, edges = store.graph_at(100)  # valid_from is inclusive
    assert nodes == [node("n1", v=1)] and edges == []
    nodes, edges = store.graph_at(199)
    assert [n["Metadata"] for n in nodes] == [{"v": 1}, {}]
    assert edges == [edge("e1", "n1", "n2")]
    nodes, _ = store.graph_at(200)  # valid_to is exclusive: the new revision
    assert nodes[0]["Metadata"] == {"v": 2}
    assert store.graph_at(250)[1] == []  # the edge is gone at its valid_to
    assert ids(store.graph_at(300)[0]) == ["n2"]  # n1 deleted


def test_graph_during_takes_the_latest_revision_in_the_window(store: EmbeddedStore) -> None:
    history(store)
    nodes, edges = store.graph_during(0, 150)
    assert nodes == [node("n1", v=1), node("n2")]
    assert ids(edges) == ["e1"]
    nodes, _ = store.graph_during(0, 1000)
    assert nodes[0] == node("n1", v=2)
    nodes, edges = store.graph_during(250, 299)  # n1's last revision ends at 300
    assert ids(nodes) == ["n1", "n2"] and edges == []
    nodes, edges = store.graph_during(300, 400)
    assert ids(nodes) == ["n2"] and edges == []
    assert store.graph_during(0, 99) == ([], [])


def test_live_is_what_is_still_current(store: EmbeddedStore) -> None:
    history(store)
    assert store.live() == ([node("n2")], [])


def test_open_and_closure_in_one_batch(store: EmbeddedStore) -> None:
    store.record([Revision("node", "a", node("a"), 10), Revision("node", "a", {}, 10, 20)])
    assert store.flush()
    assert store.graph_at(15) == ([node("a")], [])
    assert store.graph_at(20) == ([], [])


# -- flows ------------------------------------------------------------------------------------


def test_flows_keep_the_latest_state_and_every_metric_update(store: EmbeddedStore) -> None:
    store.write_flows([flow("u1", 1000, 2000, 100, 100)])
    store.write_flows([flow("u1", 1000, 3000, 150, 50), flow("u2", 2500, 2600, 7, 7)])
    store.write_flows([flow("u1", 1000, 4000, 170, 20)])
    assert store.flush()
    flows = store.query_flows(FlowQuery(0, 10_000))
    assert [f["UUID"] for f in flows] == ["u1", "u2"]
    assert flows[0] == flow("u1", 1000, 4000, 170, 20)  # the wire dict, as written
    history = store.metrics(["u1", "u2", "nope"], 0, 10_000)
    assert [m["ABBytes"] for m in history["u1"]] == [100, 50, 20]
    assert history["u1"][1] == {
        "ABPackets": 1,
        "ABBytes": 50,
        "BAPackets": 0,
        "BABytes": 0,
        "Start": 2990,
        "Last": 3000,
        "RTT": 0,
    }
    assert [m["ABBytes"] for m in history["u2"]] == [7]
    assert history["nope"] == []
    assert [m["ABBytes"] for m in store.metrics(["u1"], 2995, 3500)["u1"]] == [50]


def test_two_updates_of_a_flow_in_one_batch(store: EmbeddedStore) -> None:
    store.write_flows([flow("u1", 0, 10, 5, 5), flow("u1", 0, 20, 8, 3)])
    assert store.flush()
    assert [f["Last"] for f in store.query_flows(FlowQuery(0, 100))] == [20]
    assert [m["ABBytes"] for m in store.metrics(["u1"], 0, 100)["u1"]] == [5, 3]


def test_interleaved_updates_in_a_large_batch_keep_the_last(store: EmbeddedStore) -> None:
    # Large enough for DuckDB to read the staged batch in several parallel chunks: the last
    # update of each UUID in the batch must still win.
    n = 10_000
    batch = [flow(f"u{i}", i, i + 10 * k, k, 1) for k in range(1, 4) for i in range(n)]
    store.write_flows(batch)
    store.write_flows([flow("u7", 7, 99, 9, 1)])  # and across batches
    assert store.flush()
    flows = store.query_flows(FlowQuery(0, 10**9))
    assert len(flows) == n
    assert [f["Last"] for f in flows[:8]] == [30, 31, 32, 33, 34, 35, 36, 99]
    assert store.sql("SELECT count(*), count(DISTINCT UUID) FROM flows") == [(n, n)]
    assert store.sql("SELECT count(*) FROM metrics") == [(3 * n + 1,)]


def test_updates_keep_their_order_across_an_io_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "staging"
    blocker.mkdir()
    # NDJSON staging: its file is what fails (tests/functional/test_embedded_faults.py fills
    # the disk under both stagings)
    store = EmbeddedStore(
        tmp_path / "s", batch_size=1, retry_interval=0.02, staging=blocker, compiled=False
    )
    for k in range(1, 6):  # one batch each, several of them staged ahead of the writer
        store.write_flows([flow("u1", 0, 10 * k, k, 1)])
    deadline = time.monotonic() + 30
    while store.status().connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.status().queued == 5
    blocker.rmdir()
    assert store.flush()
    assert [f["Last"] for f in store.query_flows(FlowQuery(0, 100))] == [50]
    assert len(store.metrics(["u1"], 0, 100)["u1"]) == 5
    store.close()


def test_query_window_and_filters(store: EmbeddedStore) -> None:
    store.write_flows(
        [
            flow("early", 0, 100, 1, 1),
            flow("middle", 150, 250, 1, 1, NodeTID="tid2"),
            flow("late", 300, 400, 1, 1),
        ]
    )
    assert store.flush()

    def uuids(**kw: Any) -> list[str]:
        return [f["UUID"] for f in store.query_flows(FlowQuery(**kw))]

    assert uuids(start=100, end=150) == ["early", "middle"]  # both bounds inclusive
    assert uuids(start=101, end=149) == []
    assert uuids(start=0, end=1000, node_tids=frozenset({"tid2"})) == ["middle"]
    assert uuids(start=0, end=1000, tracking_ids=frozenset({"t-late", "t-early"})) == [
        "early",
        "late",
    ]
    assert uuids(start=0, end=1000, limit=2) == ["early", "middle"]


def test_unknown_keys_survive(store: EmbeddedStore) -> None:
    f = flow("u1", 0, 10, 1, 1, Custom={"k": [1, 2]}, FinishType="TCP_FIN")
    store.write_flows([f])
    assert store.flush()
    assert store.query_flows(FlowQuery(0, 10)) == [f]


def test_bad_flow_is_rejected_alone_and_counted(store: EmbeddedStore) -> None:
    store.write_flows([flow("good1", 0, 10, 1, 1), {"UUID": "bad", "Start": "soon"}])
    store.write_flows([flow("good2", 0, 10, 1, 1)])
    assert store.flush()
    assert [f["UUID"] for f in store.query_flows(FlowQuery(0, 10))] == ["good1", "good2"]
    status = store.status()
    assert status.extra["rejected"] == 1
    assert "soon" in status.last_error or status.last_error


def test_unserializable_flow_is_rejected_alone(store: EmbeddedStore) -> None:
    store.write_flows([flow("good1", 0, 10, 1, 1), flow("bad", 0, 10, 1, 1, Custom={1, 2})])
    store.write_flows([flow("good2", 0, 10, 1, 1)])
    assert store.flush()
    assert [f["UUID"] for f in store.query_flows(FlowQuery(0, 10))] == ["good1", "good2"]
    assert store.status().extra["rejected"] == 1


def test_flows_without_uuid_are_rejected_without_the_others(store: EmbeddedStore) -> None:
    store.write_flows([flow("good", 0, 10, 1, 1), {"Start": 1}, {"UUID": 7}])
    assert store.flush()
    assert [f["UUID"] for f in store.query_flows(FlowQuery(0, 10))] == ["good"]
    assert store.status().extra["rejected"] == 2
    assert "UUID" in store.status().last_error


def test_retention_by_age_and_count(tmp_path: Path, staging: str) -> None:
    with EmbeddedStore(tmp_path / "s", max_age_ms=1000, max_flows=2) as store:
        store.write_flows([flow(f"u{i}", i * 1000, i * 1000 + 500, 1, 1) for i in range(5)])
        store.record(
            [
                Revision("node", "old", node("old"), 0, 500),
                Revision("node", "cur", node("cur"), 0),
            ]
        )
        assert store.flush()
        store.apply_retention(now=3000)  # cutoff 2000: u0, u1 and "old" go
        assert store.flush()
        assert [f["UUID"] for f in store.query_flows(FlowQuery(0, 10_000))] == ["u3", "u4"]
        assert set(store.metrics(["u2", "u3"], 0, 10_000)) == {"u2", "u3"}
        assert store.metrics(["u2", "u3"], 0, 10_000)["u2"] == []
        assert store.graph_during(0, 10_000) == ([node("cur")], [])


# -- the queue --------------------------------------------------------------------------------


def test_full_queue_drops_the_oldest_and_counts(tmp_path: Path, staging: str) -> None:
    store = EmbeddedStore(tmp_path / "s", queue_size=3)
    with store._lock:  # hold the writer so that the queue fills up
        store.write_flows([flow(f"u{i}", i, i + 1, 1, 1) for i in range(5)])
        store.record([Revision("node", f"n{i}", node(f"n{i}"), i) for i in range(4)])
        status = store.status()
    assert status.dropped == 3
    assert status.extra["dropped_flows"] == 2
    assert status.extra["dropped_revisions"] == 1
    assert store.flush()
    assert [f["UUID"] for f in store.query_flows(FlowQuery(0, 100))] == ["u2", "u3", "u4"]
    assert ids(store.live()[0]) == ["n1", "n2", "n3"]
    status = store.status()
    assert (status.queued, status.written, status.dropped) == (0, 6, 3)
    store.close()


def test_flow_and_revision_queues_have_their_own_bounds(tmp_path: Path, staging: str) -> None:
    store = EmbeddedStore(tmp_path / "s", queue_size=4, revision_queue_size=2)
    with store._lock:  # hold the writer so that the queues fill up
        store.write_flows([flow(f"u{i}", i, i + 1, 1, 1) for i in range(5)])
        store.record([Revision("node", f"n{i}", node(f"n{i}"), i) for i in range(4)])
        status = store.status()
    assert (status.extra["dropped_flows"], status.extra["dropped_revisions"]) == (1, 2)
    assert store.flush()
    assert len(store.query_flows(FlowQuery(0, 100))) == 4
    assert ids(store.live()[0]) == ["n2", "n3"]
    store.close()
    with pytest.raises(ValueError, match="revision_queue_size"):
        EmbeddedStore(tmp_path / "t", revision_queue_size=0)


def test_io_failure_is_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    blocker = tmp_path / "staging"  # a directory: the writer cannot write its staging file
    blocker.mkdir()
    store = EmbeddedStore(tmp_path / "s", retry_interval=0.02, staging=blocker, compiled=False)
    store.write_flows([flow("u1", 0, 10, 1, 1)])
    deadline = time.monotonic() + 30
    while store.status().connected and time.monotonic() < deadline:
        time.sleep(0.01)
    status = store.status()
    assert not status.connected
    assert str(blocker) in status.last_error
    assert status.queued == 1
    blocker.rmdir()
    assert store.flush()
    assert [f["UUID"] for f in store.query_flows(FlowQuery(0, 10))] == ["u1"]
    status = store.status()
    assert status.connected and status.written == 1 and status.dropped == 0
    store.close()


def test_close_drains_and_writes_are_refused_after(tmp_path: Path, staging: str) -> None:
    store = EmbeddedStore(tmp_path / "s", batch_size=10)
    store.write_flows([flow(f"u{i}", i, i + 1, 1, 1) for i in range(95)])
    assert store.close()
    with pytest.raises(StorageError, match="closed"):
        store.write_flows([flow("late", 0, 1, 1, 1)])
    with EmbeddedStore(tmp_path / "s") as again:
        assert len(again.query_flows(FlowQuery(0, 1000))) == 95


def test_concurrent_writer_and_reader(store: EmbeddedStore) -> None:
    errors: list[BaseException] = []
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                seen.append(len(store.query_flows(FlowQuery(0, 10**9))))
                store.graph_at(50)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for batch in range(20):
            store.write_flows([flow(f"u{batch}-{i}", i, i + 1, 1, 1) for i in range(200)])
            store.record([Revision("node", f"n{batch}", node(f"n{batch}"), batch)])
        assert store.flush()
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert seen == sorted(seen)  # committed batches only, never a partial one
    assert all(n % 200 == 0 for n in seen)
    assert len(store.query_flows(FlowQuery(0, 10**9))) == 4000
    assert len(store.graph_at(50)[0]) == 20


# -- persistence and bad directories --------------------------------------------------------


def test_everything_survives_a_restart(tmp_path: Path, staging: str) -> None:
    with EmbeddedStore(tmp_path / "s") as store:
        history(store)
        store.write_flows([flow("u1", 0, 10, 1, 1)])
        store.put("capture", "c1", {"UUID": "c1", "GremlinQuery": "G.V()"})
    with EmbeddedStore(tmp_path / "s") as store:
        assert store.graph_at(199)[0] == [node("n1", v=1), node("n2")]
        assert store.live() == ([node("n2")], [])
        assert store.query_flows(FlowQuery(0, 10)) == [flow("u1", 0, 10, 1, 1)]
        assert [m["ABBytes"] for m in store.metrics(["u1"], 0, 10)["u1"]] == [1]
        assert store.get("capture", "c1") == {"UUID": "c1", "GremlinQuery": "G.V()"}
        assert store.list("capture") == {"c1": {"UUID": "c1", "GremlinQuery": "G.V()"}}
        assert store.delete("capture", "c1") is True
        assert store.delete("capture", "c1") is False


def test_what_was_flushed_survives_a_crash(tmp_path: Path, staging: str) -> None:
    script = (
        "import os, sys\n"
        "from pyskydive.storage.base import Revision\n"
        "from pyskydive.storage.embedded import EmbeddedStore\n"
        "s = EmbeddedStore(sys.argv[1])\n"
        "s.write_flows([{'UUID': 'u1', 'Start': 1, 'Last': 2}])\n"
        "s.record([Revision('node', 'n', {'ID': 'n'}, 1)])\n"
        "assert s.flush()\n"
        "os._exit(0)  # no close(): as if killed\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "s")], capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    with EmbeddedStore(tmp_path / "s") as store:
        assert store.query_flows(FlowQuery(0, 10)) == [{"UUID": "u1", "Start": 1, "Last": 2}]
        assert store.live() == ([{"ID": "n"}], [])


def test_a_directory_holding_only_resources_is_adopted(tmp_path: Path) -> None:
    (tmp_path / "resources.json").write_text('{"alert": {"a": {"UUID": "a"}}}')
    with EmbeddedStore(tmp_path) as store:
        assert store.get("alert", "a") == {"UUID": "a"}
    assert (tmp_path / FORMAT_FILE).read_text().startswith("pyskydive-embedded-store 1")


def test_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(StorageError, match="not a pyskydive embedded store") as err:
        EmbeddedStore(tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]  # nothing written


def test_wrong_version_and_wrong_marker(tmp_path: Path) -> None:
    (tmp_path / FORMAT_FILE).write_text("pyskydive-embedded-store 99\n")
    with pytest.raises(StorageError, match="version 99") as err:
        EmbeddedStore(tmp_path)
    assert str(tmp_path) in str(err.value)
    (tmp_path / FORMAT_FILE).write_text("something else entirely\n")
    with pytest.raises(StorageError, match="marker"):
        EmbeddedStore(tmp_path)


def test_corrupt_database(tmp_path: Path) -> None:
    EmbeddedStore(tmp_path).close()
    (tmp_path / DB_FILE).write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StorageError) as err:
        EmbeddedStore(tmp_path)
    assert str(tmp_path / DB_FILE) in str(err.value) and "\n" not in str(err.value)


def test_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="not a directory"):
        EmbeddedStore(tmp_path / "file")


def test_a_store_is_open_once(tmp_path: Path) -> None:
    with EmbeddedStore(tmp_path / "s"):
        with pytest.raises(StorageError, match="already open in this process"):
            EmbeddedStore(tmp_path / "s")
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys\n"
                "from pyskydive.errors import StorageError\n"
                "from pyskydive.storage.embedded import EmbeddedStore\n"
                "try:\n"
                "    EmbeddedStore(sys.argv[1])\n"
                "except StorageError as e:\n"
                "    sys.exit(str(e))\n",
                str(tmp_path / "s"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert other.returncode == 1
        assert str(tmp_path / "s" / DB_FILE) in other.stderr
    EmbeddedStore(tmp_path / "s").close()  # closed: it opens again
