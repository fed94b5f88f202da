"""On-demand captures, analyzer side: the desired set per agent, sent only when it changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyskydive.analyzer.hub import AgentSession, Hub
from pyskydive.analyzer.ondemand import CAPTURE_SET, ONDEMAND_NS, OnDemand
from pyskydive.analyzer.store import ResourceStore
from pyskydive.graph import Graph


def setup(tmp_path: Path) -> tuple[Graph, Hub, ResourceStore, OnDemand, list[str]]:
    graph = Graph(host="analyzer")
    hub = Hub(graph)
    store = ResourceStore(tmp_path)
    sent: list[str] = []
    session = AgentSession("h1", "127.0.0.1:1", "skydive-agent", 0, send=sent.append)
    session.synced = True
    hub.register(session)
    origin = "agent.h1"
    graph.add_node("host", {"Name": "h1", "Type": "host", "TID": "t-host"}, origin=origin)
    graph.add_node(
        "veth", {"Name": "v1", "Type": "veth", "IfIndex": 4, "TID": "t-v1"}, origin=origin
    )
    graph.add_node("br", {"Name": "br0", "Type": "ovsbridge", "TID": "t-br"}, origin=origin)
    graph.add_node("pub", {"Name": "v1", "Type": "veth", "IfIndex": 9}, origin="publisher.x")
    for child in ("veth", "br"):
        graph.add_edge(f"e-{child}", "host", child, {"RelationType": "ownership"}, origin=origin)
    return graph, hub, store, OnDemand(graph, hub, store), sent


def capture(store: ResourceStore, uuid: str, query: str, **fields: Any) -> None:
    store.put("capture", uuid, {"UUID": uuid, "GremlinQuery": query, **fields})


def last_set(sent: list[str]) -> list[tuple[str, str, str]]:
    msg = json.loads(sent[-1])
    assert (msg["Namespace"], msg["Type"]) == (ONDEMAND_NS, CAPTURE_SET)
    return sorted(
        (c["NodeID"], c["Capture"]["UUID"], c["Capture"]["Type"]) for c in msg["Obj"]["Captures"]
    )


def test_a_new_agent_gets_a_set_even_an_empty_one(tmp_path: Path) -> None:
    _, _, _, ondemand, sent = setup(tmp_path)
    ondemand.reconcile()
    assert len(sent) == 1 and last_set(sent) == []
    ondemand.reconcile()
    assert len(sent) == 1  # unchanged: nothing sent


def test_default_types_and_ownership(tmp_path: Path) -> None:
    _, _, store, ondemand, sent = setup(tmp_path)
    capture(store, "c1", "G.V().Has('Name', Within('v1', 'br0'))")
    ondemand.reconcile()
    # the publisher's v1 is nobody's agent node: not captured
    assert last_set(sent) == [("br", "c1", "ovssflow"), ("veth", "c1", "afpacket")]


def test_probe_path_and_unsupported_nodes(tmp_path: Path) -> None:
    _, _, store, ondemand, sent = setup(tmp_path)
    capture(store, "c1", "*/v1[Type=veth]", Type="pcap")
    capture(store, "c2", "G.V().Has('Type', 'host')")  # no default type on a host: skipped
    capture(store, "c3", "G.V().Has('Type', 'host')", Type="sflow")
    ondemand.reconcile()
    assert last_set(sent) == [("host", "c3", "sflow"), ("veth", "c1", "pcap")]


def test_a_node_that_goes_and_comes_back(tmp_path: Path) -> None:
    graph, _, store, ondemand, sent = setup(tmp_path)
    capture(store, "c1", "G.V().Has('Name', 'v1', 'Type', 'veth')")
    ondemand.reconcile()
    assert last_set(sent) == [("veth", "c1", "afpacket")]
    md = dict(graph.nodes["veth"].metadata)
    graph.delete_node(graph.nodes["veth"])
    ondemand.reconcile()
    assert last_set(sent) == []
    graph.add_node("veth2", md, origin="agent.h1")
    ondemand.reconcile()
    assert last_set(sent) == [("veth2", "c1", "afpacket")]
    assert len(sent) == 3


def test_a_failing_query_does_not_stop_the_others(tmp_path: Path) -> None:
    _, _, store, ondemand, sent = setup(tmp_path)
    capture(store, "bad", "G.V().Nope()")
    capture(store, "good", "G.V().Has('Name', 'br0')")
    ondemand.reconcile()
    assert last_set(sent) == [("br", "good", "ovssflow")]


def test_captures_metadata_changes_do_not_trigger_a_reconcile(tmp_path: Path) -> None:
    graph, _, _, ondemand, _ = setup(tmp_path)
    node = graph.nodes["veth"]
    graph.add_listener(ondemand)
    graph.update_node(node, {"Captures": [{"ID": "c1", "State": "active"}]})
    assert not ondemand._dirty.is_set()
    graph.update_node(node, {"MTU": 9000})
    assert ondemand._dirty.is_set()


def test_a_session_that_never_synced_gets_nothing(tmp_path: Path) -> None:
    _, hub, _, ondemand, sent = setup(tmp_path)
    hub.agents["h1"].synced = False
    ondemand.reconcile()
    assert sent == []
