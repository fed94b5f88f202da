"""REST resources in-process (Starlette test client): validation, status codes, rules, store."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from pyskydive.analyzer.rules import RuleEngine
from pyskydive.analyzer.store import ResourceStore
from pyskydive.api import resources
from pyskydive.api.elements import ApiElements
from pyskydive.api.resources import (
    ResourceContext,
    ResourceError,
    resource_routes,
    restore_resources,
    resync_resources,
    validate,
)
from pyskydive.errors import QueryError
from pyskydive.graph import Graph

with warnings.catch_warnings():
    # starlette 1.x prefers "httpx2" for its test client; httpx (a test dependency) works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def stub_evaluate(query: str, graph: Graph) -> list[Any]:
    if not query.startswith("G.V()"):
        raise QueryError(f"cannot parse {query!r} at position 0")
    name = query[len("G.V()") :]
    return [n.to_wire() for n in graph.nodes.values() if not name or n.get("Name") == name]


class Api:
    def __init__(self, data_dir: Path) -> None:
        self.graph = Graph("h")
        store = ResourceStore(data_dir)
        rules = RuleEngine(self.graph, "analyzer.h", stub_evaluate)
        self.rc = ResourceContext(
            store=store,
            rules=rules,
            elements=ApiElements(self.graph, store, "analyzer.h", rules.merged_keys),
        )
        restore_resources(self.rc)
        self.client = TestClient(Starlette(routes=resource_routes(self.rc)))


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path)
    with a.client:
        yield a


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("capture", {}, "GremlinQuery"),
        ("capture", {"GremlinQuery": ""}, "GremlinQuery"),
        ("capture", {"GremlinQuery": 3}, "GremlinQuery"),
        ("capture", {"GremlinQuery": "G.V()", "SamplingRate": True}, "SamplingRate"),
        ("capture", {"GremlinQuery": "G.V()", "Port": -1}, "Port"),
        ("capture", {"GremlinQuery": "G.V()", "IPDefrag": "yes"}, "IPDefrag"),
        ("capture", {"GremlinQuery": "G.V()", "LayerKeyMode": "L4"}, "LayerKeyMode"),
        ("alert", {}, "Expression"),
        ("alert", {"Expression": "G.V()", "Action": "ftp://x"}, "Action"),
        ("alert", {"Expression": "G.V()", "Trigger": "duration:soon"}, "Trigger"),
        ("noderule", {"Action": "create"}, "Metadata"),
        ("noderule", {"Metadata": {"Name": "n", "Type": "t"}}, "Action"),
        ("noderule", {"Action": "delete", "Metadata": {"A": 1}}, "Action"),
        ("noderule", {"Action": "update", "Metadata": {"A": 1}}, "Query"),
        ("noderule", {"Action": "create", "Metadata": {"Type": "t"}}, "Metadata.Name"),
        ("noderule", {"Action": "create", "Metadata": {"Name": "n"}}, "Metadata.Type"),
        ("edgerule", {"Dst": "G.V()", "Metadata": {"RelationType": "l"}}, "Src"),
        ("edgerule", {"Src": "G.V()", "Metadata": {"RelationType": "l"}}, "Dst"),
        ("edgerule", {"Src": "G.V()", "Dst": "G.V()"}, "Metadata"),
        ("edgerule", {"Src": "G.V()", "Dst": "G.V()", "Metadata": {}}, "Metadata"),
        (
            "edgerule",
            {"Src": "G.V()", "Dst": "G.V()", "Metadata": {"A": 1}},
            "Metadata.RelationType",
        ),
    ],
)
def test_validation_names_the_field(kind: str, body: dict[str, Any], field: str) -> None:
    with pytest.raises(ResourceError) as info:
        validate(kind, body)
    assert info.value.status == 400
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")


def test_capture_defaults_null_and_unknown_fields() -> None:
    capture = validate("capture", {"GremlinQuery": "G.V()", "Name": None, "Bogus": 1})
    assert capture == {
        "UUID": "",
        "GremlinQuery": "G.V()",
        "BPFFilter": "",
        "Name": "",
        "Description": "",
        "Type": "",
        "Count": 0,
        "Port": 0,
        "SamplingRate": 1,
        "PollingInterval": 10,
        "RawPacketLimit": 0,
        "HeaderSize": 0,
        "ExtraTCPMetric": False,
        "IPDefrag": False,
        "ReassembleTCP": False,
        "LayerKeyMode": "L2",
        "Target": "",
        "TargetType": "",
    }


def test_capture_crud_and_status_codes(api: Api) -> None:
    c = api.client
    r = c.post("/api/capture", json={"GremlinQuery": "G.V()", "BPFFilter": "tcp"})
    assert r.status_code == 201
    uid = r.json()["UUID"]
    assert r.json()["LayerKeyMode"] == "L2"
    assert c.get("/api/capture").json() == {uid: r.json()}
    assert c.get(f"/api/capture/{uid}").json() == r.json()
    assert c.get(f"/api/capture/{uid}/").status_code == 200
    dup = c.post("/api/capture", json={"GremlinQuery": "G.V()", "BPFFilter": "tcp"})
    assert dup.status_code == 409
    assert uid in dup.json()["Error"]
    other_bpf = c.post("/api/capture", json={"GremlinQuery": "G.V()", "BPFFilter": "udp"})
    assert other_bpf.status_code == 201
    bad = c.post("/api/capture", json={"GremlinQuery": "V("})
    assert bad.status_code == 400
    assert bad.json()["Field"] == "GremlinQuery"
    assert "position 0" in bad.json()["Error"]
    r = c.patch(f"/api/capture/{uid}", json=[{"op": "replace", "path": "/Name", "value": "n"}])
    assert r.status_code == 200
    assert r.json()["Name"] == "n"
    r = c.patch(f"/api/capture/{uid}", json=[{"op": "replace", "path": "/Name", "value": "n"}])
    assert r.status_code == 304
    assert r.content == b""
    r = c.patch(f"/api/capture/{uid}", json=[{"op": "replace", "path": "/UUID", "value": "x"}])
    assert r.status_code == 400
    assert r.json()["Field"] == "UUID"
    r = c.patch(
        f"/api/capture/{uid}", json=[{"op": "replace", "path": "/BPFFilter", "value": "udp"}]
    )
    assert r.status_code == 409
    assert c.delete(f"/api/capture/{uid}").status_code == 200
    assert c.delete(f"/api/capture/{uid}").status_code == 404
    assert c.get(f"/api/capture/{uid}").json() == {"Error": f"capture {uid} not found"}


@pytest.mark.parametrize("kind", ["capture", "alert", "noderule", "edgerule", "node", "edge"])
def test_bad_bodies_are_400(api: Api, kind: str) -> None:
    r = api.client.post(f"/api/{kind}", content=b"{nope")
    assert r.status_code == 400
    assert "not JSON" in r.json()["Error"]
    r = api.client.post(f"/api/{kind}", json=[1])
    assert r.status_code == 400
    assert "JSON object" in r.json()["Error"]
    assert api.client.get(f"/api/{kind}/missing").status_code == 404
    assert api.client.patch(f"/api/{kind}/missing", json=[]).status_code == 404


def test_alert_gets_create_time_which_is_not_patchable(api: Api) -> None:
    r = api.client.post("/api/alert", json={"Expression": "G.V()", "Trigger": "duration:10s"})
    assert r.status_code == 201
    alert = r.json()
    assert alert["CreateTime"].endswith("Z")
    r = api.client.patch(
        f"/api/alert/{alert['UUID']}",
        json=[{"op": "replace", "path": "/CreateTime", "value": "x"}],
    )
    assert r.status_code == 400
    assert r.json()["Field"] == "CreateTime"


def test_given_uuid_is_kept_and_reuse_is_409(api: Api) -> None:
    r = api.client.post("/api/alert", json={"UUID": "mine", "Expression": "G.V()"})
    assert r.status_code == 201
    assert r.json()["UUID"] == "mine"
    assert (
        api.client.post("/api/alert", json={"UUID": "mine", "Expression": "x"}).status_code == 409
    )


def test_node_and_edge_crud_patch_and_persistence(api: Api, tmp_path: Path) -> None:
    c = api.client
    r = c.post("/api/node", json={"Metadata": {"Name": "a", "Type": "device"}})
    assert r.status_code == 201
    a = r.json()
    assert a["Origin"] == "analyzer.h"
    assert a["Revision"] == 1
    b = c.post("/api/node", json={"ID": "b", "Metadata": {"Name": "b", "Type": "device"}}).json()
    assert b["ID"] == "b"
    assert (
        c.post("/api/node", json={"ID": "b", "Metadata": {"Name": "b", "Type": "d"}}).status_code
        == 409
    )
    r = c.post("/api/node", json={"Metadata": {"Name": "b"}})
    assert (r.status_code, r.json()["Field"]) == (400, "Metadata.Type")
    r = c.post(
        "/api/edge", json={"Parent": a["ID"], "Child": "zz", "Metadata": {"RelationType": "l"}}
    )
    assert (r.status_code, r.json()["Field"]) == (400, "Child")
    r = c.post("/api/edge", json={"Parent": a["ID"], "Child": "b", "Metadata": {}})
    assert (r.status_code, r.json()["Field"]) == (400, "Metadata.RelationType")
    r = c.post(
        "/api/edge",
        json={"ID": "e", "Parent": a["ID"], "Child": "b", "Metadata": {"RelationType": "layer2"}},
    )
    assert r.status_code == 201
    assert set(c.get("/api/node").json()) == {a["ID"], "b"}
    assert set(c.get("/api/edge").json()) == {"e"}

    add = [{"op": "add", "path": "/Metadata/Color", "value": "red"}]
    r = c.patch("/api/node/b", json=add)
    assert r.status_code == 200
    assert r.json()["Metadata"]["Color"] == "red"
    assert r.json()["Revision"] == 2
    assert r.json()["UpdatedAt"] >= b["UpdatedAt"]
    assert c.patch("/api/node/b", json=add).status_code == 304
    for path in ("/Metadata/Name", "/Metadata/Type", "/Metadata/TID"):
        r = c.patch("/api/node/b", json=[{"op": "add", "path": path, "value": "x"}])
        assert r.status_code == 400, path
        assert r.json()["Field"] == path[1:].replace("/", ".")
    assert (
        c.patch("/api/node/b", json=[{"op": "add", "path": "/Host", "value": "x"}]).status_code
        == 400
    )
    r = c.patch("/api/edge/e", json=[{"op": "add", "path": "/Metadata/Speed", "value": 10}])
    assert r.status_code == 200
    r = c.patch(
        "/api/edge/e", json=[{"op": "replace", "path": "/Metadata/RelationType", "value": "x"}]
    )
    assert r.status_code == 400

    # a fresh analyzer on the same store gets the nodes and the edge back, patched
    again = Api(tmp_path)
    assert again.graph.nodes["b"].metadata["Color"] == "red"
    assert again.graph.nodes["b"].revision == 2
    assert again.graph.edges["e"].metadata == {"RelationType": "layer2", "Speed": 10}

    assert c.delete("/api/node/b").status_code == 200
    assert c.get("/api/edge/e").status_code == 404  # went with its node
    assert c.delete("/api/node/b").status_code == 404
    third = Api(tmp_path)
    assert set(third.graph.nodes) == {a["ID"]}
    assert not third.graph.edges


def test_stored_edge_to_a_missing_node_comes_back_with_it(api: Api, tmp_path: Path) -> None:
    api.graph.add_node("agentnode", {"Name": "x", "Type": "device"}, origin="agent.a")
    a = api.client.post("/api/node", json={"ID": "a", "Metadata": {"Name": "a", "Type": "d"}})
    assert a.status_code == 201
    body = {"ID": "e", "Parent": "a", "Child": "agentnode", "Metadata": {"RelationType": "l"}}
    assert api.client.post("/api/edge", json=body).status_code == 201
    api.graph.delete_origin("agent.a")  # the agent goes away: the edge with it
    assert "e" not in api.graph.edges
    api.graph.add_node("agentnode", {"Name": "x", "Type": "device"}, origin="agent.a")
    assert "e" in api.graph.edges
    restarted = Api(tmp_path)  # after a restart, the edge waits for the agent's node
    assert "e" not in restarted.graph.edges
    restarted.graph.add_node("agentnode", {"Name": "x", "Type": "device"}, origin="agent.a")
    assert "e" in restarted.graph.edges


def test_rules_through_the_api(api: Api, tmp_path: Path) -> None:
    c = api.client
    api.graph.add_node("x", {"Name": "x", "Type": "device"}, origin="agent.a")
    r = c.post("/api/noderule", json={"Action": "update", "Query": "bad", "Metadata": {"A": 1}})
    assert (r.status_code, r.json()["Field"]) == (400, "Query")
    r = c.post("/api/noderule", json={"Action": "update", "Query": "G.V()x", "Metadata": {"A": 1}})
    assert r.status_code == 201
    update = r.json()["UUID"]
    assert api.graph.nodes["x"].metadata["A"] == 1
    r = c.post(
        "/api/noderule", json={"Action": "create", "Metadata": {"Name": "made", "Type": "device"}}
    )
    assert r.status_code == 201
    create = r.json()["UUID"]
    assert api.graph.get_nodes({"Name": "made"})
    r = c.post(
        "/api/edgerule",
        json={"Src": "G.V()made", "Dst": "G.V()x", "Metadata": {"RelationType": "layer2"}},
    )
    assert r.status_code == 201
    edge_rule = r.json()["UUID"]
    assert len(api.graph.edges) == 1
    r = c.patch(
        f"/api/noderule/{update}", json=[{"op": "replace", "path": "/Metadata", "value": {"B": 2}}]
    )
    assert r.status_code == 200
    assert "A" not in api.graph.nodes["x"].metadata
    assert api.graph.nodes["x"].metadata["B"] == 2

    restarted = Api(tmp_path)  # rules are stored and re-armed
    restarted.graph.add_node("x", {"Name": "x", "Type": "device"}, origin="agent.a")
    restarted.rc.rules.refresh()
    assert restarted.graph.nodes["x"].metadata["B"] == 2
    assert len(restarted.graph.edges) == 1

    assert c.delete(f"/api/edgerule/{edge_rule}").status_code == 200
    assert not api.graph.edges
    assert c.delete(f"/api/noderule/{create}").status_code == 200
    assert not api.graph.get_nodes({"Name": "made"})
    assert c.delete(f"/api/noderule/{update}").status_code == 200
    assert "B" not in api.graph.nodes["x"].metadata


def test_huge_or_deep_bodies_are_refused(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    deep: Any = {"Name": "n", "Type": "t"}
    for _ in range(200):
        deep = {"k": deep}
    r = api.client.post("/api/node", json={"Metadata": {"Name": "n", "Type": "t", "x": deep}})
    assert r.status_code == 400
    assert "nested" in r.json()["Error"]
    monkeypatch.setattr(resources, "MAX_BODY", 100)
    r = api.client.post("/api/capture", json={"GremlinQuery": "G.V()", "Name": "x" * 200})
    assert r.status_code == 413


def test_keys_merged_by_rules_are_not_persisted_with_an_api_node(api: Api, tmp_path: Path) -> None:
    c = api.client
    assert (
        c.post("/api/node", json={"ID": "n", "Metadata": {"Name": "n", "Type": "d"}}).status_code
        == 201
    )
    rule = {"Action": "update", "Query": "G.V()n", "Metadata": {"Rule": 1}}
    assert c.post("/api/noderule", json=rule).status_code == 201
    r = c.patch("/api/node/n", json=[{"op": "add", "path": "/Metadata/Own", "value": 2}])
    assert r.json()["Metadata"] == {"Name": "n", "Type": "d", "Rule": 1, "Own": 2}
    stored = api.rc.store.get("node", "n")
    assert stored is not None
    assert stored["Metadata"] == {"Name": "n", "Type": "d", "Own": 2}


def test_resync_follows_rules_and_captures_changed_behind_our_back(tmp_path: Path) -> None:
    """What an analyzer does when its store tells of another analyzer's changes."""
    ours = Api(tmp_path)
    ours.graph.add_node("x", {"Name": "x", "Type": "device"}, origin="agent.a")
    other = ResourceStore(tmp_path)  # the other analyzer, writing to the shared store
    told: list[str] = []
    ours.rc.captures_changed = lambda: told.append("captures")
    # ours reads through its own store object: make it see the other's writes
    ours.rc.store = other
    ours.rc.elements.store = other

    other.put(
        "noderule",
        "r1",
        {"UUID": "r1", "Action": "update", "Query": "G.V()x", "Metadata": {"A": 1}},
    )
    other.put(
        "node",
        "api1",
        {
            "ID": "api1",
            "Metadata": {"Name": "sw1", "Type": "switch"},
            "Host": "h",
            "Origin": "analyzer.h",
        },
    )
    resync_resources(ours.rc)
    assert ours.graph.nodes["x"].metadata["A"] == 1
    assert ours.graph.nodes["api1"].metadata["Name"] == "sw1"
    assert told == ["captures"]

    changed = other.get("noderule", "r1")
    assert changed is not None
    other.put("noderule", "r1", {**changed, "Metadata": {"B": 2}})
    resync_resources(ours.rc)
    assert "A" not in ours.graph.nodes["x"].metadata
    assert ours.graph.nodes["x"].metadata["B"] == 2

    other.delete("noderule", "r1")
    resync_resources(ours.rc)
    assert "B" not in ours.graph.nodes["x"].metadata
    assert ours.rc.rules.node_rules == {}


def test_resync_follows_api_nodes_and_edges_patched_and_deleted_behind_our_back(
    tmp_path: Path,
) -> None:
    """API nodes and edges: created, patched and deleted by the other analyzer."""
    ours = Api(tmp_path)
    other = ResourceStore(tmp_path)
    ours.rc.store = other
    ours.rc.elements.store = other
    ours.graph.add_node("agent1", {"Name": "eth0", "Type": "veth"}, origin="agent.a")
    for node_id in ("sw1", "sw2"):
        other.put(
            "node",
            node_id,
            {"ID": node_id, "Metadata": {"Name": node_id, "Type": "switch"}, "Host": "h"},
        )
    other.put(
        "edge",
        "e1",
        {"ID": "e1", "Parent": "sw1", "Child": "sw2", "Metadata": {"RelationType": "layer2"}},
    )
    resync_resources(ours.rc)
    assert {"sw1", "sw2"} <= set(ours.graph.nodes)
    assert "e1" in ours.graph.edges

    # patched there: the new metadata here (and keys a rule merged here stay)
    rule = {"Action": "update", "Query": "G.V()sw2", "Metadata": {"Rack": "r1"}}
    assert ours.client.post("/api/noderule", json=rule).status_code == 201
    assert ours.graph.nodes["sw2"].metadata["Rack"] == "r1"
    patched = other.get("node", "sw2")
    assert patched is not None
    other.put("node", "sw2", {**patched, "Metadata": {"Name": "sw2", "Type": "switch", "U": 4}})
    resync_resources(ours.rc)
    assert ours.graph.nodes["sw2"].metadata == {
        "Name": "sw2",
        "Type": "switch",
        "U": 4,
        "Rack": "r1",
    }

    # deleted there (the node with its edge): gone here, and the agent's node stays
    other.delete("edge", "e1")
    other.delete("node", "sw1")
    resync_resources(ours.rc)
    assert "sw1" not in ours.graph.nodes
    assert "e1" not in ours.graph.edges
    assert {"sw2", "agent1"} <= set(ours.graph.nodes)

    # and ours, created and deleted here, are not mistaken for the other's
    r = ours.client.post("/api/node", json={"Metadata": {"Name": "sw3", "Type": "switch"}})
    assert r.status_code in (200, 201), r.text
    resync_resources(ours.rc)
    assert ours.graph.nodes[r.json()["ID"]].metadata["Name"] == "sw3"
