"""Gremlin through the API: POST /api/topology, DOT output, subscriber filters, captures
written as probe paths, and the OpenAPI description, against real processes."""

from __future__ import annotations

import httpx
from conftest import Kernel, Pair, Subscriber, sh, wait_node


def query(port: int, gremlin: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/api/topology",
        json={"GremlinQuery": gremlin},
        headers=headers,
        timeout=10,
    )


def test_post_topology_answers_gremlin(pair: Pair, kernel: Kernel) -> None:
    ns = kernel.add_netns()
    wait_node(pair.port, Name=ns, Type="netns")
    hosts = query(pair.port, "G.V().Has('Type', 'host')").json()
    assert [h["ID"] for h in hosts] == [pair.agent.host_id]
    netns = query(pair.port, f"G.V().Has('Name', '{ns}').In().Has('Type', 'host')").json()
    assert [n["ID"] for n in netns] == [pair.agent.host_id]
    count = query(pair.port, "G.V().Has('Type', 'netns').Count()").json()
    assert isinstance(count, int) and count >= 1
    whole = query(pair.port, "G").json()
    assert isinstance(whole, list) and len(whole) == 1 and set(whole[0]) == {"Nodes", "Edges"}


def test_bad_queries_are_400_with_the_position(pair: Pair) -> None:
    r = query(pair.port, "G.V().Has('Type', ")
    assert r.status_code == 400
    assert "position" in r.json()["Error"]
    r = query(pair.port, "G.V().Nope()")
    assert r.status_code == 400 and "Nope" in r.json()["Error"]
    r = httpx.post(f"http://127.0.0.1:{pair.port}/api/topology", content=b"{", timeout=5)
    assert r.status_code == 400 and "JSON" in r.json()["Error"]
    r = httpx.post(f"http://127.0.0.1:{pair.port}/api/topology", json={"Query": "G"}, timeout=5)
    assert r.status_code == 400 and "GremlinQuery" in r.json()["Error"]
    r = query(pair.port, "G" + ".Out()" * 50_000)
    assert r.status_code == 400


def test_dot_output(pair: Pair) -> None:
    r = query(pair.port, "G", accept="text/vnd.graphviz")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/vnd.graphviz")
    assert r.text.lstrip().startswith(("digraph", "graph")) and pair.agent.host_id in r.text


def test_subscriber_filter_sends_what_enters_and_leaves(pair: Pair, kernel: Kernel) -> None:
    with Subscriber(pair.port, **{"X-Gremlin-Filter": "G.V().Has('Type', 'netns')"}) as sub:
        reply = sub.sync()
        assert all(n["Metadata"]["Type"] == "netns" for n in reply["Obj"]["Nodes"])
        ns = kernel.add_netns()
        added = sub.until(lambda m: m["Type"] == "NodeAdded")[-1]
        assert added["Obj"]["Metadata"]["Name"] == ns
        # Interfaces of the new namespace are not in the view.
        sh(f"ip -n {ns} link set lo up")
        sh(f"ip netns del {ns}")
        got = sub.until(lambda m: m["Type"] == "NodeDeleted")
        assert all(m["Obj"]["Metadata"]["Type"] == "netns" for m in got if "Metadata" in m["Obj"])
        assert got[-1]["Obj"]["Metadata"]["Name"] == ns


def test_sync_request_filter_and_bad_filter(pair: Pair) -> None:
    with Subscriber(pair.port) as sub:
        sub.send(
            {
                "Namespace": "Graph",
                "Type": "SyncRequest",
                "Obj": {"GremlinFilter": "G.V().Has('Type', 'host')"},
            }
        )
        reply = sub.until(lambda m: m["Type"] == "SyncReply")[-1]
        assert [n["ID"] for n in reply["Obj"]["Nodes"]] == [pair.agent.host_id]
        assert reply["Obj"]["Edges"] == []
        sub.send({"Namespace": "Graph", "Type": "SyncRequest", "Obj": {"GremlinFilter": "G.V("}})
        error = sub.until(lambda m: m["Type"] == "Error")[-1]
        assert "GremlinFilter" in error["Obj"]["Error"] and "position" in error["Obj"]["Error"]


def test_capture_accepts_a_probe_path(pair: Pair) -> None:
    base = f"http://127.0.0.1:{pair.port}/api/capture"
    path = f"{pair.agent.host_id}[Type=host]/lo"
    r = httpx.post(base, json={"GremlinQuery": path}, timeout=5)
    assert r.status_code == 201, r.text
    assert r.json()["GremlinQuery"] == path
    bad = httpx.post(base, json={"GremlinQuery": "host1//lo"}, timeout=5)
    assert bad.status_code == 400 and "probe path" in bad.json()["Error"]


def test_openapi_and_docs_page(pair: Pair) -> None:
    spec = httpx.get(f"http://127.0.0.1:{pair.port}/api/openapi.json", timeout=5).json()
    assert spec["openapi"].startswith("3.")
    for path in ("/api/topology", "/api/capture", "/api/capture/{id}", "/api/node", "/login"):
        assert path in spec["paths"]
    page = httpx.get(f"http://127.0.0.1:{pair.port}/api/docs", timeout=5)
    assert page.status_code == 200 and "openapi.json" in page.text


def test_pubsub_filter_sees_only_its_view(pair: Pair) -> None:
    def node(node_id: str, type_: str) -> dict[str, object]:
        return {"ID": node_id, "Metadata": {"Name": node_id, "Type": type_}, "Host": "ext"}

    headers = {"X-Gremlin-Filter": "G.V().Has('Type', 'switch')", "X-Host-ID": "sktpubsub"}
    with Subscriber(pair.port, "/ws/pubsub", **headers) as sub:
        assert sub.sync()["Obj"]["Nodes"] == []
        sub.send({"Namespace": "Graph", "Type": "NodeAdded", "Obj": node("sktother", "router")})
        sub.send({"Namespace": "Graph", "Type": "NodeAdded", "Obj": node("sktsw1", "switch")})
        added = sub.until(lambda m: m["Type"] == "NodeAdded")
        assert [m["Obj"]["ID"] for m in added if m["Type"] == "NodeAdded"] == ["sktsw1"]
        sub.send({"Namespace": "Graph", "Type": "NodeDeleted", "Obj": node("sktsw1", "switch")})
        gone = sub.until(lambda m: m["Type"] == "NodeDeleted")[-1]
        assert gone["Obj"]["ID"] == "sktsw1"
