"""The extension hook the flow module will use: registered steps over objects of their own."""

from __future__ import annotations

from typing import Any

import pytest

from pyskydive.graph import Graph
from pyskydive.gremlin import (
    Arg,
    ItemList,
    NodeList,
    QueryError,
    StepContext,
    StepRegistry,
    as_nodes,
    evaluate,
)


class Flow:
    """A stand-in for the flow module's objects: get(key) and to_wire()."""

    def __init__(self, uuid: str, node_tid: str, a: str, b: str, packets: int) -> None:
        self.data: dict[str, Any] = {
            "UUID": uuid,
            "NodeTID": node_tid,
            "Network": {"A": a, "B": b},
            "Metric": {"ABPackets": packets},
        }

    def get(self, key: str) -> Any:
        if key == "Network":  # Skydive: Has('Network', x) matches either end
            return [self.data["Network"]["A"], self.data["Network"]["B"]]
        value: Any = self.data
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value

    def to_wire(self) -> dict[str, Any]:
        return self.data


class FlowList(ItemList):
    kind = "flows"
    __slots__ = ()


FLOWS = {
    "tid-a": [Flow("f1", "tid-a", "10.0.0.1", "10.0.0.2", 5)],
    "tid-b": [
        Flow("f2", "tid-b", "10.0.0.3", "169.254.40.7", 9),
        Flow("f3", "tid-b", "10.0.0.2", "10.0.0.9", 1),
    ],
}


def flows_step(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    ctx.check()
    assert ctx.now_ms == 42
    return FlowList([f for n in as_nodes(value, ctx) for f in FLOWS.get(n.get("TID"), [])])


def capture_node_step(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if not isinstance(value, FlowList):
        raise ctx.error("needs flows")
    by_tid = {n.get("TID"): n for n in ctx.graph.nodes.values()}
    return NodeList([by_tid[f.get("NodeTID")] for f in value.items])


def flow_out(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if not isinstance(value, FlowList):
        return NotImplemented
    return NodeList([])


@pytest.fixture
def graph() -> Graph:
    g = Graph("h", clock=lambda: 0)
    g.add_node("a", {"Name": "a", "Type": "veth", "TID": "tid-a"}, origin="agent.h")
    g.add_node("b", {"Name": "b", "Type": "veth", "TID": "tid-b"}, origin="agent.h")
    g.add_edge("ab", "a", "b", {"RelationType": "layer2"}, origin="agent.h")
    return g


@pytest.fixture
def registry() -> StepRegistry:
    r = StepRegistry()
    r.register("Flows", flows_step)
    r.register("CaptureNode", capture_node_step)
    r.register("Out", flow_out)
    return r


def run(query: str, graph: Graph, registry: StepRegistry) -> Any:
    return evaluate(query, graph, registry=registry, now_ms=42)


def uuids(result: Any) -> list[str]:
    return [f["UUID"] for f in result]


def test_extension_step_and_generic_steps(graph: Graph, registry: StepRegistry) -> None:
    assert uuids(run("G.V().Flows()", graph, registry)) == ["f1", "f2", "f3"]
    assert run("G.V().Flows().Count()", graph, registry) == 3
    assert uuids(run("G.V().flows().Has('Network', '10.0.0.2')", graph, registry)) == ["f1", "f3"]
    q = "G.V().Flows().Has('Network', IPV4RANGE('169.254.40.0/24'))"
    assert uuids(run(q, graph, registry)) == ["f2"]
    q = "G.V().Flows().Sort(DESC, 'Metric.ABPackets').Values('UUID')"
    assert run(q, graph, registry) == ["f2", "f1", "f3"]
    assert run("G.V().Flows().Sum('Metric.ABPackets')", graph, registry) == 15
    assert run("G.V().Flows().Dedup('NodeTID').Values('UUID')", graph, registry) == ["f1", "f2"]
    assert uuids(run("G.V().Flows().Limit(1)", graph, registry)) == ["f1"]
    assert run("G.V().Flows().ValueMap('UUID')", graph, registry)[0] == {"UUID": "f1"}


def test_extension_returns_to_nodes(graph: Graph, registry: StepRegistry) -> None:
    q = "G.V().Flows().Has('Network', '10.0.0.9').CaptureNode().Values('Name')"
    assert run(q, graph, registry) == ["b"]
    q = "G.V().Flows().Has('Network', '169.254.40.7').Dedup().CaptureNode()"
    assert [n["ID"] for n in run(q, graph, registry)] == ["b"]


def test_not_implemented_falls_back_to_builtin(graph: Graph, registry: StepRegistry) -> None:
    assert [n["ID"] for n in run("G.V('a').Out()", graph, registry)] == ["b"]
    assert run("G.V().Flows().Out()", graph, registry) == []


def test_unknown_and_misused_steps(graph: Graph, registry: StepRegistry) -> None:
    with pytest.raises(QueryError, match="position 6: Flows: unknown step"):
        evaluate("G.V().Flows()", graph)
    with pytest.raises(QueryError, match="needs flows"):
        run("G.V().CaptureNode()", graph, registry)
    with pytest.raises(QueryError, match="OutV: needs edges, got flows"):
        run("G.V().Flows().OutV()", graph, registry)


def test_registry() -> None:
    r = StepRegistry()
    r.register("Flows", flows_step)
    assert r.get("FLOWS") is flows_step and r.get("flows") is flows_step
    assert r.names() == ["FLOWS"]
    with pytest.raises(ValueError, match="already registered"):
        r.register("flows", flows_step)
