"""Gremlin flow steps: Flows, Has A-or-B, Dedup, Sort, Sum, flows to nodes, Metrics, Aggregates."""

from __future__ import annotations

from typing import Any

import pcap_sample
import pytest

from pyskydive.analyzer.flow_steps import FlowList, aggregate, build_flow_registry
from pyskydive.analyzer.flows import FlowStore
from pyskydive.errors import QueryError
from pyskydive.flow import FlowTable
from pyskydive.graph import Graph
from pyskydive.gremlin import StepRegistry, evaluate, run
from pyskydive.protocols.packet import decode


def flow(uuid: str, tid: str, a: str, b: str, packets: int, proto: str = "TCP") -> dict[str, Any]:
    return {
        "UUID": uuid,
        "NodeTID": tid,
        "TrackingID": "t" + uuid,
        "LayersPath": f"Ethernet/IPv4/{proto}",
        "Network": {"Protocol": "IPV4", "A": a, "B": b, "ID": 0},
        "Transport": {"Protocol": proto, "A": 40000, "B": 80, "ID": 0},
        "Metric": {"ABPackets": packets, "BAPackets": 1},
    }


@pytest.fixture
def store() -> FlowStore:
    s = FlowStore()
    s.put(flow("f1", "tid-eth0", "10.0.0.1", "10.0.0.2", 3))
    s.put(flow("f2", "tid-eth1", "10.0.0.2", "10.0.1.5", 7, proto="UDP"))
    s.put(flow("f3", "", "192.168.0.1", "192.168.0.2", 5))
    return s


@pytest.fixture
def graph() -> Graph:
    g = Graph(host="h1")
    g.add_node("n0", {"Name": "eth0", "Type": "veth", "TID": "tid-eth0"}, origin="test", host="h1")
    g.add_node("n1", {"Name": "eth1", "Type": "veth", "TID": "tid-eth1"}, origin="test", host="h1")
    g.add_node("n2", {"Name": "lo", "Type": "device"}, origin="test", host="h1")
    return g


@pytest.fixture
def registry(store: FlowStore) -> StepRegistry:
    return build_flow_registry(store)


def q(query: str, graph: Graph, registry: StepRegistry) -> Any:
    return evaluate(query, graph, registry=registry)


def uuids(result: Any) -> list[str]:
    return sorted(f["UUID"] for f in result)


def test_all_flows(graph: Graph, registry: StepRegistry) -> None:
    assert q("G.Flows().Count()", graph, registry) == 3
    assert isinstance(run("G.Flows()", graph, registry=registry), FlowList)
    assert uuids(q("G.Flows()", graph, registry)) == ["f1", "f2", "f3"]


def test_flows_of_nodes(graph: Graph, registry: StepRegistry) -> None:
    assert uuids(q("G.V().Has('Name', 'eth0').Flows()", graph, registry)) == ["f1"]
    assert uuids(q("G.V().Flows()", graph, registry)) == ["f1", "f2"]
    assert q("G.V().Has('Name', 'lo').Flows().Count()", graph, registry) == 0


def test_has_network_matches_a_or_b(graph: Graph, registry: StepRegistry) -> None:
    assert uuids(q("G.Flows().Has('Network', '10.0.0.2')", graph, registry)) == ["f1", "f2"]
    assert uuids(q("G.Flows().Has('Network', '10.0.1.5')", graph, registry)) == ["f2"]
    assert uuids(q("G.Flows().Has('Network.A', '10.0.0.2')", graph, registry)) == ["f2"]
    assert uuids(q("G.Flows().Has('Transport', 80)", graph, registry)) == ["f1", "f2", "f3"]
    got = q("G.Flows().Has('Network', IPV4RANGE('192.168.0.0/24'))", graph, registry)
    assert uuids(got) == ["f3"]


def test_generic_steps_on_flows(graph: Graph, registry: StepRegistry) -> None:
    assert q("G.Flows().Has('Transport.Protocol', 'UDP').Count()", graph, registry) == 1
    got = q("G.Flows().Sort(DESC, 'Metric.ABPackets').Values('UUID')", graph, registry)
    assert got == ["f2", "f3", "f1"]
    assert q("G.Flows().Sort('Metric.ABPackets').Limit(1).Values('UUID')", graph, registry) == [
        "f1"
    ]
    assert q("G.Flows().Dedup('NodeTID').Count()", graph, registry) == 3
    assert q("G.Flows('Network', '10.0.0.2').Count()", graph, registry) == 2


def test_without_registry_flows_is_unknown(graph: Graph) -> None:
    with pytest.raises(QueryError):
        evaluate("G.Flows()", graph)


# -- real flows: built by a FlowTable from decoded frames, as an agent would --------------------

MS = 1_000_000


def _capture(node_tid: str, t0: int) -> list[dict[str, Any]]:
    """The flows of pcap_sample's frames captured at ``node_tid``, every packet ``t0`` + k s."""
    table = FlowTable(node_tid, "cap-" + node_tid)
    records = pcap_sample.sample_records()
    for i, (ts, frame) in enumerate(records):
        now = t0 + i * 1000 + (ts - records[0][0]) // MS
        table.feed(decode(frame), now, len(frame))
    table.tick(t0)
    result = table.tick(t0 + 10**9)  # everything expires
    return [f.to_wire() for f in result.expired]


T0 = pcap_sample.T0_MS


@pytest.fixture
def real_store() -> FlowStore:
    s = FlowStore()
    s.put_many(_capture("tid-a", T0))  # 3 flows: ICMP, TCP, DNS over UDP
    s.put_many(_capture("tid-b", T0))  # the same flows, seen at a second capture point
    return s


@pytest.fixture
def real_graph() -> Graph:
    g = Graph(host="h1")
    add = g.add_node
    add("eth-a", {"Name": "eth0", "Type": "veth", "TID": "tid-a"}, origin="t", host="h1")
    add("eth-b", {"Name": "eth1", "Type": "veth", "TID": "tid-b"}, origin="t", host="h1")
    add("if-a", {"Name": "a", "Type": "device", "MAC": pcap_sample.MAC_A}, origin="t", host="h1")
    add(
        "peer-b",
        {"Name": "b", "Type": "device", "PeerIntfMAC": pcap_sample.MAC_B},
        origin="t",
        host="h1",
    )
    return g


@pytest.fixture
def real_reg(real_store: FlowStore) -> StepRegistry:
    return build_flow_registry(real_store)


def names(result: Any) -> list[str]:
    return [n["Metadata"]["Name"] for n in result]


def test_real_flows_fields(real_graph: Graph, real_reg: StepRegistry) -> None:
    def qq(query: str) -> Any:
        return evaluate(query, real_graph, registry=real_reg)

    assert qq("G.Flows().Count()") == 6
    assert qq("G.Flows().Has('LayersPath', 'Ethernet/IPv4/ICMPv4').Count()") == 2
    assert qq("G.Flows().Has('Network', '10.0.0.3').Count()") == 2  # DNS: B only
    assert qq("G.Flows().Has('Network.B', '10.0.0.3', 'Transport.B', 53).Count()") == 2
    assert qq("G.Flows().Has('Transport', 40000).Count()") == 2
    assert qq("G.Flows().Has('Link', '02:00:00:00:00:0b').Count()") == 6
    assert qq("G.Flows().Has('ICMP.ID', 7).Count()") == 2
    assert qq("G.Flows().Has('Metric.ABPackets', GT(2)).Values('Transport.B')") == [80, 80]
    assert qq("G.Flows().HasEither('ICMP.ID', 7, 'Transport.B', 53).Count()") == 4
    assert qq("G.Flows().HasNot('ICMP').Count()") == 4
    assert qq("G.Flows().Has('Network', IPV4RANGE('192.168.0.0/16')).Count()") == 0
    assert qq("G.Flows().Has('Network', IPV4RANGE('10.0.0.3/32')).Count()") == 2
    assert qq("G.Flows().Has('Network', IPV4RANGE('10.0.0.0/30')).Count()") == 6
    assert qq("G.Flows().Has('Network', IPV4RANGE('10.0.0.2/32')).Count()") == 4
    assert sorted(qq("G.Flows().Dedup().Values('Network.A')")) == ["10.0.0.1"] * 3
    assert qq("G.Flows().Values('Network.A')") == ["10.0.0.1"] * 6
    mac_a = bytes.fromhex(pcap_sample.MAC_A.replace(":", ""))
    ab_bytes = sum(len(f) for _, f in pcap_sample.sample_records() if f[6:12] == mac_a)
    assert qq("G.Flows().Sum('Metric.ABBytes')") == 2 * ab_bytes  # two capture points
    got = qq("G.Flows().Sort(DESC, 'Metric.ABPackets').Limit(2).Values('Metric.ABPackets')")
    assert got == [4, 4]
    assert qq("G.Flows().Range(1, 3).Count()") == 2


def test_dedup_by_tracking_id(real_graph: Graph, real_reg: StepRegistry) -> None:
    every = evaluate("G.Flows()", real_graph, registry=real_reg)
    assert len({f["TrackingID"] for f in every}) == 3  # same flow at two capture points
    assert evaluate("G.Flows().Dedup().Count()", real_graph, registry=real_reg) == 3
    got = evaluate("G.Flows().Dedup('TrackingID').Count()", real_graph, registry=real_reg)
    assert got == 3
    got = evaluate("G.Flows().Dedup('NodeTID').Count()", real_graph, registry=real_reg)
    assert got == 2


def test_sort_defaults_to_last(real_graph: Graph, real_reg: StepRegistry) -> None:
    lasts = evaluate("G.Flows().Sort().Values('Last')", real_graph, registry=real_reg)
    assert lasts == sorted(lasts)
    lasts = evaluate("G.Flows().Sort(DESC).Values('Last')", real_graph, registry=real_reg)
    assert lasts == sorted(lasts, reverse=True)


def test_flows_to_nodes(real_graph: Graph, real_reg: StepRegistry) -> None:
    def qq(query: str) -> Any:
        return evaluate(query, real_graph, registry=real_reg)

    icmp = "G.Flows().Has('ICMP.ID', 7)"
    assert names(qq(icmp + ".CaptureNode()")) == ["eth0", "eth1"]
    assert names(qq(icmp + ".Node()")) == ["eth0", "eth1"]
    assert names(qq(icmp + ".Hops()")) == ["eth0", "eth1"]
    assert names(qq(icmp + ".Hops('Name', 'eth1')")) == ["eth1"]
    # Nodes: capture node, then MAC == Link.A (if-a); nobody has MAC == Link.B
    assert names(qq(icmp + ".Nodes()")) == ["eth0", "a", "eth1", "a"]
    assert names(qq(icmp + ".In()")) == ["a", "a"]
    assert names(qq(icmp + ".Out()")) == ["b", "b"]  # PeerIntfMAC == Link.B
    assert names(qq(icmp + ".Both()")) == ["a", "b", "a", "b"]
    assert names(qq(icmp + ".Both('Name', 'b')")) == ["b", "b"]
    assert names(qq(icmp + ".Dedup().Both().Dedup()")) == ["a", "b"]
    # node steps keep working on nodes
    assert qq("G.V().Has('Name', 'eth0').Out().Count()") == 0
    flows_of_capture_node = "G.Flows().Has('Network', '10.0.0.3').CaptureNode().Flows()"
    assert qq(flows_of_capture_node + ".Count()") == 6
    assert (
        names(qq("G.Flows().Has('Network', IPV4RANGE('10.0.0.0/24')).Dedup().CaptureNode()"))
        == ["eth0"] * 3
    )  # one per flow, as in Skydive: no dedup


def test_metrics_and_aggregates(real_graph: Graph, real_reg: StepRegistry) -> None:
    def qq(query: str) -> Any:
        return evaluate(query, real_graph, registry=real_reg)

    flows = qq("G.Flows().Has('NodeTID', 'tid-a')")
    metrics = qq("G.Flows().Has('NodeTID', 'tid-a').Metrics()")
    assert len(metrics) == 1 and set(metrics[0]) == {f["UUID"] for f in flows}
    for f in flows:
        assert metrics[0][f["UUID"]] == [f.get("LastUpdateMetric", f["Metric"])]
    assert qq("G.Flows().Has('NodeTID', 'nowhere').Metrics()") == []
    assert qq("G.Flows().Has('NodeTID', 'tid-a').Metrics().Count()") == 3
    total_ab = sum(f["LastUpdateMetric"]["ABPackets"] for f in flows)
    assert qq("G.Flows().Has('NodeTID', 'tid-a').Metrics().Sum('ABPackets')") == total_ab
    total = qq("G.Flows().Has('NodeTID', 'tid-a').Metrics().Sum()")
    assert total["ABPackets"] == total_ab
    assert total["Start"] == min(f["LastUpdateMetric"]["Start"] for f in flows)
    agg = qq("G.Flows().Has('NodeTID', 'tid-a').Metrics().Aggregates(1)")
    assert list(agg[0]) == ["Aggregated"]
    slices = agg[0]["Aggregated"]
    assert sum(s["ABPackets"] for s in slices) == total_ab
    assert sum(s["BABytes"] for s in slices) == total["BABytes"]
    assert all(s["Last"] - s["Start"] <= 1000 for s in slices)
    one = qq("G.Flows().Has('NodeTID', 'tid-a').Metrics().Aggregates()")[0]["Aggregated"]
    assert len(one) == 1 and one[0]["ABPackets"] == total_ab


def test_aggregate_splits_pro_rata() -> None:
    m = {"ABPackets": 10, "ABBytes": 1000, "BAPackets": 0, "BABytes": 0, "Start": 0, "Last": 100}
    got = aggregate([m], 50)
    assert [(s["ABPackets"], s["Start"], s["Last"]) for s in got] == [(5, 0, 50), (5, 50, 100)]
    point = {"ABPackets": 1, "ABBytes": 60, "BAPackets": 0, "BABytes": 0, "Start": 70, "Last": 70}
    got = aggregate([m, point], 50)
    assert [s["ABPackets"] for s in got] == [5, 6]
    with pytest.raises(ValueError, match="slices exceeded"):
        aggregate([m], 0.001)  # type: ignore[arg-type]
    assert aggregate([], 50) == []


@pytest.mark.parametrize(
    "query",
    [
        "G.Flows().Sum('UUID')",
        "G.Flows().Metrics('x')",
        "G.Flows().Metrics().Aggregates(0)",
        "G.Flows().Metrics().Aggregates('x')",
        "G.Flows().Metrics().Sum('Nope')",
        "G.V().Aggregates()",
    ],
)
def test_bad_flow_queries(real_graph: Graph, real_reg: StepRegistry, query: str) -> None:
    with pytest.raises(QueryError):
        evaluate(query, real_graph, registry=real_reg)
