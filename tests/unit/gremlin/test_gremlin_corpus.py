"""The query corpus (tests/data/gremlin/*.yaml) against the small and the reference graphs."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from gremlin_graphs import DATA, REFERENCE, need_reference

from pyskydive.graph import Graph
from pyskydive.gremlin import QueryError, evaluate, parse


def _cases() -> list[Any]:
    out = []
    for path in sorted(DATA.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for case in doc["cases"]:
            case.setdefault("graph", doc["graph"])
            out.append(pytest.param(case, id=f"{path.stem}: {case['query']}"))
    return out


def _ids(result: Any) -> list[str]:
    assert isinstance(result, list), result
    return [item["ID"] for item in result]


def _reference(name: str) -> Any:
    need_reference()
    return json.loads((REFERENCE / name).read_text())


def _check(case: dict[str, Any], graph: Graph) -> None:
    query = case["query"]
    if "error" in case:
        with pytest.raises(QueryError) as info:
            evaluate(query, graph)
        assert case["error"] in str(info.value)
        assert "\n" not in str(info.value)
        return
    result = evaluate(query, graph)
    json.dumps(result)  # JSON-able, as the API will send it
    if "ids" in case:
        assert sorted(_ids(result)) == sorted(case["ids"])
    elif "ordered" in case:
        assert _ids(result) == case["ordered"]
    elif "count" in case:
        assert type(result) is int
        assert result == case["count"]
    elif "result" in case:
        assert result == case["result"]
    elif "paths" in case:
        paths = [_ids(p) for p in result]
        if case.get("any_order"):  # the start nodes came from an index (a set)
            paths.sort()
        assert paths == case["paths"]
    elif "subgraph" in case:
        assert isinstance(result, list) and len(result) == 1
        assert sorted(result[0]) == ["Edges", "Nodes"]
        assert sorted(_ids(result[0]["Nodes"])) == sorted(case["subgraph"]["nodes"])
        assert sorted(_ids(result[0]["Edges"])) == sorted(case["subgraph"]["edges"])
    elif "ref_ids" in case:
        assert sorted(_ids(result)) == sorted(_ids(_reference(case["ref_ids"])))
    elif "ref_paths" in case:
        want = [_ids(p) for p in _reference(case["ref_paths"])]
        assert [_ids(p) for p in result] == want
    else:
        pytest.fail(f"case without expectation: {case}")


@pytest.mark.parametrize("case", _cases())
def test_corpus(case: dict[str, Any], graphs: dict[str, Graph]) -> None:
    _check(case, graphs[case["graph"]])


@pytest.mark.parametrize("case", _cases())
def test_corpus_parses_once_evaluates_many(case: dict[str, Any], graphs: dict[str, Graph]) -> None:
    """A parsed Query is reusable and gives the same answer as the text."""
    if "error" in case:
        return
    graph = graphs[case["graph"]]
    query = parse(case["query"])
    assert json.dumps(evaluate(query, graph), sort_keys=True) == json.dumps(
        evaluate(query, graph), sort_keys=True
    )


def test_results_share_the_wire_format(graphs: dict[str, Graph]) -> None:
    graph = graphs["small"]
    [node] = evaluate("G.V('br1')", graph)
    assert node == graph.nodes["br1"].to_wire()
    [edge] = evaluate("G.E('e9')", graph)
    assert edge["Parent"] == "veth0" and edge["Child"] == "veth1"
    assert set(edge) >= {"ID", "Metadata", "Host", "Origin", "CreatedAt", "UpdatedAt", "Revision"}


def test_has_on_indexed_keys_does_not_scan(graphs: dict[str, Graph]) -> None:
    """Has('Name', x) must be answered from the index: the graph's node map is never walked."""

    class NoScan(dict[str, Any]):
        def values(self) -> Any:
            raise AssertionError("full scan")

        def __iter__(self) -> Any:
            raise AssertionError("full scan")

    graph = graphs["reference"]
    original = graph._nodes
    graph._nodes = NoScan(original)
    try:
        assert evaluate("G.V().Has('Name', 'sk-v2').Count()", graph) == 1
        assert evaluate("G.V().Has('Type', 'veth', 'State', 'UP').Count()", graph) == 3
        assert evaluate("G.V('Name', 'sk-v1').Count()", graph) == 2
        assert evaluate("G.V().Count()", graph) == 22
        with pytest.raises(AssertionError, match="full scan"):
            evaluate("G.V().Has('MTU', 1500).Count()", graph)
    finally:
        graph._nodes = original
