"""/ws/publisher and /ws/pubsub against a live analyzer: origins, persistence policies,
schema-checked messages, and the pubsub stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, Subscriber, api_up, status, topology, uid, wait_for, wait_topology
from websockets.exceptions import InvalidStatus


@pytest.fixture
def port(cluster: Cluster, tmp_path: Path) -> int:
    analyzer = cluster.spawn(
        "analyzer", extra={"SKYDIVE_ANALYZER_DATA_DIR": str(tmp_path / "data")}
    )
    wait_for("the analyzer API", lambda: api_up(analyzer.analyzer_port), timeout=20)
    return analyzer.analyzer_port


def node(node_id: str, name: str, **md: Any) -> dict[str, Any]:
    return {"ID": node_id, "Metadata": {"Name": name, "Type": "device", **md}}


def msg(type_: str, obj: Any, uuid: str | None = None) -> dict[str, Any]:
    out = {"Namespace": "Graph", "Type": type_, "Obj": obj}
    if uuid:
        out["UUID"] = uuid
    return out


def test_delete_on_disconnect_is_the_default(port: int) -> None:
    host, nid = uid("sktpub"), uid("sktn")
    with Subscriber(port, "/ws/publisher", **{"X-Host-ID": host}) as pub:
        pub.send(msg("NodeAdded", node(nid, "p1")))
        topo = wait_topology(port, "the published node", lambda t: nid in t.by_id)
        assert topo.by_id[nid]["Origin"] == f"publisher.{host}"
        publishers = status(port)["Publishers"]
        assert publishers[host]["Origin"] == f"publisher.{host}"
        assert publishers[host]["PersistencePolicy"] == "DeleteOnDisconnect"
        pub.send(msg("NodeUpdated", node(nid, "p1", MTU=1500)))
        wait_topology(port, "the update", lambda t: t.by_id[nid]["Metadata"].get("MTU") == 1500)
    wait_topology(port, "the node gone with its publisher", lambda t: nid not in t.by_id)


def test_persistent_publisher_elements_stay(port: int) -> None:
    host, a, b, e = uid("sktpub"), uid("sktn"), uid("sktn"), uid("skte")
    headers = {"X-Host-ID": host, "X-Persistence-Policy": "Persistent"}
    with Subscriber(port, "/ws/publisher", **headers) as pub:
        pub.send(msg("NodeAdded", node(a, "a")))
        pub.send(msg("NodeAdded", node(b, "b")))
        edge = {"ID": e, "Parent": a, "Child": b, "Metadata": {"RelationType": "layer2"}}
        pub.send(msg("EdgeAdded", edge))
        wait_topology(port, "the published edge", lambda t: any(x["ID"] == e for x in t.edges))
    topo = topology(port)
    assert a in topo.by_id
    assert b in topo.by_id
    # the same publisher comes back and deletes its node (and so the edge)
    with Subscriber(port, "/ws/publisher", **headers) as pub:
        pub.send(msg("NodeDeleted", {"ID": b}))
        wait_topology(port, "the deletion", lambda t: b not in t.by_id and not t.edges)


def test_bad_messages_are_answered_and_change_nothing(port: int) -> None:
    owner, other, nid = uid("sktpub"), uid("sktpub"), uid("sktn")
    with (
        Subscriber(port, "/ws/publisher", **{"X-Host-ID": owner}) as pub,
        Subscriber(port, "/ws/publisher", **{"X-Host-ID": other}) as intruder,
    ):
        pub.send(msg("NodeAdded", node(nid, "mine")))
        wait_topology(port, "the node", lambda t: nid in t.by_id)
        cases = [
            (msg("NodeAdded", {"ID": "x", "Metadata": {"Type": "device"}}), "Metadata.Name"),
            (
                msg(
                    "EdgeAdded",
                    {
                        "ID": "e",
                        "Parent": nid,
                        "Child": "missing",
                        "Metadata": {"RelationType": "l"},
                    },
                ),
                "does not exist",
            ),
            (msg("Bogus", {}), "unexpected message type"),
            ("{not json", "not JSON"),
            (msg("SyncRequest", {}), "pubsub"),
        ]
        for i, (bad, reason) in enumerate(cases):
            if isinstance(bad, dict):
                bad["UUID"] = f"q{i}"
            pub.send(bad)
            reply = pub.recv()
            assert reply["Type"] == "Error"
            assert reason in reply["Obj"]["Error"]
        intruder.send(msg("NodeDeleted", {"ID": nid}, "x"))
        reply = intruder.recv()
        assert reply["Type"] == "Error"
        assert f"publisher.{owner}" in reply["Obj"]["Error"]
        assert nid in topology(port).by_id
        assert "x" not in topology(port).by_id


def test_duplicate_publisher_and_bad_policy_are_refused(port: int) -> None:
    host = uid("sktpub")
    with Subscriber(port, "/ws/publisher", **{"X-Host-ID": host}):
        with pytest.raises(InvalidStatus) as info:
            Subscriber(port, "/ws/publisher", **{"X-Host-ID": host})
        assert info.value.response.status_code == 409
    with pytest.raises(InvalidStatus) as info:
        Subscriber(port, "/ws/publisher", **{"X-Persistence-Policy": "Forever"})
    assert info.value.response.status_code == 400


def test_pubsub_publishes_and_subscribes(port: int) -> None:
    nid, other = uid("sktn"), uid("sktn")
    with (
        Subscriber(port, "/ws/pubsub", **{"X-Host-ID": uid("sktpub")}) as ps,
        Subscriber(port, "/ws/publisher") as pub,
    ):
        reply = ps.sync()
        assert reply["Status"] == 200
        assert "Nodes" in reply["Obj"]
        ps.send(msg("NodeAdded", node(nid, "own")))
        ps.until(lambda m: m["Type"] == "NodeAdded" and m["Obj"]["ID"] == nid)
        pub.send(msg("NodeAdded", node(other, "theirs")))
        got = ps.until(lambda m: m["Type"] == "NodeAdded" and m["Obj"]["ID"] == other)
        assert got[-1]["Obj"]["Origin"].startswith("publisher.127.0.0.1:")
        reply = ps.sync()
        assert {nid, other} <= {n["ID"] for n in reply["Obj"]["Nodes"]}
