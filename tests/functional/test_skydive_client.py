"""The original Skydive Python client library (PyPI ``skydive-client``) against our analyzer.

Wire compatibility as a user of that library sees it (issue 3, "Tests"): its ``RESTClient``
looks the graph up, creates and patches nodes and edges, manages rules, captures and alerts,
and logs in with a username and a password (``POST /login`` form, then the ``authtoken``
cookie).  Every call goes through the library's own request and parsing code
(``skydive/rest/client.py``), so an answer in a shape it cannot parse fails here.

The library's declared dependencies (autobahn, requests, the ``asyncio`` backport) are only
needed by its WebSocket client; the REST client is urllib-only, hence
``pip install --no-deps skydive-client==0.10.0`` (done by ``.ci/run``).
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    Cluster,
    Pair,
    Skydive,
    start_analyzer,
    start_pair,
    topology,
    uid,
    wait_for,
    wait_topology,
)

rest: Any = pytest.importorskip(
    "skydive.rest.client", reason="pip install --no-deps skydive-client==0.10.0 (.ci/run does)"
)

# The library's model classes, as its client module imports them.
Node = rest.Node
Edge = rest.Edge
NodeRule = rest.NodeRule
EdgeRule = rest.EdgeRule
Capture = rest.Capture
Alert = rest.Alert
BadRequest = rest.BadRequest


def client_for(port: int, **kw: Any) -> Any:
    # cookies={}: the library's default is a shared mutable dict; give each client its own.
    return rest.RESTClient(endpoint=f"127.0.0.1:{port}", scheme="http", cookies={}, **kw)


@pytest.fixture
def analyzer(cluster: Cluster) -> Skydive:
    return start_analyzer(cluster)


@pytest.fixture
def client(analyzer: Skydive) -> Any:
    return client_for(analyzer.analyzer_port)


def error_of(exc: pytest.ExceptionInfo[Exception]) -> str:
    """The ``Error`` of the JSON body the library wraps in ``BadRequest(e.read())``."""
    body = exc.value.args[0]
    return str(json.loads(body)["Error"])


# --- lookups -----------------------------------------------------------------------------


def test_lookup_against_a_real_agent(cluster: Cluster) -> None:
    pair: Pair = start_pair(cluster)
    client = client_for(pair.port)
    host_id = pair.agent.host_id

    hosts = client.lookup_nodes("G.V().Has('Type', 'host')")
    assert hosts and all(isinstance(n, Node) for n in hosts)
    host = next(n for n in hosts if n.id == host_id)
    assert host.host == host_id
    assert host.metadata["Type"] == "host"
    assert host.metadata["Name"]
    assert host.created_at > 0
    assert host.updated_at >= host.created_at

    # the agent's interfaces: 'lo' is owned by the host node
    lo = client.lookup_nodes(f"G.V().Has('Type', 'host', 'Name', '{host.metadata['Name']}')")
    assert [n.id for n in lo] == [host_id]
    los = client.lookup_nodes("G.V().Has('Name', 'lo', 'Type', 'device')")
    assert any(n.host == host_id for n in los)
    owned = client.lookup_nodes(f"G.V('{host_id}').Out().Has('Name', 'lo')")
    assert len(owned) == 1
    assert owned[0].metadata["Name"] == "lo"

    edges = client.lookup_edges(f"G.V('{host_id}').OutE().Has('RelationType', 'ownership')")
    assert edges and all(isinstance(e, Edge) for e in edges)
    assert {e.parent for e in edges} == {host_id}
    assert owned[0].id in {e.child for e in edges}

    # Count() is a bare number, which lookup() without a class hands back unchanged
    topo = topology(pair.port)
    count = client.lookup("G.V().Count()")
    assert isinstance(count, int)
    assert count == len(topo.nodes)
    assert client.lookup("G.V().Has('Type', 'host').Count()") == len(hosts)
    # raw lookup: the JSON objects themselves
    [raw] = client.lookup(f"G.V('{host_id}')")
    assert raw["ID"] == host_id
    assert (raw["Host"], raw["Metadata"]["Type"]) == (host_id, "host")

    # a malformed query: the library raises BadRequest carrying our 400 body
    with pytest.raises(BadRequest) as exc:
        client.lookup("G.V().Has(")
    assert error_of(exc)


# --- nodes and edges ---------------------------------------------------------------------


def test_node_create_update_list_delete(analyzer: Skydive, client: Any) -> None:
    port = analyzer.analyzer_port
    name = uid("sktnode")
    node = client.node_create(host="skt-client-host", metadata={"Name": name, "Type": "device"})
    assert isinstance(node, Node)
    assert node.id
    assert node.host == "skt-client-host"
    assert node.metadata["Name"] == name
    assert node.metadata["Type"] == "device"
    assert node.id in {n.id for n in client.node_list()}
    assert topology(port).by_id[node.id]["Metadata"]["Name"] == name

    # the caller's own ID is kept
    own_id = uid("sktid")
    own = client.node_create(node_id=own_id, metadata={"Name": uid("sktnode"), "Type": "device"})
    assert own.id == own_id
    # ... and a second create with it is refused
    with pytest.raises(BadRequest):
        client.node_create(node_id=own_id, metadata={"Name": "again", "Type": "device"})

    updated = client.node_update(
        node.id, patches=[{"op": "add", "path": "/Metadata/Foo", "value": "bar"}]
    )
    assert isinstance(updated, Node)
    assert updated.id == node.id
    assert updated.metadata["Foo"] == "bar"
    assert updated.metadata["Name"] == name
    assert updated.revision > node.revision
    assert topology(port).by_id[node.id]["Metadata"]["Foo"] == "bar"
    listed = {n.id: n for n in client.node_list()}
    assert listed[node.id].metadata["Foo"] == "bar"
    # the same patch again changes nothing: our 304 is not a 2xx, so urllib (and the library,
    # as against Skydive) raises, with an empty body
    with pytest.raises(BadRequest) as exc:
        client.node_update(
            node.id, patches=[{"op": "add", "path": "/Metadata/Foo", "value": "bar"}]
        )
    assert exc.value.args[0] == b""

    # Name is not patchable
    with pytest.raises(BadRequest) as exc:
        client.node_update(
            node.id, patches=[{"op": "replace", "path": "/Metadata/Name", "value": "x"}]
        )
    assert "Name" in error_of(exc)

    client.node_delete(node.id)
    assert node.id not in {n.id for n in client.node_list()}
    assert node.id not in topology(port).by_id
    with pytest.raises(BadRequest):
        client.node_update(node.id, patches=[{"op": "add", "path": "/Metadata/A", "value": 1}])
    client.node_delete(own_id)
    assert own_id not in topology(port).by_id


def test_edge_create_update_list_delete(analyzer: Skydive, client: Any) -> None:
    port = analyzer.analyzer_port
    a = client.node_create(metadata={"Name": uid("skta"), "Type": "device"})
    b = client.node_create(metadata={"Name": uid("sktb"), "Type": "device"})

    edge = client.edge_create(a.id, b.id, metadata={"RelationType": "layer2"})
    assert isinstance(edge, Edge)
    assert edge.id
    assert (edge.parent, edge.child) == (a.id, b.id)
    assert edge.metadata["RelationType"] == "layer2"
    assert edge.id in {e.id for e in client.edge_list()}
    [seen] = topology(port).edges_between(a.id, b.id, RelationType="layer2")
    assert (seen["ID"], seen["Parent"], seen["Child"]) == (edge.id, a.id, b.id)
    # the lookup side agrees
    [looked] = client.lookup_edges(f"G.E('{edge.id}')")
    assert (looked.parent, looked.child) == (a.id, b.id)
    assert [n.id for n in client.lookup_nodes(f"G.V('{a.id}').Out()")] == [b.id]

    updated = client.edge_update(
        edge.id, patches=[{"op": "add", "path": "/Metadata/Cost", "value": 3}]
    )
    assert isinstance(updated, Edge)
    assert (updated.id, updated.parent, updated.child) == (edge.id, a.id, b.id)
    assert updated.metadata == {"RelationType": "layer2", "Cost": 3}
    assert topology(port).edges_between(a.id, b.id)[0]["Metadata"]["Cost"] == 3
    assert {e.id: e for e in client.edge_list()}[edge.id].metadata["Cost"] == 3

    # an edge to a node that does not exist is refused
    with pytest.raises(BadRequest) as exc:
        client.edge_create(a.id, uid("sktnone"), metadata={"RelationType": "layer2"})
    assert "Child" in error_of(exc)

    client.edge_delete(edge.id)
    assert edge.id not in {e.id for e in client.edge_list()}
    assert not topology(port).edges_between(a.id, b.id)
    client.node_delete(a.id)
    client.node_delete(b.id)


# --- rules -------------------------------------------------------------------------------


def test_node_and_edge_rules(cluster: Cluster) -> None:
    pair = start_pair(cluster)
    port = pair.port
    client = client_for(port)
    host_id = pair.agent.host_id
    name = uid("sktrule")

    create = client.noderule_create("create", metadata={"Name": name, "Type": "device"})
    assert isinstance(create, NodeRule)
    assert create.uuid
    assert create.action == "create"
    assert create.metadata == {"Name": name, "Type": "device"}
    made = wait_topology(port, "the rule's node", lambda t: t.one(Name=name) is not None)
    made_id = made.one(Name=name)["ID"]  # type: ignore[index]
    assert [n.id for n in client.lookup_nodes(f"G.V().Has('Name', '{name}')")] == [made_id]

    update = client.noderule_create(
        "update", metadata={"Foo": "x"}, query="G.V().Has('Type', 'host')"
    )
    assert update.action == "update"
    assert update.query == "G.V().Has('Type', 'host')"
    assert update.metadata == {"Foo": "x"}
    wait_topology(
        port,
        "Foo on the agent's host node",
        lambda t: t.by_id[host_id]["Metadata"].get("Foo") == "x",
    )
    [host] = [n for n in client.lookup_nodes("G.V().Has('Foo', 'x')") if n.id == host_id]
    assert host.metadata["Type"] == "host"

    rules = {r.uuid: r for r in client.noderule_list()}
    assert set(rules) >= {create.uuid, update.uuid}
    assert all(isinstance(r, NodeRule) for r in rules.values())
    assert rules[update.uuid].query == "G.V().Has('Type', 'host')"
    assert rules[create.uuid].metadata == {"Name": name, "Type": "device"}

    link = client.edgerule_create(
        f"G.V().Has('Name', '{name}')", f"G.V('{host_id}')", {"RelationType": "layer2"}
    )
    assert isinstance(link, EdgeRule)
    assert link.uuid
    assert link.src == f"G.V().Has('Name', '{name}')"
    assert link.dst == f"G.V('{host_id}')"
    assert link.metadata == {"RelationType": "layer2"}
    topo = wait_topology(
        port,
        "the edge rule's link",
        lambda t: len(t.edges_between(made_id, host_id, RelationType="layer2")) == 1,
    )
    assert topo.edges_between(made_id, host_id)[0]["Parent"] == made_id
    assert [r.uuid for r in client.edgerule_list()] == [link.uuid]
    assert client.edgerule_list()[0].metadata == {"RelationType": "layer2"}

    client.edgerule_delete(link.uuid)
    assert client.edgerule_list() == []
    wait_topology(port, "the link undone", lambda t: not t.edges_between(made_id, host_id))

    client.noderule_delete(update.uuid)
    wait_topology(port, "Foo undone", lambda t: "Foo" not in t.by_id[host_id]["Metadata"])
    client.noderule_delete(create.uuid)
    wait_topology(port, "the rule's node removed", lambda t: not t.find(Name=name))
    assert client.noderule_list() == []
    assert client.lookup(f"G.V().Has('Name', '{name}').Count()") == 0


# --- captures and alerts -----------------------------------------------------------------


def test_capture_create_list_duplicate_delete(analyzer: Skydive, client: Any) -> None:
    query = "G.V().Has('Name', 'lo')"
    capture = client.capture_create(query, name="skt-capture", bpf_filter="icmp")
    assert isinstance(capture, Capture)
    assert capture.uuid
    assert capture.query == query
    assert capture.name == "skt-capture"
    assert capture.bpf_filter == "icmp"
    assert capture.layer_key_mode == "L2"
    assert capture.polling_interval == 10
    assert capture.sampling_rate == 1

    listed = {c.uuid: c for c in client.capture_list()}
    assert list(listed) == [capture.uuid]
    assert listed[capture.uuid].query == query
    assert listed[capture.uuid].bpf_filter == "icmp"

    # the same query and filter again: our 409 surfaces as the library's BadRequest
    with pytest.raises(BadRequest) as exc:
        client.capture_create(query, bpf_filter="icmp")
    assert error_of(exc)
    # a malformed query: 400 naming the field
    with pytest.raises(BadRequest) as exc:
        client.capture_create("G.V().Has(")
    assert "GremlinQuery" in error_of(exc)

    client.capture_delete(capture.uuid)
    assert client.capture_list() == []
    # deleting it again is a 404
    with pytest.raises(BadRequest):
        client.capture_delete(capture.uuid)


def test_capture_options_round_trip(analyzer: Skydive, client: Any) -> None:
    """Every option capture_create knows is sent under its Skydive name and read back."""
    options: dict[str, Any] = {
        "name": "skt-pcap",
        "description": "all options",
        "extra_tcp_metric": True,
        "ip_defrag": True,
        "reassemble_tcp": True,
        "layer_key_mode": "L3",
        "bpf_filter": "tcp port 80",
        "capture_type": "pcap",
        "raw_pkt_limit": 10,
        "header_size": 256,
        "polling_interval": 5,
        "sampling_rate": 2,
    }
    pcap = client.capture_create("G.V().Has('Name', 'eth0')", **options)
    sflow = client.capture_create(
        "G.V().Has('Name', 'eth0')",
        capture_type="sflow",
        port=6345,
        target="127.0.0.1:6343",
        target_type="sflow",
    )
    listed = {c.uuid: c for c in client.capture_list()}
    assert set(listed) == {pcap.uuid, sflow.uuid}
    for got in (pcap, listed[pcap.uuid]):
        assert {k: getattr(got, k) for k in options} == options
    for got in (sflow, listed[sflow.uuid]):
        assert (got.capture_type, got.port, got.target, got.target_type) == (
            "sflow",
            6345,
            "127.0.0.1:6343",
            "sflow",
        )
    client.capture_delete(pcap.uuid)
    client.capture_delete(sflow.uuid)
    assert client.capture_list() == []


def test_alert_create_list_delete(analyzer: Skydive, client: Any) -> None:
    action = "http://127.0.0.1:1/hook"
    expression = "G.V().Has('Name', 'lo')"
    alert = client.alert_create(action, expression)
    assert isinstance(alert, Alert)
    assert alert.uuid
    assert alert.action == action
    # skydive-client 0.10.0's Alert.from_object (skydive/alerts.py) passes Trigger and
    # Expression in the wrong positional order, so the two attributes come back swapped.
    assert {alert.expression, alert.trigger} == {expression, "graph"}

    listed = {a.uuid: a for a in client.alert_list()}
    assert list(listed) == [alert.uuid]
    assert listed[alert.uuid].action == action
    # what the analyzer stored, unaffected by the library's swap
    r = httpx.get(f"http://127.0.0.1:{analyzer.analyzer_port}/api/alert/{alert.uuid}", timeout=5)
    assert r.status_code == 200
    stored = r.json()
    assert (stored["Action"], stored["Expression"], stored["Trigger"]) == (
        action,
        expression,
        "graph",
    )

    client.alert_delete(alert.uuid)
    assert client.alert_list() == []


# --- authentication ----------------------------------------------------------------------

ADMIN = ("sktadmin", "sktadm1n-pw")
GUEST = ("sktguest", "sktgu3st-pw")


@pytest.fixture
def secured(cluster: Cluster, tmp_path: Path) -> Skydive:
    env = {
        "SKYDIVE_AUTH_sktapi": (
            f"{{type: basic, users: {{{ADMIN[0]}: {ADMIN[1]}, {GUEST[0]}: {GUEST[1]}}},"
            f" roles: {{{GUEST[0]}: guest}}}}"
        ),
        "SKYDIVE_ANALYZER_AUTH_API_BACKEND": "sktapi",
        "SKYDIVE_ANALYZER_DATA_DIR": str(tmp_path / "secured-data"),
    }
    analyzer = cluster.spawn("analyzer", extra=env)

    def up() -> bool:
        url = f"http://127.0.0.1:{analyzer.analyzer_port}/api"
        return httpx.get(url, auth=ADMIN, timeout=2).status_code == 200

    wait_for("the secured analyzer API", up, timeout=20)
    return analyzer


def test_login_with_username_and_password(secured: Skydive) -> None:
    port = secured.analyzer_port
    client = client_for(port, username=ADMIN[0], password=ADMIN[1])
    assert client.lookup("G.V().Count()") == 0
    # the library logged in through POST /login and keeps the authtoken cookie
    assert client.auth.authenticated
    assert client.auth.token
    assert "authtoken" in {c.name for c in client.auth.cookie_jar}
    r = httpx.get(
        f"http://127.0.0.1:{port}/api/status", headers={"X-Auth-Token": client.auth.token}
    )
    assert r.status_code == 200

    node = client.node_create(metadata={"Name": uid("sktauth"), "Type": "device"})
    assert node.id in {n.id for n in client.node_list()}
    rule = client.noderule_create("create", metadata={"Name": uid("sktauth"), "Type": "device"})
    assert rule.uuid in {r.uuid for r in client.noderule_list()}
    client.noderule_delete(rule.uuid)
    client.node_delete(node.id)
    assert client.lookup("G.V().Count()") == 0


def test_guest_reads_but_cannot_write(secured: Skydive) -> None:
    guest = client_for(secured.analyzer_port, username=GUEST[0], password=GUEST[1])
    assert guest.lookup("G.V().Count()") == 0
    assert guest.node_list() == []
    with pytest.raises(BadRequest) as exc:
        guest.node_create(metadata={"Name": uid("sktguest"), "Type": "device"})
    assert "guest" in error_of(exc)
    # the library logs out after any error and logs in again on the next call
    assert guest.capture_list() == []


def test_wrong_or_missing_credentials(secured: Skydive) -> None:
    port = secured.analyzer_port
    # A wrong password fails at the library's login (skydive/auth.py, Authenticate.login):
    # it does not wrap that request, so the 401 arrives as urllib's HTTPError.
    wrong = client_for(port, username=ADMIN[0], password="wrong")
    with pytest.raises(urllib.error.HTTPError) as login:
        wrong.lookup("G.V().Count()")
    assert login.value.code == 401
    login.value.close()
    assert not wrong.auth.authenticated
    with pytest.raises(urllib.error.HTTPError) as login:
        wrong.node_create(metadata={"Name": "nope", "Type": "device"})
    assert login.value.code == 401
    login.value.close()

    # No credentials: no login, the API request itself is refused -> BadRequest.
    anonymous = client_for(port)
    with pytest.raises(BadRequest) as exc:
        anonymous.lookup("G.V().Count()")
    assert error_of(exc) == "authentication required"
    with pytest.raises(BadRequest):
        anonymous.node_create(metadata={"Name": "nope", "Type": "device"})
    with pytest.raises(BadRequest):
        anonymous.capture_list()

    # nothing got through
    r = httpx.get(f"http://127.0.0.1:{port}/api/node", auth=ADMIN, timeout=5)
    assert r.json() == {}
