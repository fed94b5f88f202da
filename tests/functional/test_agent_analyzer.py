"""Agent ↔ analyzer link: status, restarts, abrupt death, duplicate host IDs, process life."""

from __future__ import annotations

import signal

import httpx
import orjson
import pytest
from conftest import (
    Cluster,
    Kernel,
    Pair,
    Topology,
    api_up,
    sh,
    start_agent,
    start_analyzer,
    start_pair,
    status,
    topology,
    uid,
    wait_for,
    wait_node,
    wait_topology,
)
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def ids(topo: Topology) -> set[str]:
    return {n["ID"] for n in topo.nodes}


def edge_ids(topo: Topology) -> set[str]:
    return {e["ID"] for e in topo.edges}


def same_graph(a: int, b: int) -> bool:
    """The two APIs serve the same node and edge IDs."""
    ta, tb = topology(a), topology(b)
    return ids(ta) == ids(tb) and edge_ids(ta) == edge_ids(tb)


def test_api_root_and_status_on_both_sides(pair: Pair) -> None:
    root = httpx.get(f"http://127.0.0.1:{pair.port}/api", timeout=5).json()
    assert root["Service"] == "analyzer"
    assert root["Host"] == pair.analyzer.host_id
    assert root["Version"]
    root = httpx.get(f"http://127.0.0.1:{pair.agent.agent_port}/api", timeout=5).json()
    assert root["Service"] == "agent"
    assert root["Host"] == pair.agent.host_id

    agents = wait_for("the agent in the analyzer's status", lambda: status(pair.port)["Agents"])
    entry = agents[pair.agent.host_id]
    assert entry["Addr"] == "127.0.0.1"
    assert isinstance(entry["ConnectTime"], int) and entry["ConnectTime"] > 0
    links = status(pair.agent.agent_port)["Analyzers"]
    link = links[f"127.0.0.1:{pair.port}"]
    assert link["Connected"] is True
    assert not link["LastError"]

    # The analyzer serves exactly the agent's graph (and no node of its own).
    wait_for(
        "the analyzer to mirror the agent", lambda: same_graph(pair.port, pair.agent.agent_port)
    )
    topo = topology(pair.port)
    host = topo.by_id[pair.agent.host_id]
    assert host["Metadata"]["Type"] == "host"
    assert host["Metadata"]["Name"] == pair.agent.host_id
    assert host["Origin"] == f"agent.{pair.agent.host_id}"
    assert all(n["Host"] == pair.agent.host_id for n in topo.nodes)


def test_analyzer_restart_converges_without_duplicates(cluster: Cluster, kernel: Kernel) -> None:
    pair = start_pair(cluster)
    port = pair.port
    before = kernel.link_name()
    sh(f"ip link add {before} type veth peer name {before}p")
    wait_node(port, Name=before)
    wait_for("the analyzer to mirror the agent", lambda: same_graph(port, pair.agent.agent_port))

    assert pair.analyzer.stop() == 0
    # Changes while the analyzer is away: one link added, one removed.
    during = kernel.link_name()
    sh(f"ip tuntap add {during} mode tap")
    sh(f"ip link del {before}")
    wait_node(pair.agent.agent_port, Name=during)

    analyzer = start_analyzer(cluster, port=port)
    assert analyzer.analyzer_port == port
    wait_for(
        "the restarted analyzer to converge to the agent's graph",
        lambda: same_graph(port, pair.agent.agent_port),
        timeout=20,
    )
    topo = topology(port)
    assert len(topo.by_id) == len(topo.nodes), "duplicate node IDs"
    assert len(edge_ids(topo)) == len(topo.edges), "duplicate edge IDs"
    hosts = topo.find(Type="host")
    assert [h["ID"] for h in hosts] == [pair.agent.host_id]
    assert topo.one(Name=during) is not None
    assert not topo.find(Name=before)
    assert not topo.find(Name=f"{before}p")
    # The link is live again: a new change reaches the new analyzer.
    after = kernel.link_name()
    sh(f"ip tuntap add {after} mode tap")
    wait_node(port, Name=after)
    assert list(status(port)["Agents"]) == [pair.agent.host_id]


def test_agent_killed_leaves_the_analyzer(pair: Pair, kernel: Kernel) -> None:
    tap = kernel.link_name()
    sh(f"ip tuntap add {tap} mode tap")
    wait_node(pair.port, Name=tap)
    host_id = pair.agent.host_id
    origin = f"agent.{host_id}"

    pair.agent.stop(signal.SIGKILL)

    def gone(t: Topology) -> bool:
        return not any(n["Host"] == host_id or n["Origin"] == origin for n in t.nodes + t.edges)

    topo = wait_topology(pair.port, f"{host_id}'s sub-graph to leave", gone)
    assert host_id not in topo.by_id
    assert not topo.find(Name=tap)
    wait_for("the agent to leave /api/status", lambda: host_id not in status(pair.port)["Agents"])
    assert api_up(pair.port)


def test_duplicate_host_id_is_refused(cluster: Cluster, pair: Pair) -> None:
    host_id = pair.agent.host_id
    first_graph = ids(topology(pair.agent.agent_port))
    second = start_agent(cluster, pair.analyzer, host_id=host_id, wait=False)
    wait_for("the second agent's API", lambda: api_up(second.agent_port), timeout=20)

    def refusal() -> str:
        link = status(second.agent_port)["Analyzers"][f"127.0.0.1:{pair.port}"]
        return str(link["LastError"]) if not link["Connected"] else ""

    reason = wait_for("the second agent to be refused", refusal, timeout=20)
    assert "409" in reason
    assert "already connected" in reason
    assert host_id in reason

    # The analyzer still holds the first agent's graph, with one host node of that ID.
    topo = topology(pair.port)
    assert [n["ID"] for n in topo.find(Type="host")] == [host_id]
    assert len([n for n in topo.nodes if n["ID"] == host_id]) == 1
    wait_for(
        "the analyzer to keep mirroring the first agent",
        lambda: same_graph(pair.port, pair.agent.agent_port),
    )
    assert first_graph & ids(topo)
    assert list(status(pair.port)["Agents"]) == [host_id]
    assert second.proc is not None and second.proc.poll() is None  # refused, not dead


def test_duplicate_host_id_raw_connection_gets_409(pair: Pair) -> None:
    url = f"ws://127.0.0.1:{pair.port}/ws/agent/topology"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers={"X-Host-ID": pair.agent.host_id}, open_timeout=5)
    response = refused.value.response
    assert response.status_code == 409
    body = orjson.loads(response.body)
    assert "already connected" in body["Error"]
    assert pair.agent.host_id in body["Error"]
    # The real agent is still connected and its graph still there.
    assert list(status(pair.port)["Agents"]) == [pair.agent.host_id]
    assert pair.agent.host_id in topology(pair.port).by_id


def test_agent_without_host_id_is_refused(pair: Pair) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{pair.port}/ws/agent/topology", open_timeout=5)
    assert refused.value.response.status_code == 400
    assert "X-Host-ID" in orjson.loads(refused.value.response.body)["Error"]


def test_agent_restart_resyncs_same_host(cluster: Cluster, kernel: Kernel) -> None:
    analyzer = start_analyzer(cluster)
    host_id = uid("skthost")
    agent = start_agent(cluster, analyzer, host_id=host_id)
    assert agent.stop() == 0
    wait_for(
        "the stopped agent to leave", lambda: host_id not in topology(analyzer.analyzer_port).by_id
    )
    tap = kernel.link_name()
    sh(f"ip tuntap add {tap} mode tap")
    agent = start_agent(cluster, analyzer, host_id=host_id)
    wait_node(analyzer.analyzer_port, Name=tap)
    wait_for(
        "the analyzer to mirror the restarted agent",
        lambda: same_graph(analyzer.analyzer_port, agent.agent_port),
    )
    assert [n["ID"] for n in topology(analyzer.analyzer_port).find(Type="host")] == [host_id]
