"""G.At()/G.Context(): queries over the graph as it was, from a real recorded history."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest

from pyskydive.graph import Graph, HistoryRecorder, MemoryHistory
from pyskydive.gremlin import (
    Arg,
    QueryError,
    QuerySyntaxError,
    StepContext,
    StepRegistry,
    TimeWindow,
    evaluate,
    parse,
    query_window,
)

T0 = 1_700_000_000_000  # a whole second, in ms


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> int:
        return self.t


class World:
    """A live graph whose history is recorded, and a clock to move it along."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.history = MemoryHistory(clock=self.clock)
        self.graph = Graph("h1", clock=self.clock)
        HistoryRecorder(self.history.record).attach(self.graph)
        self.graph.add_node("host", {"Name": "h1", "Type": "host"}, origin="o")

    def add(self, node_id: str, name: str) -> None:
        self.graph.add_node(node_id, {"Name": name, "Type": "veth"}, origin="o")
        self.graph.add_edge(
            f"host-{node_id}", "host", node_id, {"RelationType": "ownership"}, origin="o"
        )

    def delete(self, node_id: str) -> None:
        self.graph.delete_node(self.graph.nodes[node_id])

    def later(self, seconds: int) -> None:
        self.clock.t += seconds * 1000

    def query(self, text: str, **kw: Any) -> Any:
        return evaluate(text, self.graph, now_ms=self.clock.t, history=self.history, **kw)


@pytest.fixture
def world() -> World:
    """``X`` from T0 to T0+120 s; ``Y`` from T0+10 s to T0+20 s; now is T0+120 s."""
    w = World()
    w.add("x", "X")
    w.later(10)
    w.add("y", "Y")
    w.later(10)
    w.delete("y")
    w.later(100)
    w.delete("x")
    return w


def names(result: Any) -> list[str]:
    return sorted(n["Metadata"]["Name"] for n in result)


def test_at_sees_a_node_deleted_since(world: World) -> None:
    assert world.query("G.V().Has('Name', 'X')") == []
    found = world.query("G.At('-1m').V().Has('Name', 'X')")
    assert [n["ID"] for n in found] == ["x"]
    assert found[0]["DeletedAt"] == world.clock.t  # it is known to be gone now
    assert world.query("G.Context('-1m').V().Has('Name', 'X').Count()") == 1


def test_at_then_walks_the_past_graph(world: World) -> None:
    assert world.query("G.At('-1m').V().Has('Name', 'X').In().Values('Name')") == ["h1"]
    assert world.query("G.At('-1m').E().Count()") == 1
    assert world.query("G.At('-1m').V().Has('Type', 'host').Out().Values('Name')") == ["X"]
    sub = world.query("G.At('-1m').V().SubGraph()")
    assert len(sub) == 1 and [e["ID"] for e in sub[0]["Edges"]] == ["host-x"]
    whole = world.query("G.At('-1m')")
    assert names(whole[0]["Nodes"]) == ["X", "h1"]


def test_at_with_a_duration_sees_what_lived_inside_the_window_only(world: World) -> None:
    t = (T0 + 30_000) // 1000  # Unix seconds
    assert names(world.query(f"G.At({t}).V().Has('Type', 'veth')")) == ["X"]
    assert names(world.query(f"G.At({t}, 25).V().Has('Type', 'veth')")) == ["X", "Y"]
    assert names(world.query(f"G.At({t}, 5).V().Has('Type', 'veth')")) == ["X"]
    assert names(world.query(f"G.At({t * 1000}, '25s').V().Has('Type', 'veth')")) == ["X", "Y"]
    assert names(world.query("G.At('-1m', FOREVER).V().Has('Type', 'veth')")) == ["X", "Y"]


def test_now_is_the_live_graph(world: World) -> None:
    assert world.query("G.At(NOW).V().Count()") == 1
    assert world.query("G.At(NOW).V().Values('Name')") == ["h1"]


def test_rfc1123_dates(world: World) -> None:
    when = datetime.fromtimestamp((T0 + 15_000) / 1000, tz=UTC)
    date = format_datetime(when, usegmt=True)
    assert names(world.query(f"G.At('{date}').V().Has('Type', 'veth')")) == ["X", "Y"]
    before = format_datetime(datetime.fromtimestamp(T0 / 1000 - 1, tz=UTC), usegmt=True)
    assert world.query(f"G.At('{before}').V()") == []


@pytest.mark.parametrize(
    ("query", "position", "reason"),
    [
        ("G.At('-1x').V()", 8, "unknown unit 'x'"),
        ("G.At('-1m', 'abc').V()", 13, "bad duration"),
        ("G.At(1.5).V()", 5, "an integer or a string"),
        ("G.Context().V()", 2, "at least one parameter"),
    ],
)
def test_bad_forms_are_query_errors_with_position(
    world: World, query: str, position: int, reason: str
) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        world.query(query)
    assert info.value.position == position and reason in str(info.value)


def test_at_must_be_the_first_step(world: World) -> None:
    with pytest.raises(QueryError, match=r"position 6: At: must be the first step after G"):
        world.query("G.V().At('-1m')")
    with pytest.raises(QueryError, match="must be the first step"):
        world.query("G.At('-1m').At('-2m')")


def test_without_history_time_travel_is_refused(world: World) -> None:
    with pytest.raises(QueryError) as info:
        evaluate("G.At('-1m').V()", world.graph)
    assert "position 2: At: time travel needs topology history (storage)" in str(info.value)
    # a bad form is still reported as such
    with pytest.raises(QuerySyntaxError, match="unknown unit"):
        evaluate("G.At('-1x').V()", world.graph)


def test_query_window_tells_time_travel_queries_apart(world: World) -> None:
    q = parse("G.At('-1m', 90).V().Has('Type', 'veth')")
    now = world.clock.t
    assert query_window(q, now) == TimeWindow(now - 150_000, now - 60_000, point=False)
    assert query_window(parse("G.Context('-1m').V()"), now) == TimeWindow(
        now - 60_000, now - 60_000, point=True
    )
    assert query_window(parse("G.V()"), now) is None
    assert query_window(parse("G.V().At('-1m')"), now) is None  # refused when evaluated


def test_extension_steps_see_the_window(world: World) -> None:
    seen: list[TimeWindow | None] = []

    def probe(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
        seen.append(ctx.window)
        return value

    registry = StepRegistry()
    registry.register("Probe", probe)
    world.query("G.At('-1m').Probe()", registry=registry)
    world.query("G.Probe()", registry=registry)
    t = world.clock.t - 60_000
    assert seen == [TimeWindow(t, t, point=True), None]


def test_the_live_graph_is_left_alone(world: World) -> None:
    before = world.graph.to_wire()
    world.query("G.At('-1m', 3600).V()")
    assert world.graph.to_wire() == before
