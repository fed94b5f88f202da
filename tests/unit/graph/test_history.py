"""Topology history: a recorder on a real graph, the in-memory store, graphs rebuilt from it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pyskydive.errors import MessageError
from pyskydive.graph import Graph, HistoryRecorder, MemoryHistory, graph_from_wire
from pyskydive.storage.base import Revision, TopologyBackend


class Clock:
    """A settable clock in Unix ms."""

    def __init__(self, t: int = 1_000_000) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def names(elements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["Metadata"]["Name"]: e for e in elements}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def history(clock: Clock) -> MemoryHistory:
    return MemoryHistory(max_age_ms=3_600_000, max_revisions=10_000, clock=clock)


@pytest.fixture
def graph(clock: Clock, history: MemoryHistory) -> Graph:
    g = Graph("host1", clock=clock)
    HistoryRecorder(history.record).attach(g)
    return g


def test_memory_history_is_a_topology_backend(history: MemoryHistory) -> None:
    backend: TopologyBackend = history  # checked by mypy
    assert backend.live() == ([], [])


def test_recorder_turns_changes_into_revisions(clock: Clock) -> None:
    got: list[list[Revision]] = []
    g = Graph("h", clock=clock)
    HistoryRecorder(got.append).attach(g)
    n = g.add_node("n1", {"Name": "eth0", "Type": "device", "MTU": 1500}, origin="o")
    clock.t += 10
    g.update_node(n, {"MTU": 9000})
    clock.t += 10
    g.delete_node(n)
    assert [[(r.id, r.valid_from, r.valid_to) for r in batch] for batch in got] == [
        [("n1", 1_000_000, None)],
        [("n1", 1_000_000, 1_000_010), ("n1", 1_000_010, None)],
        [("n1", 1_000_010, 1_000_020)],
    ]
    # each revision is a copy as it was, not the (mutated) live metadata
    assert got[0][0].element["Metadata"]["MTU"] == 1500
    assert got[1][1].element["Metadata"]["MTU"] == 9000
    assert got[1][1].element["Revision"] == 2
    assert got[2][0].element["DeletedAt"] == 1_000_020
    assert "DeletedAt" not in got[1][1].element


def test_deleting_a_node_closes_its_edges_first(clock: Clock) -> None:
    got: list[Revision] = []
    g = Graph("h", clock=clock)
    HistoryRecorder(got.extend).attach(g)
    g.add_node("a", {"Name": "a", "Type": "netns"}, origin="o")
    g.add_node("b", {"Name": "b", "Type": "veth"}, origin="o")
    g.add_edge("e", "a", "b", {"RelationType": "ownership"}, origin="o")
    clock.t += 5
    g.delete_node(g.nodes["a"])
    closed = [(r.kind, r.id) for r in got if r.valid_to is not None]
    assert closed == [("edge", "e"), ("node", "a")]


def test_attach_records_what_the_graph_already_holds(clock: Clock) -> None:
    g = Graph("h", clock=clock)
    g.add_node("n1", {"Name": "lo", "Type": "device"}, origin="o")
    history = MemoryHistory(clock=clock)
    HistoryRecorder(history.record).attach(g)
    assert [n["ID"] for n in history.live()[0]] == ["n1"]


def test_times_never_go_backwards_within_an_element(clock: Clock) -> None:
    got: list[Revision] = []
    g = Graph("h", clock=clock)
    HistoryRecorder(got.extend).attach(g)
    n = g.add_node("n1", {"Name": "x", "Type": "device"}, origin="o")
    g.update_node(n, {"MTU": 1}, updated_at=5)  # a peer's clock behind ours
    assert [(r.valid_from, r.valid_to) for r in got] == [
        (1_000_000, None),
        (1_000_000, 1_000_000),  # closed where it started, not before
        (1_000_000, None),
    ]


def test_graph_at_sees_each_moment(graph: Graph, history: MemoryHistory, clock: Clock) -> None:
    t0 = clock.t
    a = graph.add_node("a", {"Name": "a", "Type": "device", "MTU": 1500}, origin="o")
    clock.t += 1000
    t1 = clock.t
    b = graph.add_node("b", {"Name": "b", "Type": "device"}, origin="o")
    graph.add_edge("ab", "a", "b", {"RelationType": "layer2"}, origin="o")
    clock.t += 1000
    t2 = clock.t
    graph.update_node(a, {"MTU": 9000})
    clock.t += 1000
    t3 = clock.t
    graph.delete_node(b)

    assert history.graph_at(t0 - 1) == ([], [])
    nodes, edges = history.graph_at(t0)
    assert list(names(nodes)) == ["a"] and edges == []
    nodes, edges = history.graph_at(t1 + 500)
    assert sorted(names(nodes)) == ["a", "b"]
    assert [e["ID"] for e in edges] == ["ab"]
    assert names(nodes)["a"]["Metadata"]["MTU"] == 1500
    nodes, _ = history.graph_at(t2)  # valid_from is inclusive
    assert names(nodes)["a"]["Metadata"]["MTU"] == 9000
    nodes, edges = history.graph_at(t3)  # valid_to is exclusive
    assert list(names(nodes)) == ["a"] and edges == []
    nodes, edges = history.graph_at(t3 - 1)
    assert sorted(names(nodes)) == ["a", "b"] and len(edges) == 1


def test_graph_during_keeps_what_lived_inside_the_window(
    graph: Graph, history: MemoryHistory, clock: Clock
) -> None:
    graph.add_node("a", {"Name": "a", "Type": "device", "MTU": 1}, origin="o")
    clock.t += 1000
    start = clock.t
    clock.t += 100
    b = graph.add_node("b", {"Name": "b", "Type": "device"}, origin="o")
    clock.t += 100
    graph.update_node(graph.nodes["a"], {"MTU": 2})
    graph.delete_node(b)
    clock.t += 100
    end = clock.t
    clock.t += 100
    graph.update_node(graph.nodes["a"], {"MTU": 3})
    graph.add_node("c", {"Name": "c", "Type": "device"}, origin="o")

    nodes, _ = history.graph_during(start, end)
    got = names(nodes)
    assert sorted(got) == ["a", "b"]  # b lived inside only; c came after
    assert got["a"]["Metadata"]["MTU"] == 2  # the latest revision within the window
    assert got["b"]["DeletedAt"] == start + 200
    nodes, _ = history.graph_at(end)
    assert sorted(names(nodes)) == ["a"]
    nodes, _ = history.graph_during(end + 1, end + 50)  # nothing changed, a still there
    assert sorted(names(nodes)) == ["a"]


def test_live_is_the_current_graph(graph: Graph, history: MemoryHistory, clock: Clock) -> None:
    a = graph.add_node("a", {"Name": "a", "Type": "device"}, origin="o")
    graph.add_node("b", {"Name": "b", "Type": "device"}, origin="o")
    graph.add_edge("ab", "a", "b", {"RelationType": "layer2"}, origin="o")
    clock.t += 1
    graph.update_node(a, {"MTU": 7})
    graph.delete_node(graph.nodes["b"])
    nodes, edges = history.live()
    assert nodes == [graph.nodes["a"].to_wire()]
    assert edges == []


def test_re_added_element_has_two_lives(graph: Graph, history: MemoryHistory, clock: Clock) -> None:
    graph.add_node("a", {"Name": "a", "Type": "device"}, origin="o")
    clock.t += 10
    graph.delete_node(graph.nodes["a"])
    clock.t += 10
    graph.add_node("a", {"Name": "a", "Type": "device", "Up": True}, origin="o")
    assert history.graph_at(clock.t - 15)[0][0]["Metadata"] == {"Name": "a", "Type": "device"}
    assert history.graph_at(clock.t - 5) == ([], [])
    assert history.graph_at(clock.t)[0][0]["Metadata"]["Up"] is True


def test_old_revisions_are_forgotten_by_age(clock: Clock) -> None:
    history = MemoryHistory(max_age_ms=1000, clock=clock)
    g = Graph("h", clock=clock)
    HistoryRecorder(history.record).attach(g)
    n = g.add_node("a", {"Name": "a", "Type": "device", "N": 0}, origin="o")
    for i in range(1, 6):
        clock.t += 400
        g.update_node(n, {"N": i})
    # N=i from t0 + 400 i; revisions closed more than 1 s ago are gone (N=0 and N=1)
    t0 = clock.t - 2000
    assert history.graph_at(t0 + 700) == ([], [])
    assert history.graph_at(t0 + 900)[0][0]["Metadata"]["N"] == 2
    assert history.graph_at(t0 + 1700)[0][0]["Metadata"]["N"] == 4
    assert history.graph_at(clock.t)[0][0]["Metadata"]["N"] == 5
    assert history.dropped == 2 and len(history) == 4


def test_revisions_are_bounded_in_number(clock: Clock) -> None:
    history = MemoryHistory(max_revisions=10, clock=clock)
    g = Graph("h", clock=clock)
    HistoryRecorder(history.record).attach(g)
    nodes = [g.add_node(f"n{i}", {"Name": f"n{i}", "Type": "device"}, origin="o") for i in range(4)]
    for step in range(20):
        clock.t += 1
        g.update_node(nodes[step % 4], {"Step": step})
    assert len(history) == 10
    assert len(history.live()[0]) == 4  # current revisions are never dropped
    assert history.graph_at(1_000_000) == ([], [])  # the oldest went first


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryHistory(max_age_ms=0)


def test_reads_from_another_thread_while_recording(clock: Clock) -> None:
    history = MemoryHistory(clock=clock)
    g = Graph("h", clock=clock)
    HistoryRecorder(history.record).attach(g)
    seen: list[int] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            seen.append(len(history.graph_at(clock.t)[0]))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(2000):
            g.add_node(f"n{i}", {"Name": f"n{i}", "Type": "device"}, origin="o")
    finally:
        done.set()
        thread.join()
    assert seen == sorted(seen)  # a consistent, growing view
    assert len(history.graph_at(clock.t)[0]) == 2000


def test_graph_from_wire_rebuilds_a_queryable_graph(
    graph: Graph, history: MemoryHistory, clock: Clock
) -> None:
    graph.add_node("a", {"Name": "a", "Type": "netns"}, origin="o")
    graph.add_node("b", {"Name": "b", "Type": "veth"}, origin="o")
    graph.add_edge("ab", "a", "b", {"RelationType": "ownership"}, origin="o")
    clock.t += 10
    graph.delete_node(graph.nodes["b"])
    past = graph_from_wire(*history.graph_at(clock.t - 1), host="h")
    assert past.children("a")[0].metadata["Name"] == "b"
    assert past.get_nodes({"Type": "veth"})[0].id == "b"
    deleted = graph_from_wire(*history.graph_during(clock.t - 1, clock.t), host="h")
    assert deleted.nodes["b"].to_wire()["DeletedAt"] == clock.t


def test_graph_from_wire_skips_dangling_edges_and_rejects_bad_elements() -> None:
    node = {"ID": "a", "Metadata": {"Name": "a"}, "CreatedAt": 1, "UpdatedAt": 1}
    edge = {"ID": "e", "Parent": "a", "Child": "zz", "Metadata": {}}
    g = graph_from_wire([node, node], [edge], host="h")
    assert list(g.nodes) == ["a"] and not g.edges
    with pytest.raises(MessageError, match="DeletedAt"):
        graph_from_wire([{**node, "DeletedAt": "yesterday"}], [], host="h")
    with pytest.raises(MessageError, match="no ID"):
        graph_from_wire([{"Metadata": {}}], [], host="h")


def test_close_live_ends_what_is_current(clock: Clock, history: MemoryHistory) -> None:
    t0 = clock()
    history.record(
        [
            Revision("node", "a", {"ID": "a", "Metadata": {}}, t0),
            Revision("node", "b", {"ID": "b", "Metadata": {}}, t0, t0 + 5),
        ]
    )
    history.close_live(t0 + 10)
    assert history.live() == ([], [])
    [a] = history.graph_at(t0 + 9)[0]  # its last revision, which knows when it ended
    assert a["ID"] == "a" and a["DeletedAt"] == t0 + 10
    assert history.graph_at(t0 + 10) == ([], [])
    [a_last] = [n for n in history.graph_during(t0, t0 + 20)[0] if n["ID"] == "a"]
    assert a_last["DeletedAt"] == t0 + 10
