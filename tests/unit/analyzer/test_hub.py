"""The analyzer hub: Sync by difference, origins kept apart, bad messages change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from pyskydive.analyzer.hub import AgentConflict, AgentSession, Hub
from pyskydive.errors import MessageError
from pyskydive.graph import Graph
from pyskydive.graph import messages as wire


def node(i: str, name: str, type_: str = "device", **md: Any) -> dict[str, Any]:
    return {
        "ID": i,
        "Metadata": {"Name": name, "Type": type_, **md},
        "Host": "a",
        "CreatedAt": 1,
        "UpdatedAt": 1,
        "Revision": 1,
    }


def edge(i: str, p: str, c: str, rel: str = "ownership") -> dict[str, Any]:
    return {
        "ID": i,
        "Parent": p,
        "Child": c,
        "Metadata": {"RelationType": rel},
        "Host": "a",
        "CreatedAt": 1,
        "UpdatedAt": 1,
        "Revision": 1,
    }


def msg(type_: str, obj: Any) -> wire.Message:
    return wire.parse(wire.encode(wire.envelope(type_, obj)))


@pytest.fixture
def hub() -> Hub:
    return Hub(Graph("analyzer"))


def session(host: str = "a") -> AgentSession:
    return AgentSession(host_id=host, remote="127.0.0.1:1", client_type="t", connected_at=0)


def test_sync_then_resync_by_difference(hub: Hub) -> None:
    s = session()
    hub.register(s)
    hub.apply(
        s,
        msg(
            "Sync",
            {"Nodes": [node("h", "a", "host"), node("i", "eth0")], "Edges": [edge("e", "h", "i")]},
        ),
    )
    assert set(hub.graph.nodes) == {"h", "i"}
    assert hub.graph.nodes["i"].origin == "agent.a"
    events: list[str] = []

    class L:
        def __getattr__(self, name: str) -> Any:
            return lambda *a: events.append(name)

    hub.graph.add_listener(L())  # type: ignore[arg-type]
    # Same graph again: no event at all. Then one node gone, one new.
    hub.apply(
        s,
        msg(
            "Sync",
            {"Nodes": [node("h", "a", "host"), node("i", "eth0")], "Edges": [edge("e", "h", "i")]},
        ),
    )
    assert events == []
    hub.apply(
        s,
        msg(
            "Sync",
            {"Nodes": [node("h", "a", "host"), node("j", "eth1")], "Edges": [edge("f", "h", "j")]},
        ),
    )
    assert set(hub.graph.nodes) == {"h", "j"}
    assert events == ["on_edge_deleted", "on_node_deleted", "on_node_added", "on_edge_added"]


def test_second_agent_with_same_host_is_refused(hub: Hub) -> None:
    hub.register(session())
    with pytest.raises(AgentConflict, match="already connected"):
        hub.register(session())


def test_disconnect_removes_only_that_origin(hub: Hub) -> None:
    a, b = session("a"), session("b")
    hub.register(a)
    hub.register(b)
    hub.apply(a, msg("NodeAdded", node("ha", "a", "host")))
    hub.apply(b, msg("NodeAdded", node("hb", "b", "host")))
    hub.unregister(a)
    assert set(hub.graph.nodes) == {"hb"}
    assert "a" not in hub.agents


def test_agent_cannot_touch_another_origin(hub: Hub) -> None:
    a, b = session("a"), session("b")
    hub.register(a)
    hub.register(b)
    hub.apply(a, msg("NodeAdded", node("n", "x")))
    with pytest.raises(MessageError, match=r"belongs to agent\.a"):
        hub.apply(b, msg("NodeDeleted", node("n", "x")))
    with pytest.raises(MessageError, match=r"belongs to agent\.a"):
        hub.apply(b, msg("Sync", {"Nodes": [node("n", "x")], "Edges": []}))
    assert "n" in hub.graph.nodes


@pytest.mark.parametrize(
    ("type_", "obj", "reason"),
    [
        ("NodeAdded", {"ID": "x", "Metadata": {"Name": "x"}}, "Metadata.Type"),
        ("EdgeAdded", edge("e", "h", "missing"), "does not exist"),
        ("Bogus", {}, "unexpected message type"),
        ("Sync", {"Nodes": [node("z", "z")], "Edges": [edge("e", "z", "gone")]}, "gone"),
        ("NodePartiallyUpdated", {"ID": "nope", "Ops": []}, "unknown element"),
    ],
)
def test_bad_messages_change_nothing(hub: Hub, type_: str, obj: Any, reason: str) -> None:
    s = session()
    hub.register(s)
    hub.apply(s, msg("NodeAdded", node("h", "a", "host")))
    before = hub.graph.to_wire()
    with pytest.raises(MessageError, match=reason):
        hub.apply(s, msg(type_, obj))
    assert hub.graph.to_wire() == before


def test_partial_updates_apply(hub: Hub) -> None:
    s = session()
    hub.register(s)
    hub.apply(s, msg("NodeAdded", node("i", "eth0", MTU=1500)))
    hub.apply(
        s,
        msg(
            "NodePartiallyUpdated",
            {
                "ID": "i",
                "UpdatedAt": 5,
                "Revision": 2,
                "Ops": [{"Type": 1, "Key": "MTU", "Value": 9000}, {"Type": 2, "Key": "Name"}],
            },
        ),
    )
    n = hub.graph.nodes["i"]
    assert n.metadata == {"Type": "device", "MTU": 9000}
    assert (n.revision, n.updated_at) == (2, 5)
