"""Flow steps in the past: G.At(...).Flows(), flow and interface Metrics() from real storage.

Flows and their metric history are in a real :class:`EmbeddedStore` (DuckDB in a temporary
directory); the topology history is a :class:`MemoryHistory` fed by a recorder on a live
graph, or the embedded store itself (``revisions``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyskydive.analyzer.flow_steps import (
    NO_FLOW_STORAGE,
    NO_TOPOLOGY_HISTORY,
    FlowList,
    aggregate,
    build_flow_registry,
)
from pyskydive.analyzer.flows import FlowStore
from pyskydive.errors import QueryError
from pyskydive.graph import Graph, HistoryRecorder, MemoryHistory
from pyskydive.gremlin import StepRegistry, evaluate, run
from pyskydive.storage.base import Revision
from pyskydive.storage.embedded import EmbeddedStore

T0 = 1_700_000_000_000  # ms
S = 1000


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> int:
        return self.t


def metric(start_s: int, last_s: int, ab_packets: int) -> dict[str, Any]:
    return {
        "ABPackets": ab_packets,
        "ABBytes": ab_packets * 100,
        "BAPackets": 1,
        "BABytes": 60,
        "Start": T0 + start_s * S,
        "Last": T0 + last_s * S,
        "RTT": 0,
    }


def flow(
    uuid: str,
    tid: str,
    start_s: int,
    last_s: int,
    *,
    update: dict[str, Any] | None = None,
    tracking: str | None = None,
    a: str = "10.0.0.1",
) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "UUID": uuid,
        "NodeTID": tid,
        "TrackingID": tracking or "t-" + uuid,
        "LayersPath": "Ethernet/IPv4/TCP",
        "Start": T0 + start_s * S,
        "Last": T0 + last_s * S,
        "Link": {"Protocol": "ETHERNET", "A": "02:00:00:00:00:01", "B": "02:00:00:00:00:02"},
        "Network": {"Protocol": "IPV4", "A": a, "B": "10.0.0.2", "ID": 0},
        "Transport": {"Protocol": "TCP", "A": 40000, "B": 80, "ID": 0},
        "Metric": metric(start_s, last_s, last_s - start_s),
    }
    if update is not None:
        wire["LastUpdateMetric"] = update
    return wire


class World:
    """A live graph whose history is recorded, stored flows, and a live flow store.

    Topology (recorded in a MemoryHistory and in the embedded store): host h1 owning eth0
    (TID tid-0, always there) and eth1 (TID tid-1, deleted at 200 s). eth0's LastUpdateMetric:
    [0, 10] s at 10 s, [10, 20] s at 20 s, [20, 30] s at 30 s; at 25 s another key of its
    metadata changes (a revision with the same metric).

    Stored flows (seconds after T0): f-old tid-0 [0, 5]; f-mid tid-0 [10, 40], updated at 20,
    30 and 40 s (LastUpdateMetric [10, 20] 10 packets, [20, 30] 20, [30, 40] 30); f-dup
    tid-1 [12, 38], same TrackingID as f-mid; f-eth1 tid-1 [15, 35], from 10.0.0.9; f-late
    tid-0 [100, 110]. The live flow store holds only f-live. Now is 300 s.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.history = MemoryHistory(clock=self.clock, max_age_ms=10**9)
        self.graph = Graph("h1", clock=self.clock)
        self.store = EmbeddedStore(tmp_path / "store")
        HistoryRecorder(self._record).attach(self.graph)
        self.live = FlowStore()
        g = self.graph
        g.add_node("h1", {"Name": "h1", "Type": "host"}, origin="o")
        eth0 = g.add_node("eth0", {"Name": "eth0", "Type": "veth", "TID": "tid-0"}, origin="o")
        eth1 = g.add_node("eth1", {"Name": "eth1", "Type": "veth", "TID": "tid-1"}, origin="o")
        g.add_edge("h1-eth0", "h1", "eth0", {"RelationType": "ownership"}, origin="o")
        g.add_edge("h1-eth1", "h1", "eth1", {"RelationType": "ownership"}, origin="o")
        for t, (start, packets) in zip((10, 20, 30), ((0, 1), (10, 2), (20, 3)), strict=True):
            self.at(t)
            g.update_node(eth0, {"LastUpdateMetric": metric(start, t, packets)})
            if t == 20:
                self.at(25)
                g.update_node(eth0, {"MTU": 9000})
        self.at(200)
        g.delete_node(eth1)
        self.at(300)

        write = self.store.write_flows
        write([flow("f-old", "tid-0", 0, 5)])
        for last, packets in ((20, 10), (30, 20), (40, 30)):
            write([flow("f-mid", "tid-0", 10, last, update=metric(last - 10, last, packets))])
        write([flow("f-dup", "tid-1", 12, 38, tracking="t-f-mid", update=metric(28, 38, 4))])
        write([flow("f-eth1", "tid-1", 15, 35, a="10.0.0.9", update=metric(25, 35, 5))])
        write([flow("f-late", "tid-0", 100, 110, update=metric(100, 110, 6))])
        assert self.store.flush()
        self.live.put(flow("f-live", "tid-0", 290, 299))

    def _record(self, revisions: list[Revision]) -> None:
        self.history.record(revisions)
        self.store.record(revisions)

    def at(self, seconds: int) -> None:
        self.clock.t = T0 + seconds * S

    def registry(self, **kw: Any) -> StepRegistry:
        kw.setdefault("backend", self.store)
        kw.setdefault("topology", self.history)
        return build_flow_registry(self.live, **kw)

    def query(self, text: str, registry: StepRegistry | None = None) -> Any:
        reg = registry if registry is not None else self.registry(flow_expire_ms=0)
        return evaluate(text, self.graph, registry=reg, now_ms=self.clock.t, history=self.history)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def at(seconds: int, duration: int | None = None) -> str:
    """``G.At(...)`` at ``seconds`` after T0 (Unix ms), with a duration in seconds."""
    t = T0 + seconds * S
    return f"G.At({t})" if duration is None else f"G.At({t}, {duration})"


def uuids(result: Any) -> list[str]:
    return sorted(f["UUID"] for f in result)


# -- Flows() in a window ---------------------------------------------------------------------


def test_flows_alive_in_the_window(world: World) -> None:
    assert uuids(world.query(f"{at(30, 10)}.Flows()")) == ["f-dup", "f-eth1", "f-mid"]
    assert uuids(world.query(f"{at(120, 110)}.Flows()")) == ["f-dup", "f-eth1", "f-late", "f-mid"]
    assert uuids(world.query(f"{at(5, 5)}.Flows()")) == ["f-old"]  # [0, 5]: ends at 5 s
    assert uuids(world.query(f"{at(60, 10)}.Flows()")) == []
    value = run(
        f"{at(30, 10)}.Flows()",
        world.graph,
        registry=world.registry(),
        history=world.history,
        now_ms=world.clock.t,
    )
    assert isinstance(value, FlowList)
    # the live store is never read in a window, and the past never live
    assert uuids(world.query("G.Flows()")) == ["f-live"]


def test_flows_at_an_instant_are_those_not_yet_expired(world: World) -> None:
    # Skydive: Start <= t and Last >= t - flow.expire
    assert uuids(world.query(f"{at(36)}.Flows()")) == ["f-dup", "f-mid"]
    default = world.registry()  # flow.expire 600 s, Skydive's default
    assert uuids(world.query(f"{at(36)}.Flows()", default)) == [
        "f-dup",
        "f-eth1",
        "f-mid",
        "f-old",
    ]
    assert uuids(world.query(f"{at(30, 10)}.Flows()", default)) == [
        "f-dup",
        "f-eth1",
        "f-mid",
        "f-old",
    ]
    margin = world.registry(flow_expire_ms=2 * S)
    assert uuids(world.query(f"{at(37)}.Flows()", margin)) == ["f-dup", "f-eth1", "f-mid"]


def test_flows_of_past_nodes_by_tid(world: World) -> None:
    assert world.query("G.V().Has('Name', 'eth1').Flows()") == []  # eth1 is gone now
    got = world.query(f"{at(30, 10)}.V().Has('Name', 'eth1').Flows()")
    assert uuids(got) == ["f-dup", "f-eth1"]
    assert uuids(world.query(f"{at(30, 10)}.V().Has('Name', 'eth0').Flows()")) == ["f-mid"]
    assert world.query(f"{at(30, 10)}.V().Has('Type', 'host').Flows()") == []  # no TID
    got = world.query(f"{at(30, 10)}.V().Flows('Network', '10.0.0.9')")
    assert uuids(got) == ["f-eth1"]


def test_generic_steps_on_past_flows(world: World) -> None:
    w = at(30, 10)
    assert world.query(f"{w}.Flows().Has('NodeTID', 'tid-1').Count()") == 2
    assert uuids(world.query(f"{w}.Flows().Has('Network', '10.0.0.9')")) == ["f-eth1"]
    assert world.query(f"{w}.Flows().Sort().Values('UUID')") == ["f-eth1", "f-dup", "f-mid"]
    assert world.query(f"{w}.Flows().Sort(DESC).Values('UUID')") == ["f-mid", "f-dup", "f-eth1"]
    assert world.query(f"{w}.Flows().Dedup().Count()") == 2  # f-mid and f-dup: one TrackingID
    assert world.query(f"{w}.Flows().Count()") == 3
    assert world.query(f"{w}.Flows().Has('UUID', 'f-mid').Sum('LastUpdateMetric.ABPackets')") == 30
    # the capture node is looked up in the past graph
    assert world.query(f"{w}.Flows().Has('UUID', 'f-eth1').CaptureNode().Values('Name')") == [
        "eth1"
    ]
    assert world.query("G.V().Has('Name', 'eth1').Count()") == 0


# -- Metrics() on flows ----------------------------------------------------------------------


def test_past_flow_metrics_are_the_stored_history(world: World) -> None:
    got = world.query(f"{at(40, 40)}.Flows().Has('UUID', 'f-mid').Metrics()")
    assert got == [{"f-mid": [metric(10, 20, 10), metric(20, 30, 20), metric(30, 40, 30)]}]
    # only the metrics lying within the window
    got = world.query(f"{at(40, 15)}.Flows().Has('UUID', 'f-mid').Metrics()")
    assert got == [{"f-mid": [metric(30, 40, 30)]}]
    # at an instant: the whole history up to it (Skydive leaves From at 0)
    got = world.query(f"{at(31)}.Flows().Has('UUID', 'f-mid').Metrics()")
    assert got == [{"f-mid": [metric(10, 20, 10), metric(20, 30, 20)]}]
    # f-old was stored without LastUpdateMetric (as /api/pcap flows are): its Metric is its
    # history, so it counts too
    assert world.query(f"{at(40, 40)}.Flows().Metrics().Count()") == 4
    assert world.query(f"{at(40, 40)}.Flows().Has('UUID', 'nope').Metrics()") == []
    # live: one metric per flow, from the live store
    assert world.query("G.Flows().Metrics()") == [
        {"f-live": [flow("f-live", "", 290, 299)["Metric"]]}
    ]


def test_past_flow_metrics_sum_and_aggregates(world: World) -> None:
    mid = f"{at(40, 40)}.Flows().Has('UUID', 'f-mid').Metrics()"
    assert world.query(f"{mid}.Sum('ABPackets')") == 60
    total = world.query(f"{mid}.Sum()")
    assert (total["ABPackets"], total["Start"], total["Last"]) == (60, T0 + 10 * S, T0 + 40 * S)
    # the slices cover the window [0, 40] s, not the metrics' own span [10, 40] s
    slices = world.query(f"{mid}.Aggregates(20)")[0]["Aggregated"]
    assert [(s["Start"] - T0, s["Last"] - T0, s["ABPackets"]) for s in slices] == [
        (0, 20 * S, 10),
        (20 * S, 40 * S, 50),
    ]
    # what lies outside the window is left out: [25, 40] s keeps half of [20, 30] s
    part = world.query(f"{at(40, 15)}.Flows().Has('UUID', 'f-mid').Metrics().Aggregates(15)")
    assert [(s["Start"] - T0, s["ABPackets"]) for s in part[0]["Aggregated"]] == [(25 * S, 30)]


def test_aggregate_within_bounds() -> None:
    m = {"ABPackets": 10, "ABBytes": 0, "BAPackets": 0, "BABytes": 0, "Start": 10, "Last": 30}
    got = aggregate([m], 10, bounds=(0, 25))
    assert [(s["Start"], s["Last"], s["ABPackets"]) for s in got] == [(10, 20, 5), (20, 25, 2)]
    assert aggregate([m], 10, bounds=(40, 60)) == []
    assert [s["ABPackets"] for s in aggregate([m], 10)] == [5, 5]


# -- Metrics() on nodes: interface metrics -----------------------------------------------------


def test_node_metrics_live(world: World) -> None:
    got = world.query("G.V().Metrics()")
    assert got == [{"eth0": [metric(20, 30, 3)]}]  # the host has none: left out
    assert world.query("G.V().Has('Name', 'h1').Metrics()") == []
    assert world.query("G.V().Metrics().Sum('ABPackets')") == 3
    assert world.query("G.V().Metrics().Count()") == 1
    assert world.query("G.V().Metrics('LastUpdateMetric').Count()") == 1
    assert world.query("G.V().Metrics('SFlow')") == []


def test_node_metrics_in_the_past(world: World) -> None:
    eth0 = f"{at(40, 40)}.V().Has('Name', 'eth0')"
    got = world.query(f"{eth0}.Metrics()")
    # four revisions carry a metric; the one made at 25 s carries the same as at 20 s
    assert got == [{"eth0": [metric(0, 10, 1), metric(10, 20, 2), metric(20, 30, 3)]}]
    assert world.query(f"{eth0}.Metrics().Sum('ABPackets')") == 6
    assert world.query(f"{eth0}.Metrics().Count()") == 1
    slices = world.query(f"{eth0}.Metrics().Aggregates(20)")[0]["Aggregated"]
    assert [(s["Start"] - T0, s["ABPackets"]) for s in slices] == [(0, 3), (20 * S, 3)]
    # within [15, 40] s only [20, 30] s lies
    got = world.query(f"{at(40, 25)}.V().Has('Name', 'eth0').Metrics()")
    assert got == [{"eth0": [metric(20, 30, 3)]}]
    # at an instant: the metric the node carried then
    assert world.query(f"{at(27)}.V().Metrics()") == [{"eth0": [metric(10, 20, 2)]}]
    assert world.query(f"{at(5)}.V().Metrics()") == []


def test_node_metrics_in_the_past_from_the_embedded_store(world: World) -> None:
    embedded = world.registry(topology=world.store)
    got = world.query(f"{at(40, 40)}.V().Metrics()", embedded)
    assert got == [{"eth0": [metric(0, 10, 1), metric(10, 20, 2), metric(20, 30, 3)]}]
    assert world.query(f"{at(27)}.V().Metrics()", embedded) == [{"eth0": [metric(10, 20, 2)]}]


# -- errors ----------------------------------------------------------------------------------


def test_without_flow_storage_the_past_is_refused(world: World) -> None:
    bare = build_flow_registry(world.live)
    with pytest.raises(QueryError) as info:
        world.query(f"{at(30, 10)}.Flows()", bare)
    assert str(info.value) == f"position 24: Flows: {NO_FLOW_STORAGE}"
    with pytest.raises(QueryError, match=re.escape(NO_FLOW_STORAGE)):
        world.query(f"{at(30, 10)}.V().Flows()", bare)
    with pytest.raises(QueryError, match=re.escape(NO_TOPOLOGY_HISTORY)):
        world.query(f"{at(30, 10)}.V().Metrics()", bare)
    assert uuids(world.query("G.Flows()", bare)) == ["f-live"]  # live still works
    assert world.query("G.V().Metrics().Count()", bare) == 1


def test_storage_errors_are_query_errors(world: World) -> None:
    world.store.close()
    with pytest.raises(QueryError, match=r"position \d+: Flows: flow storage: .*closed"):
        world.query(f"{at(30, 10)}.Flows()")


@pytest.mark.parametrize(
    "query",
    [
        "G.V().Metrics('Nope')",
        "G.V().Metrics('SFlow', 'Ovs')",
        "G.E().Metrics()",
        "G.Flows().Metrics('LastUpdateMetric')",
    ],
)
def test_bad_metrics_queries(world: World, query: str) -> None:
    with pytest.raises(QueryError, match="Metrics"):
        world.query(query)


# -- TopologyBackend.revisions ---------------------------------------------------------------


def _node(node_id: str, v: int) -> dict[str, Any]:
    return {"ID": node_id, "Host": "h1", "Metadata": {"v": v}, "CreatedAt": 0, "UpdatedAt": 0}


@pytest.mark.parametrize("backend", ["memory", "embedded"])
def test_revisions_overlapping_a_window(tmp_path: Path, backend: str) -> None:
    store = EmbeddedStore(tmp_path / "s") if backend == "embedded" else None
    history = MemoryHistory(clock=lambda: 0) if store is None else store
    try:
        # n1: v1 [100, 200), v2 [200, 300), v3 from 300 (current); n2: [150, 250); e1 from 0
        history.record(
            [
                Revision("node", "n1", _node("n1", 1), 100, 200),
                Revision("node", "n1", _node("n1", 2), 200, 300),
                Revision("node", "n1", _node("n1", 3), 300),
                Revision("node", "n2", _node("n2", 1), 150, 250),
                Revision("edge", "n1", _node("n1", 9), 0),  # same ID, another kind
            ]
        )
        if store is not None:
            assert store.flush()

        def versions(ids: list[str], start: int, end: int) -> dict[str, list[int]]:
            got = history.revisions("node", ids, start, end)
            return {i: [e["Metadata"]["v"] for e in elements] for i, elements in got.items()}

        assert versions(["n1", "n2", "none"], 0, 1000) == {"n1": [1, 2, 3], "n2": [1], "none": []}
        assert versions(["n1", "n2"], 200, 200) == {"n1": [2], "n2": [1]}  # [200, 300) holds it
        assert versions(["n1", "n2"], 250, 299) == {"n1": [2], "n2": []}  # n2 ended at 250
        assert versions(["n1"], 199, 200) == {"n1": [1, 2]}
        assert versions(["n1"], 5000, 6000) == {"n1": [3]}  # still current
        assert versions(["n1"], 0, 99) == {"n1": []}
        assert versions([], 0, 1000) == {}
        assert [e["Metadata"]["v"] for e in history.revisions("edge", ["n1"], 0, 10)["n1"]] == [9]
    finally:
        if store is not None:
            store.close()
