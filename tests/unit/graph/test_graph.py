"""The graph engine: wire format, events in order, indexes, origins."""

from __future__ import annotations

from typing import Any

import pytest

from pyskydive.graph import DEL_OP, SET_OP, Edge, Graph, Node, Op


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def on_node_added(self, node: Node) -> None:
        self.events.append(("NodeAdded", node.id, None))

    def on_node_updated(self, node: Node, ops: list[Op]) -> None:
        self.events.append(("NodeUpdated", node.id, ops))

    def on_node_deleted(self, node: Node) -> None:
        self.events.append(("NodeDeleted", node.id, None))

    def on_edge_added(self, edge: Edge) -> None:
        self.events.append(("EdgeAdded", edge.id, None))

    def on_edge_updated(self, edge: Edge, ops: list[Op]) -> None:
        self.events.append(("EdgeUpdated", edge.id, ops))

    def on_edge_deleted(self, edge: Edge) -> None:
        self.events.append(("EdgeDeleted", edge.id, None))


class Clock:
    def __init__(self) -> None:
        self.t = 1_000

    def __call__(self) -> int:
        self.t += 1
        return self.t


@pytest.fixture
def graph() -> Graph:
    return Graph(host="h1", clock=Clock())


def test_node_wire_format(graph: Graph) -> None:
    node = graph.add_node("n1", {"Name": "eth0", "Type": "device"}, origin="agent.h1")
    wire = node.to_wire()
    assert wire == {
        "ID": "n1",
        "Metadata": {"Name": "eth0", "Type": "device"},
        "Host": "h1",
        "Origin": "agent.h1",
        "CreatedAt": 1001,
        "UpdatedAt": 1001,
        "Revision": 1,
    }


def test_edge_wire_format(graph: Graph) -> None:
    graph.add_node("a", {"Name": "a", "Type": "host"}, origin="o")
    graph.add_node("b", {"Name": "b", "Type": "device"}, origin="o")
    edge = graph.add_edge("e", "a", "b", {"RelationType": "ownership"}, origin="o")
    wire = edge.to_wire()
    assert wire["Parent"] == "a" and wire["Child"] == "b"
    assert wire["Metadata"] == {"RelationType": "ownership"}
    assert "DeletedAt" not in wire
    graph.delete_edge(edge)
    assert edge.to_wire()["DeletedAt"] >= wire["CreatedAt"]


def test_update_bumps_revision_and_reports_ops(graph: Graph) -> None:
    rec = Recorder()
    graph.add_listener(rec)
    node = graph.add_node("n", {"Name": "x", "Type": "veth", "MTU": 1500}, origin="o")
    ops = graph.update_node(node, {"MTU": 9000, "MAC": "aa"}, ["Name", "Missing"])
    assert ops == [(SET_OP, "MTU", 9000), (SET_OP, "MAC", "aa"), (DEL_OP, "Name", None)]
    assert node.revision == 2
    assert node.updated_at > node.created_at
    assert node.metadata == {"Type": "veth", "MTU": 9000, "MAC": "aa"}
    # An update that changes nothing is not an event and does not bump the revision.
    assert graph.update_node(node, {"MTU": 9000}) == []
    assert node.revision == 2
    assert [e[0] for e in rec.events] == ["NodeAdded", "NodeUpdated"]


def test_delete_node_deletes_its_edges_first(graph: Graph) -> None:
    rec = Recorder()
    graph.add_node("a", {"Name": "a", "Type": "host"}, origin="o")
    graph.add_node("b", {"Name": "b", "Type": "device"}, origin="o")
    graph.add_node("c", {"Name": "c", "Type": "device"}, origin="o")
    graph.add_edge("e1", "a", "b", {"RelationType": "ownership"}, origin="o")
    graph.add_edge("e2", "b", "c", {"RelationType": "layer2"}, origin="o")
    graph.add_listener(rec)
    graph.delete_node(graph.nodes["b"])
    assert [e[0] for e in rec.events] == ["EdgeDeleted", "EdgeDeleted", "NodeDeleted"]
    assert set(graph.nodes) == {"a", "c"}
    assert graph.edges == {}
    assert graph.out_edges("a") == [] and graph.in_edges("c") == []


def test_indexed_lookup_and_list_values(graph: Graph) -> None:
    graph.add_node("1", {"Name": "eth0", "Type": "device", "IfIndex": 2}, origin="o")
    graph.add_node("2", {"Name": "eth1", "Type": "device", "IfIndex": 3}, origin="o")
    graph.add_node("3", {"Name": "br0", "Type": "bridge", "IPV4": ["10.0.0.1/24"]}, origin="o")
    assert [n.id for n in graph.get_nodes({"Type": "device", "IfIndex": 3})] == ["2"]
    assert [n.id for n in graph.get_nodes({"IPV4": "10.0.0.1/24"})] == ["3"]
    assert graph.get_nodes({"Type": "netns"}) == []
    # The index follows updates.
    graph.update_node(graph.nodes["1"], {"Name": "wan0"})
    assert graph.get_nodes({"Name": "eth0"}) == []
    assert [n.id for n in graph.get_nodes({"Name": "wan0"})] == ["1"]
    # Non-indexed and dotted keys are matched too.
    graph.update_node(graph.nodes["2"], {"Metric": {"RxBytes": 5}})
    assert [n.id for n in graph.get_nodes({"Metric.RxBytes": 5})] == ["2"]


def test_origins_and_delete_origin(graph: Graph) -> None:
    rec = Recorder()
    graph.add_node("h", {"Name": "h", "Type": "host"}, origin="agent.h")
    graph.add_node("i", {"Name": "i", "Type": "device"}, origin="agent.h")
    graph.add_node("x", {"Name": "x", "Type": "host"}, origin="agent.x")
    graph.add_edge("e", "h", "i", {"RelationType": "ownership"}, origin="agent.h")
    graph.add_listener(rec)
    assert graph.origin_ids("agent.h") == {"h", "i", "e"}
    assert graph.delete_origin("agent.h") == 3
    assert set(graph.nodes) == {"x"}
    assert rec.events[0][0] == "EdgeDeleted"
    assert graph.origins() == ["agent.x"]


def test_duplicate_and_dangling_are_refused(graph: Graph) -> None:
    graph.add_node("a", {"Name": "a", "Type": "host"}, origin="o")
    with pytest.raises(KeyError):
        graph.add_node("a", {"Name": "a", "Type": "host"}, origin="o")
    with pytest.raises(KeyError):
        graph.add_edge("e", "a", "nope", {"RelationType": "layer2"}, origin="o")
    assert graph.edges == {}


def test_descendants_follow_only_matching_edges(graph: Graph) -> None:
    for n in "abcd":
        graph.add_node(n, {"Name": n, "Type": "x"}, origin="o")
    graph.add_edge("1", "a", "b", {"RelationType": "ownership"}, origin="o")
    graph.add_edge("2", "b", "c", {"RelationType": "ownership"}, origin="o")
    graph.add_edge("3", "b", "d", {"RelationType": "layer2"}, origin="o")
    got = graph.descendants("a", {"RelationType": "ownership"})
    assert sorted(n.id for n in got) == ["b", "c"]
