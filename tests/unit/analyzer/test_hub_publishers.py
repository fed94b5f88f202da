"""Publisher sessions on the hub: their own origin and registry, the agents' rules."""

from __future__ import annotations

import pytest

from pyskydive.analyzer.hub import AgentConflict, AgentSession, Hub
from pyskydive.errors import MessageError
from pyskydive.graph import Graph
from pyskydive.graph import messages as wire


def session(host: str, service: str = "publisher", persistent: bool = False) -> AgentSession:
    return AgentSession(
        host_id=host,
        remote="127.0.0.1:1",
        client_type="t",
        connected_at=0,
        delete_on_disconnect=not persistent,
        service=service,
    )


def added(node_id: str) -> wire.Message:
    obj = {"ID": node_id, "Metadata": {"Name": node_id, "Type": "device"}}
    return wire.parse(wire.encode(wire.envelope("NodeAdded", obj)))


def test_publishers_have_their_origin_and_registry() -> None:
    hub = Hub(Graph("an"))
    agent, pub = session("x", "agent"), session("x")
    hub.register(agent)
    hub.register(pub)  # same host ID as the agent: a different kind of session
    assert pub.origin == "publisher.x"
    assert agent.origin == "agent.x"
    assert hub.agents == {"x": agent}
    assert hub.publishers == {"x": pub}
    with pytest.raises(AgentConflict, match="a publisher with host ID 'x'"):
        hub.register(session("x"))
    hub.apply(pub, added("n"))
    assert hub.graph.nodes["n"].origin == "publisher.x"
    with pytest.raises(MessageError, match=r"belongs to publisher\.x"):
        hub.apply(agent, added("n"))
    hub.unregister(pub)
    assert "n" not in hub.graph.nodes
    assert hub.agents == {"x": agent}


def test_persistent_publisher_elements_stay_and_come_back_under_its_control() -> None:
    hub = Hub(Graph("an"))
    first = session("p", persistent=True)
    hub.register(first)
    hub.apply(first, added("n"))
    hub.unregister(first)
    assert "n" in hub.graph.nodes
    again = session("p", persistent=True)
    hub.register(again)
    hub.apply(again, wire.parse(wire.encode(wire.envelope("NodeDeleted", {"ID": "n"}))))
    assert "n" not in hub.graph.nodes
