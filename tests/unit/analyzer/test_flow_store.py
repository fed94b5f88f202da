"""The analyzer's flow store: latest version wins, bounded with counted eviction, indexes."""

from __future__ import annotations

from typing import Any

import pytest

from pyskydive.analyzer.flows import FlowStore, StoredFlow


def wire(uuid: str, tid: str = "", tracking: str = "t", packets: int = 1) -> dict[str, Any]:
    return {
        "UUID": uuid,
        "NodeTID": tid,
        "TrackingID": tracking,
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": "10.0.0.2", "ID": 0},
        "Metric": {"ABPackets": packets},
    }


def test_latest_version_wins_and_indexes_follow() -> None:
    s = FlowStore()
    s.put(wire("f1", tid="n1", tracking="t1", packets=1))
    s.put(wire("f1", tid="n2", tracking="t2", packets=5))
    assert len(s) == 1
    got = s.get("f1")
    assert got is not None and got.get("Metric.ABPackets") == 5
    assert s.by_node("n1") == [] and [f.uuid for f in s.by_node("n2")] == ["f1"]
    assert s.by_tracking_id("t1") == [] and [f.uuid for f in s.by_tracking_id("t2")] == ["f1"]


def test_lookups_by_node_and_tracking_id() -> None:
    s = FlowStore()
    s.put(wire("a", tid="n1", tracking="x"))
    s.put(wire("b", tid="n2", tracking="x"))
    s.put(wire("c", tid="n1", tracking="y"))
    assert [f.uuid for f in s.by_node("n1")] == ["a", "c"]
    assert [f.uuid for f in s.by_nodes(["n2", "n1", "n2"])] == ["b", "a", "c"]
    assert [f.uuid for f in s.by_tracking_id("x")] == ["a", "b"]
    assert s.by_node("missing") == []


def test_bounded_oldest_first_with_eviction_counted() -> None:
    s = FlowStore(max_flows=2)
    s.put(wire("a", tid="n"))
    s.put(wire("b", tid="n"))
    s.put(wire("a", tid="n"))  # rewritten: now the newest
    s.put(wire("c", tid="n"))
    assert [f.uuid for f in s.flows()] == ["a", "c"]
    assert s.evicted == 1 and "b" not in s
    assert [f.uuid for f in s.by_node("n")] == ["a", "c"]
    assert s.status() == {"Flows": 2, "MaxFlows": 2, "Evicted": 1}


def test_remove_and_bad_input() -> None:
    s = FlowStore()
    s.put(wire("a", tid="n"))
    assert s.remove("a") and not s.remove("a")
    assert s.by_node("n") == []
    with pytest.raises(ValueError):
        s.put({"NodeTID": "n"})
    with pytest.raises(ValueError):
        FlowStore(max_flows=0)


def test_stored_flow_get() -> None:
    f = StoredFlow(wire("a"))
    assert f.get("Network") == ["10.0.0.1", "10.0.0.2"]  # A or B, as Skydive
    assert f.get("Network.B") == "10.0.0.2"
    assert f.get("Transport") is None and f.get("Nope.Deeper") is None
    assert f.to_wire()["UUID"] == "a"


def test_listeners_hear_each_put_and_each_batch_once() -> None:
    s = FlowStore()
    heard: list[list[str]] = []

    def listener(wires: list[dict[str, Any]]) -> None:
        heard.append([w["UUID"] for w in wires])

    s.add_listener(listener)
    s.put(wire("f1"))
    assert s.put_many([wire("f2"), wire("f3")]) == 2
    assert s.put_many([]) == 0  # an empty batch is not announced
    assert heard == [["f1"], ["f2", "f3"]]
    s.remove_listener(listener)
    s.remove_listener(listener)  # unknown: ignored
    s.put(wire("f4"))
    assert heard == [["f1"], ["f2", "f3"]]


def test_bad_flow_in_a_batch_still_announces_what_was_stored() -> None:
    s = FlowStore()
    heard: list[list[str]] = []
    s.add_listener(lambda wires: heard.append([w["UUID"] for w in wires]))
    with pytest.raises(ValueError, match="UUID"):
        s.put_many([wire("f1"), {"NodeTID": "x"}, wire("f3")])
    assert heard == [["f1"]] and len(s) == 1


def test_a_failing_listener_does_not_stop_the_store_or_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = FlowStore()
    heard: list[int] = []

    def broken(wires: list[dict[str, Any]]) -> None:
        raise RuntimeError("boom")

    s.add_listener(broken)
    s.add_listener(lambda wires: heard.append(len(wires)))
    s.put_many([wire("f1"), wire("f2")])
    assert len(s) == 2 and heard == [2] and s.listener_errors == 1
    assert "flow listener" in caplog.text
