"""Gremlin flow steps over a flow store: Flows, node Flows, Has A-or-B, Count, Sort, IPV4RANGE."""

from __future__ import annotations

from typing import Any

import pytest

from pyskydive.analyzer.flow_steps import FlowList, build_flow_registry
from pyskydive.analyzer.flows import FlowStore
from pyskydive.errors import QueryError
from pyskydive.graph import Graph
from pyskydive.gremlin import StepRegistry, evaluate, run


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
