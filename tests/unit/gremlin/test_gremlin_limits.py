"""Bounded evaluation: a time limit checked inside the loops, big graphs, deep walks."""

from __future__ import annotations

import random

import pytest

from pyskydive.graph import Graph
from pyskydive.gremlin import QueryError, evaluate


@pytest.fixture(scope="module")
def big() -> Graph:
    rng = random.Random(7)
    graph = Graph("big", clock=lambda: 0)
    n = 20_000
    for i in range(n):
        graph.add_node(f"n{i}", {"Name": f"if{i}", "Type": "veth"}, origin="agent.big")
    for j in range(2 * n):
        a, b = rng.randrange(n), rng.randrange(n)
        graph.add_edge(f"e{j}", f"n{a}", f"n{b}", {"RelationType": "layer2"}, origin="agent.big")
    return graph


@pytest.mark.parametrize(
    "query",
    [
        "G.V().Both().Both().Both().Both().Count()",
        "G.V().ShortestPathTo(Metadata('Missing', 'nowhere'))",
        "G.V().Neighbors('RelationType', 'layer2', 50).Count()",
        "G.V().Has('Name', Regex('if.*')).Both().Both().Both().Dedup().Count()",
    ],
)
def test_time_limit(big: Graph, query: str) -> None:
    with pytest.raises(QueryError) as info:
        evaluate(query, big, timeout=0.05)
    assert str(info.value) == "query exceeded its time limit of 0.05s"


def test_zero_time_limit(big: Graph) -> None:
    with pytest.raises(QueryError, match="time limit of 0s"):
        evaluate("G.V().Count()", big, timeout=0)


def test_within_the_limit(big: Graph) -> None:
    assert evaluate("G.V().Count()", big) == 20_000
    assert evaluate("G.V().Has('Name', 'if5').Count()", big) == 1


def test_long_chain_does_not_recurse() -> None:
    """Walks are iterative: a 5,000-long ownership chain needs no deep recursion."""
    graph = Graph("chain", clock=lambda: 0)
    length = 5_000
    for i in range(length):
        graph.add_node(f"n{i}", {"Name": f"n{i}", "Type": "device"}, origin="agent.chain")
        if i:
            graph.add_edge(
                f"e{i}", f"n{i - 1}", f"n{i}", {"RelationType": "ownership"}, origin="agent.chain"
            )
    assert evaluate("G.V('n0').Descendants(0).Count()", graph) == length
    assert evaluate(f"G.V('n{length - 1}').Ascendants(0).Count()", graph) == length
    [path] = evaluate("G.V('n0').ShortestPathTo(Metadata('Name', 'n4999'))", graph)
    assert len(path) == length
    assert evaluate("G.V('n0')" + ".Out()" * 2000 + ".Values('Name')", graph) == ["n2000"]
