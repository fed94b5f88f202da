"""Graphviz output of graph-shaped results."""

from __future__ import annotations

import pytest

from pyskydive.graph import Graph
from pyskydive.gremlin import QueryError, evaluate, to_dot


def test_subgraph_to_dot(graphs: dict[str, Graph]) -> None:
    result = evaluate("G.V().Has('Type', Within('bridge', 'veth')).SubGraph()", graphs["small"])
    dot = to_dot(result)
    assert dot.startswith("digraph g {\n") and dot.endswith("}\n")
    assert '  "br1" [label="br1"];' in dot
    assert '  "br1" -> "veth0" [label="layer2"];' in dot
    assert '  "veth0" -> "veth1" [label="layer2"];' in dot
    assert dot.count("->") == 2


def test_nodes_and_paths_to_dot(graphs: dict[str, Graph]) -> None:
    dot = to_dot(evaluate("G.V().Has('Type', 'veth')", graphs["small"]))
    assert '"veth0" [label="veth0"]' in dot and "->" not in dot
    paths = evaluate("G.V('veth1').ShortestPathTo(Metadata('Type', 'host'))", graphs["small"])
    assert to_dot(paths).count("[label=") == len(paths[0])
    assert to_dot({"Nodes": [], "Edges": []}) == "digraph g {\n}\n"


def test_quoting() -> None:
    node = {"ID": 'a"b', "Metadata": {"Name": "x\\y\nz"}}
    assert '"a\\"b" [label="x\\\\y\\nz"];' in to_dot([node])


def test_not_a_graph() -> None:
    with pytest.raises(QueryError, match="not a graph"):
        to_dot(3)
    with pytest.raises(QueryError, match="not a graph"):
        to_dot(["Name"])
