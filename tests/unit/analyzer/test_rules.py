"""Node and edge rules: applied, kept applied as the graph changes (debounced), undone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pyskydive.analyzer.rules import RuleEngine, _fallback_evaluate, query_node_ids, rule_node_id
from pyskydive.errors import QueryError
from pyskydive.graph import Graph

# The stub Gremlin: a query is a key of this table, its value the metadata to match.
QUERIES: dict[str, dict[str, Any]] = {
    "G.V().Has('Type', 'veth')": {"Type": "veth"},
    "G.V().Has('Name', 'br0')": {"Name": "br0"},
    "G.V().Has('Type', 'none')": {"Type": "none"},
}


def stub_evaluate(query: str, graph: Graph) -> list[Any]:
    if query not in QUERIES:
        raise QueryError(f"stub cannot parse {query!r}")
    return [n.to_wire() for n in graph.get_nodes(QUERIES[query])]


@pytest.fixture
def graph() -> Graph:
    g = Graph("a")
    g.add_node("br", {"Name": "br0", "Type": "bridge"}, origin="agent.a")
    g.add_node("v1", {"Name": "v1", "Type": "veth"}, origin="agent.a")
    g.add_node("v2", {"Name": "v2", "Type": "veth"}, origin="agent.a")
    return g


@pytest.fixture
def engine(graph: Graph) -> RuleEngine:
    return RuleEngine(graph, "analyzer.a", stub_evaluate)


def test_check_query_raises_query_error(engine: RuleEngine) -> None:
    engine.check_query("G.V().Has('Type', 'veth')")
    with pytest.raises(QueryError, match="cannot parse"):
        engine.check_query("G.V(")


def test_create_rule_adds_a_node_and_removal_deletes_it(engine: RuleEngine, graph: Graph) -> None:
    engine.add_node_rule(
        {"UUID": "r1", "Action": "create", "Metadata": {"Name": "ext", "Type": "device"}}
    )
    node = graph.get_node(rule_node_id("r1"))
    assert node is not None
    assert node.origin == "analyzer.a"
    assert node.metadata == {"Name": "ext", "Type": "device"}
    graph.delete_node(node)  # someone deletes it: the rule puts it back
    engine.refresh()
    assert graph.get_node(rule_node_id("r1")) is not None
    engine.remove_node_rule("r1")
    assert graph.get_node(rule_node_id("r1")) is None


def test_update_rule_merges_follows_the_graph_and_is_undone(
    engine: RuleEngine, graph: Graph
) -> None:
    rule = {"UUID": "u", "Action": "update", "Query": "G.V().Has('Type', 'veth')"}
    engine.add_node_rule({**rule, "Metadata": {"Color": "red"}})
    assert graph.nodes["v1"].metadata["Color"] == "red"
    assert graph.nodes["v2"].metadata["Color"] == "red"
    assert "Color" not in graph.nodes["br"].metadata
    # a new match gets it once the engine refreshes (no loop here: refresh by hand)
    graph.add_node("v3", {"Name": "v3", "Type": "veth"}, origin="agent.a")
    assert engine.dirty
    engine.refresh()
    assert graph.nodes["v3"].metadata["Color"] == "red"
    # an agent overwriting the metadata loses the key until the next refresh
    graph.replace_node_metadata(graph.nodes["v1"], {"Name": "v1", "Type": "veth"})
    engine.refresh()
    assert graph.nodes["v1"].metadata["Color"] == "red"
    # a node that stops matching loses the merged key
    graph.update_node(graph.nodes["v2"], {"Type": "device"})
    engine.refresh()
    assert "Color" not in graph.nodes["v2"].metadata
    engine.remove_node_rule("u")
    assert all("Color" not in n.metadata for n in graph.nodes.values())


def test_edge_rule_links_every_src_to_every_dst_and_is_undone(
    engine: RuleEngine, graph: Graph
) -> None:
    engine.add_edge_rule(
        {
            "UUID": "e",
            "Src": "G.V().Has('Name', 'br0')",
            "Dst": "G.V().Has('Type', 'veth')",
            "Metadata": {"RelationType": "layer2"},
        }
    )
    assert {(e.parent, e.child) for e in graph.edges.values()} == {("br", "v1"), ("br", "v2")}
    assert all(e.metadata == {"RelationType": "layer2"} for e in graph.edges.values())
    graph.delete_node(graph.nodes["v2"])
    graph.add_node("v2", {"Name": "v2", "Type": "veth"}, origin="agent.a")
    engine.refresh()
    assert len(graph.edges) == 2
    graph.update_node(graph.nodes["v1"], {"Type": "device"})
    engine.refresh()
    assert {(e.parent, e.child) for e in graph.edges.values()} == {("br", "v2")}
    engine.remove_edge_rule("e")
    assert not graph.edges


def test_refresh_is_debounced_on_the_loop(engine: RuleEngine, graph: Graph) -> None:
    calls: list[int] = []
    engine.add_node_rule(
        {
            "UUID": "u",
            "Action": "update",
            "Query": "G.V().Has('Type', 'veth')",
            "Metadata": {"X": 1},
        }
    )
    real_refresh = engine.refresh

    def counting_refresh() -> None:
        calls.append(1)
        real_refresh()

    engine.refresh = counting_refresh  # type: ignore[method-assign]
    engine.delay = 0.0

    async def burst() -> None:
        for i in range(50):
            graph.add_node(f"n{i}", {"Name": f"n{i}", "Type": "veth"}, origin="agent.a")
        await asyncio.sleep(0.05)

    asyncio.run(burst())
    assert calls == [1]
    assert all(graph.nodes[f"n{i}"].metadata["X"] == 1 for i in range(50))


def test_a_failing_query_at_refresh_time_is_logged_not_raised(
    engine: RuleEngine, graph: Graph, caplog: pytest.LogCaptureFixture
) -> None:
    engine.add_node_rule({"UUID": "u", "Action": "update", "Query": "bad", "Metadata": {"X": 1}})
    engine.refresh()
    assert "query 'bad' failed" in caplog.text


def test_query_node_ids_flattens_and_ignores_edges(graph: Graph) -> None:
    def evaluate(query: str, g: Graph) -> list[Any]:
        return [[g.nodes["v1"].to_wire(), {"ID": "x", "Parent": "a", "Child": "b"}], 3, "s"]

    assert query_node_ids(evaluate, "q", graph) == ["v1"]


def test_fallback_evaluator(graph: Graph) -> None:
    ids = {n["ID"] for n in _fallback_evaluate("G.V().Has('Type', 'veth')", graph)}
    assert ids == {"v1", "v2"}
    assert [n["ID"] for n in _fallback_evaluate("G.V('br')", graph)] == ["br"]
    assert len(_fallback_evaluate("G.V()", graph)) == 3
    with pytest.raises(QueryError):
        _fallback_evaluate("G.V().Out()", graph)
