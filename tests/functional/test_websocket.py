"""The WebSocket API: the subscriber stream (full and partial) and bad input on every endpoint."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import (
    Kernel,
    Pair,
    Subscriber,
    sh,
    status,
    topology,
    uid,
    wait_for,
    wait_node,
)

EVENTS = {
    "NodeAdded",
    "NodeUpdated",
    "NodeDeleted",
    "EdgeAdded",
    "EdgeUpdated",
    "EdgeDeleted",
    "NodePartiallyUpdated",
    "EdgePartiallyUpdated",
}


def index_of(msgs: list[dict[str, Any]], type_: str, element_id: str) -> int:
    for i, m in enumerate(msgs):
        if m["Type"] == type_ and m["Obj"]["ID"] == element_id:
            return i
    raise AssertionError(f"no {type_} for {element_id} in {[m['Type'] for m in msgs]}")


def sync_first(sub: Subscriber) -> dict[str, Any]:
    """Send a SyncRequest; the reply comes, preceded at most by live graph events (the host is
    shared: other interfaces may change between connecting and asking)."""
    sub.send({"Namespace": "Graph", "Type": "SyncRequest", "Obj": {}, "UUID": "skt-sync-1"})
    before = sub.until(lambda m: m["Type"] == "SyncReply")
    reply = before.pop()
    assert all(m["Type"] in EVENTS for m in before), [m["Type"] for m in before]
    assert reply["Namespace"] == "Graph"
    assert reply["Status"] == 200
    assert reply["UUID"] == "skt-sync-1"
    return reply


@pytest.mark.parametrize("path", ["/ws/subscriber", "/ws/graph", "/ws"])
def test_subscriber_gets_sync_then_added_then_deleted(
    pair: Pair, kernel: Kernel, path: str
) -> None:
    tap = kernel.link_name()
    with Subscriber(pair.port, path) as sub:
        reply = sync_first(sub)
        nodes = {n["ID"]: n for n in reply["Obj"]["Nodes"]}
        assert nodes[pair.agent.host_id]["Metadata"]["Type"] == "host"
        assert not [n for n in nodes.values() if n["Metadata"]["Name"] == tap]
        # A consistent snapshot: every edge joins two nodes of it, the host owns something.
        edges = reply["Obj"]["Edges"]
        assert all(e["Parent"] in nodes and e["Child"] in nodes for e in edges)
        assert any(
            e["Parent"] == pair.agent.host_id and e["Metadata"]["RelationType"] == "ownership"
            for e in edges
        )

        sh(f"ip tuntap add {tap} mode tap")
        got = sub.until(
            lambda m: m["Type"] == "NodeAdded" and m["Obj"]["Metadata"].get("Name") == tap
        )
        added = got[-1]["Obj"]
        assert added["Metadata"]["Type"] == "tun"
        assert added["Host"] == pair.agent.host_id
        assert added["Origin"] == f"agent.{pair.agent.host_id}"

        sh(f"ip link del {tap}")
        got += sub.until(lambda m: m["Type"] == "NodeDeleted" and m["Obj"]["ID"] == added["ID"])
        node_added = index_of(got, "NodeAdded", added["ID"])
        node_deleted = index_of(got, "NodeDeleted", added["ID"])
        assert node_added < node_deleted
        # Its ownership edge comes after the node and goes before it.
        owner_edges = [
            m["Obj"]["ID"]
            for m in got
            if m["Type"] == "EdgeAdded" and m["Obj"]["Child"] == added["ID"]
        ]
        assert len(owner_edges) == 1
        assert node_added < index_of(got, "EdgeAdded", owner_edges[0])
        assert index_of(got, "EdgeDeleted", owner_edges[0]) < node_deleted
    assert not topology(pair.port).find(Name=tap)


def test_partial_update_policy_gets_ops(pair: Pair, kernel: Kernel) -> None:
    name = kernel.link_name()
    sh(f"ip link add {name} type veth peer name {name}p")
    node = wait_node(pair.port, Name=name)
    with (
        Subscriber(pair.port, **{"X-Update-Policy": "partial"}) as partial,
        Subscriber(pair.port, "/ws/subscriber?x-update-policy=partial") as by_query,
        Subscriber(pair.port) as full,
    ):
        for sub in (partial, by_query, full):
            sync_first(sub)
        policies = {s["UpdatePolicy"] for s in status(pair.port)["Subscribers"].values()}
        assert policies == {"partial", "full"}

        sh(f"ip link set {name} mtu 1400")

        def mtu_op(m: dict[str, Any]) -> bool:
            return (
                m["Type"] == "NodePartiallyUpdated"
                and m["Obj"]["ID"] == node["ID"]
                and {"Type": 1, "Key": "MTU", "Value": 1400} in m["Obj"]["Ops"]
            )

        for sub in (partial, by_query):
            got = sub.until(mtu_op)
            obj = got[-1]["Obj"]
            assert set(obj) == {"ID", "UpdatedAt", "Revision", "Ops"}
            assert obj["Revision"] > node["Revision"]
            assert obj["UpdatedAt"] >= node["UpdatedAt"]
            assert not [m for m in got if m["Type"] == "NodeUpdated"]
        got = full.until(
            lambda m: (
                m["Type"] == "NodeUpdated"
                and m["Obj"]["ID"] == node["ID"]
                and m["Obj"]["Metadata"]["MTU"] == 1400
            )
        )
        assert got[-1]["Obj"]["Metadata"]["Name"] == name
        assert not [m for m in got if m["Type"] == "NodePartiallyUpdated"]

        # Removing a key is a Type 2 op (here: the last IPv4 address leaves).
        sh(f"ip addr add 10.235.0.1/24 dev {name}")
        partial.until(
            lambda m: (
                m["Type"] == "NodePartiallyUpdated"
                and m["Obj"]["ID"] == node["ID"]
                and any(op["Key"] == "IPV4" and op["Type"] == 1 for op in m["Obj"]["Ops"])
            )
        )
        sh(f"ip addr del 10.235.0.1/24 dev {name}")
        partial.until(
            lambda m: (
                m["Type"] == "NodePartiallyUpdated"
                and m["Obj"]["ID"] == node["ID"]
                and any(op["Key"] == "IPV4" and op["Type"] == 2 for op in m["Obj"]["Ops"])
            )
        )


def error_reply(sub: Subscriber) -> dict[str, Any]:
    """The next Error message (graph events from the live host may come in between)."""
    msg = sub.until(lambda m: m["Type"] == "Error" or m["Type"] not in EVENTS)[-1]
    assert msg["Type"] == "Error", msg
    assert msg["Status"] == 400
    assert isinstance(msg["Obj"]["Error"], str) and msg["Obj"]["Error"]
    assert "\n" not in msg["Obj"]["Error"]
    return msg


def test_subscriber_bad_messages_are_answered_and_harmless(pair: Pair) -> None:
    with Subscriber(pair.port) as sub, Subscriber(pair.port) as other:
        sync_first(other)
        sub.send("this is not JSON {")
        assert "not JSON" in error_reply(sub)["Obj"]["Error"]
        sub.ws.send(b"\x00\xff binary garbage")
        assert "not JSON" in error_reply(sub)["Obj"]["Error"]
        sub.send("[1, 2, 3]")
        error_reply(sub)
        sub.send({"Namespace": "Graph", "Type": "Bogus", "Obj": {}})
        assert "Bogus" in error_reply(sub)["Obj"]["Error"]
        sub.send({"Namespace": "Graph", "Type": "SyncRequest", "Obj": "nope"})
        assert "SyncRequest" in error_reply(sub)["Obj"]["Error"]
        # The same connection still works, and so does the other one.
        for s in (sub, other):
            reply = sync_first(s)
            assert pair.agent.host_id in {n["ID"] for n in reply["Obj"]["Nodes"]}


def test_agent_endpoint_bad_input(pair: Pair, kernel: Kernel) -> None:
    host_id = uid("sktraw")
    real_host = pair.agent.host_id
    url = f"/ws/agent/topology?x-host-id={host_id}"
    good_id = uid("sktnode")

    def node_added(obj: Any, uuid: str | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"Namespace": "Graph", "Type": "NodeAdded", "Obj": obj}
        if uuid:
            msg["UUID"] = uuid
        return msg

    bad: list[tuple[dict[str, Any] | str, str]] = [
        ("definitely {not JSON", "not JSON"),
        ({"Namespace": "Graph", "Type": "Bogus", "Obj": {}}, "Bogus"),
        (node_added({"ID": "sktbad1", "Metadata": {"Type": "device"}}), "Name"),
        (node_added({"ID": "sktbad2", "Metadata": {"Name": "sktbad2"}}), "Type"),
        (node_added({"ID": "sktbad3", "Metadata": {"Name": "sktbad3", "Type": ""}}), "Type"),
        (node_added("a string"), "object"),
        (node_added({"ID": real_host, "Metadata": {"Name": "x", "Type": "host"}}), "belongs to"),
        ({"Type": "NodeDeleted", "Obj": {"ID": real_host}}, "belongs to"),
        (
            {
                "Type": "EdgeAdded",
                "Obj": {
                    "ID": "sktbadedge",
                    "Parent": real_host,
                    "Child": "sktnowhere",
                    "Metadata": {"RelationType": "ownership"},
                },
            },
            "does not exist",
        ),
    ]
    with Subscriber(pair.port) as watcher, Subscriber(pair.port, url) as raw:
        sync_first(watcher)
        for msg, reason in bad:
            raw.send(msg)
            reply = raw.recv()
            assert reply["Type"] == "Error", (msg, reply)
            assert reply["Status"] == 400
            assert reason in reply["Obj"]["Error"], (msg, reply)
        raw.send(node_added({"ID": "sktbad4", "Metadata": {"Type": "device"}}, uuid="skt-u1"))
        reply = raw.recv()
        assert reply["UUID"] == "skt-u1" and reply["Obj"]["Type"] == "NodeAdded"

        # Nothing of the bad messages reached the graph; the real agent's graph is intact.
        topo = topology(pair.port)
        assert not {"sktbad1", "sktbad2", "sktbad3", "sktbad4", "sktbadedge"} & topo.by_id.keys()
        host = topo.by_id[real_host]
        assert host["Metadata"]["Type"] == "host"
        assert host["Origin"] == f"agent.{real_host}"

        # The connection is still usable: a valid node goes in, under the raw agent's origin.
        raw.send(node_added({"ID": good_id, "Metadata": {"Name": good_id, "Type": "device"}}))
        node = wait_node(pair.port, Name=good_id)
        assert node["ID"] == good_id
        assert node["Origin"] == f"agent.{host_id}"
        assert node["Host"] == host_id
        watcher.until(lambda m: m["Type"] == "NodeAdded" and m["Obj"]["ID"] == good_id)
        assert set(status(pair.port)["Agents"]) == {real_host, host_id}

        # The real agent still feeds the analyzer.
        tap = kernel.link_name()
        sh(f"ip tuntap add {tap} mode tap")
        watcher.until(
            lambda m: m["Type"] == "NodeAdded" and m["Obj"]["Metadata"].get("Name") == tap
        )
        wait_node(pair.port, Name=tap)

    # The raw agent disconnected: its node left with it (DeleteOnDisconnect), nothing else.
    wait_for("the raw agent's node to leave", lambda: good_id not in topology(pair.port).by_id)
    wait_for(
        "the raw agent to leave /api/status", lambda: host_id not in status(pair.port)["Agents"]
    )
    topo = topology(pair.port)
    assert real_host in topo.by_id
    assert topo.one(Name=tap) is not None
