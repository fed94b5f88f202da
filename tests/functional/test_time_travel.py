"""Time travel on a real analyzer and agent: G.At() and SyncRequest.Time see a deleted veth."""

from __future__ import annotations

import time
from typing import Any

import httpx
from conftest import Kernel, Pair, Subscriber, sh, topology, wait_for, wait_node


def gremlin(port: int, query: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/api/topology", json={"GremlinQuery": query}, timeout=10
    )


def names(nodes: list[dict[str, Any]]) -> list[str]:
    return sorted(n["Metadata"]["Name"] for n in nodes)


def sync_at(sub: Subscriber, uuid: str, **obj: Any) -> dict[str, Any]:
    """Send a SyncRequest and return its answer (a SyncReply or an Error), skipping events."""
    sub.send({"Namespace": "Graph", "Type": "SyncRequest", "UUID": uuid, "Obj": obj})
    got = sub.until(lambda m: m["Type"] == "Error" or m.get("UUID") == uuid)
    return got[-1]


def test_a_deleted_veth_is_found_in_the_past(pair: Pair, kernel: Kernel) -> None:
    veth = kernel.link_name()
    sh(f"ip link add {veth} type veth peer name {veth}p")
    node = wait_node(pair.port, Name=veth)
    seen_at = int(time.time() * 1000)  # the veth exists on the analyzer at this instant
    time.sleep(0.05)
    sh(f"ip link del {veth}")
    wait_for("the veth gone from the analyzer", lambda: not topology(pair.port).find(Name=veth))

    live = gremlin(pair.port, f"G.V().Has('Name', '{veth}')")
    assert live.status_code == 200 and live.json() == []

    past = gremlin(pair.port, f"G.At({seen_at}).V().Has('Name', '{veth}')")
    assert past.status_code == 200, past.text
    found = past.json()
    assert [n["ID"] for n in found] == [node["ID"]]
    assert found[0]["Metadata"]["Type"] == "veth"

    # the past graph is walkable: the veth had an owner (the host), and its peer was there too
    owner = gremlin(pair.port, f"G.At({seen_at}).V().Has('Name', '{veth}').In().Values('Type')")
    assert owner.status_code == 200 and "host" in owner.json()
    peers = gremlin(pair.port, f"G.Context({seen_at}).V().Has('Name', '{veth}p').Count()")
    assert peers.json() == 1

    # a window ending now still sees it, in its last revision; a bad form is a 400
    window = gremlin(pair.port, f"G.At(NOW, 3600).V().Has('Name', '{veth}')")
    assert [n["ID"] for n in window.json()] == [node["ID"]]
    assert window.json()[0]["DeletedAt"] > seen_at  # its last revision: known to be gone
    bad = gremlin(pair.port, "G.At('-1x').V()")
    assert bad.status_code == 400
    assert bad.json()["Error"].startswith("position 8: At: bad time")

    with Subscriber(pair.port) as sub:
        reply = sync_at(sub, "skt-past-1", Time=seen_at)
        assert reply["Type"] == "SyncReply" and reply["Status"] == 200
        assert veth in names(reply["Obj"]["Nodes"])

        query = f"G.V().Has('Name', '{veth}')"
        reply = sync_at(sub, "skt-past-2", Time=seen_at, GremlinFilter=query)
        assert reply["Type"] == "SyncReply"
        assert names(reply["Obj"]["Nodes"]) == [veth]

        error = sync_at(sub, "skt-past-3", Time="sometime")
        assert error["Type"] == "Error"
        assert "SyncRequest Time: bad time" in error["Obj"]["Error"]

        # the live stream is untouched by the look at the past
        reply = sync_at(sub, "skt-live")
        assert reply["Type"] == "SyncReply"
        assert veth not in names(reply["Obj"]["Nodes"])
        assert pair.agent.host_id in {n["ID"] for n in reply["Obj"]["Nodes"]}


def test_without_history_time_travel_is_refused_in_one_line(pair: Pair) -> None:
    port = pair.agent.agent_port  # an agent keeps no topology history
    r = gremlin(port, "G.At('-1m').V()")
    assert r.status_code == 400
    assert r.json()["Error"].startswith(
        "position 2: At: time travel needs topology history (storage)"
    )
    with Subscriber(port) as sub:
        error = sync_at(sub, "skt-no-history", Time=int(time.time() * 1000) - 1000)
        assert error["Type"] == "Error"
        assert error["Obj"]["Error"] == (
            "SyncRequest Time: time travel needs topology history (storage)"
        )
        assert sync_at(sub, "skt-live")["Type"] == "SyncReply"  # the connection carries on
