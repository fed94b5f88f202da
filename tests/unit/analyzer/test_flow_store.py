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
