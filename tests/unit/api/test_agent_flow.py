"""Flow batches from agents: bad flows are skipped and counted, the others stored at once."""

from __future__ import annotations

import orjson

from pyskydive.agent.flow_sender import UDP_MAX, _datagrams
from pyskydive.analyzer.flows import FlowStore
from pyskydive.api.agent_flow import FlowIngestStats, ingest


def batch(flows: object) -> bytes:
    return orjson.dumps({"Namespace": "Flow", "Type": "FlowUpdate", "Obj": flows})


def test_good_flows_are_stored_and_bad_ones_skipped() -> None:
    store, stats = FlowStore(), FlowIngestStats()
    reason = ingest(batch([{"UUID": "a"}, {"NoUUID": 1}, 7, {"UUID": "b"}]), store, stats)
    assert reason == "flow 1 of the batch has no UUID (skipped)"
    assert sorted(f.uuid for f in store.flows()) == ["a", "b"]
    assert stats.status() == {"Batches": 1, "Flows": 2, "Rejected": 2}


def test_frames_that_are_not_batches() -> None:
    store, stats = FlowStore(), FlowIngestStats()
    assert ingest(b"{not json", store, stats) is not None
    assert "Namespace" in (ingest(b'{"Namespace": "Graph"}', store, stats) or "")
    assert ingest(b'{"Namespace": "Flow", "Obj": {}}', store, stats) == (
        "Obj must be a list of flows"
    )
    assert len(store) == 0 and stats.rejected == 3


def test_a_later_version_of_a_flow_replaces_it() -> None:
    store, stats = FlowStore(), FlowIngestStats()
    ingest(batch([{"UUID": "a", "Metric": {"ABPackets": 1}}]), store, stats)
    ingest(batch([{"UUID": "a", "Metric": {"ABPackets": 5}}]), store, stats)
    flow = store.get("a")
    assert flow is not None and flow.get("Metric.ABPackets") == 5 and len(store) == 1


def test_udp_datagrams_fit_and_carry_every_flow() -> None:
    flows = [{"UUID": f"u{i}", "LayersPath": "Ethernet/IPv4/UDP" * 20} for i in range(2000)]
    grams = _datagrams(flows)
    assert len(grams) > 1 and all(len(g) <= UDP_MAX for g in grams)
    store, stats = FlowStore(), FlowIngestStats()
    for g in grams:
        assert ingest(g, store, stats) is None
    assert len(store) == 2000
