"""REST resources against a live analyzer: every resource and status code, rules live and
undone, everything persisted across a restart, a corrupt store refused at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    Cluster,
    Skydive,
    api_up,
    free_port,
    start_agent,
    topology,
    uid,
    wait_for,
    wait_topology,
)


def start(
    cluster: Cluster, data_dir: Path, port: int | None = None, host: str | None = None
) -> Skydive:
    analyzer = cluster.spawn(
        "analyzer",
        host_id=host,
        analyzer_port=port,
        extra={"SKYDIVE_ANALYZER_DATA_DIR": str(data_dir)},
    )
    wait_for("the analyzer API", lambda: api_up(analyzer.analyzer_port), timeout=20)
    return analyzer


class Api:
    def __init__(self, port: int) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=5)

    def post(self, kind: str, body: Any, status: int = 201) -> Any:
        r = self.http.post(f"/{kind}", json=body)
        assert r.status_code == status, r.text
        return r.json()

    def patch(self, path: str, patch: Any, status: int = 200) -> Any:
        r = self.http.patch(path, json=patch)
        assert r.status_code == status, r.text
        return r.json() if r.content else None

    def get(self, path: str, status: int = 200) -> Any:
        r = self.http.get(path)
        assert r.status_code == status, r.text
        return r.json()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def delete(self, path: str, status: int = 200) -> None:
        r = self.http.delete(path)
        assert r.status_code == status, r.text


@pytest.fixture
def api(cluster: Cluster, tmp_path: Path) -> Iterator[Api]:
    with Api(start(cluster, tmp_path / "data").analyzer_port) as a:
        yield a


BODIES: dict[str, dict[str, Any]] = {
    "capture": {"GremlinQuery": "G.V().Has('Type', 'host')", "BPFFilter": "tcp"},
    "alert": {"Expression": "G.V().Has('Type', 'host')", "Action": "http://127.0.0.1:1/hook"},
    "noderule": {"Action": "create", "Metadata": {"Name": "made", "Type": "device"}},
    "edgerule": {
        "Src": "G.V().Has('Name', 'nobody')",
        "Dst": "G.V().Has('Name', 'nobody')",
        "Metadata": {"RelationType": "layer2"},
    },
    "node": {"Metadata": {"Name": "n1", "Type": "device"}},
}
BAD: dict[str, tuple[dict[str, Any], str]] = {
    "capture": ({}, "GremlinQuery"),
    "alert": ({"Expression": 1}, "Expression"),
    "noderule": ({"Metadata": {"A": 1}}, "Action"),
    "edgerule": ({"Src": "G.V()", "Dst": "G.V()", "Metadata": {}}, "Metadata"),
    "node": ({"Metadata": {"Type": "device"}}, "Metadata.Name"),
}


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_crud_and_status_codes(api: Api, kind: str) -> None:
    created = api.post(kind, BODIES[kind])
    rid = created.get("UUID") or created["ID"]
    assert api.get(f"/{kind}")[rid] == created
    assert api.get(f"/{kind}/{rid}") == created
    path = "/Description" if kind not in ("node",) else "/Metadata/Description"
    changed = api.patch(f"/{kind}/{rid}", [{"op": "add", "path": path, "value": "d"}])
    assert changed != created
    assert api.patch(f"/{kind}/{rid}", [{"op": "add", "path": path, "value": "d"}], 304) is None
    body, field = BAD[kind]
    bad = api.post(kind, body, 400)
    assert field in bad["Error"]
    assert bad["Field"] == field
    r = api.http.post(f"/{kind}", content=b"not json")
    assert r.status_code == 400
    assert "not JSON" in r.json()["Error"]
    api.delete(f"/{kind}/{rid}")
    assert "Error" in api.get(f"/{kind}/{rid}", 404)
    api.delete(f"/{kind}/{rid}", 404)
    api.patch(f"/{kind}/{rid}", [], 404)


def test_capture_defaults_and_duplicates(api: Api) -> None:
    capture = api.post("capture", {"GremlinQuery": "G.V()"})
    assert capture["LayerKeyMode"] == "L2"
    assert capture["Type"] == ""
    assert capture["SamplingRate"] == 1
    assert capture["PollingInterval"] == 10
    assert "Error" in api.post("capture", {"GremlinQuery": "G.V()"}, 409)
    api.post("capture", {"GremlinQuery": "G.V()", "BPFFilter": "udp"})
    bad = api.post("capture", {"GremlinQuery": "G.V().Has("}, 400)
    assert bad["Field"] == "GremlinQuery"
    bad = api.post("capture", {"GremlinQuery": "G.V()", "HeaderSize": "big"}, 400)
    assert bad["Field"] == "HeaderSize"
    alert = api.post("alert", {"Expression": "G.V()"})
    assert alert["CreateTime"]
    assert alert["Trigger"] == "graph"


def test_node_and_edge_patch_rules(api: Api) -> None:
    a = api.post("node", {"Metadata": {"Name": "a", "Type": "device", "TID": "t"}})
    b = api.post("node", {"ID": uid("sktn"), "Metadata": {"Name": "b", "Type": "device"}})
    api.post("node", {"ID": b["ID"], "Metadata": {"Name": "b", "Type": "device"}}, 409)
    edge = api.post(
        "edge", {"Parent": a["ID"], "Child": b["ID"], "Metadata": {"RelationType": "layer2"}}
    )
    assert (
        api.post(
            "edge", {"Parent": a["ID"], "Child": "nope", "Metadata": {"RelationType": "x"}}, 400
        )["Field"]
        == "Child"
    )
    patched = api.patch(f"/node/{a['ID']}", [{"op": "add", "path": "/Metadata/MTU", "value": 9000}])
    assert patched["Revision"] == a["Revision"] + 1
    assert patched["UpdatedAt"] >= a["UpdatedAt"]
    for key in ("Name", "Type", "TID"):
        bad = api.patch(
            f"/node/{a['ID']}", [{"op": "replace", "path": f"/Metadata/{key}", "value": "x"}], 400
        )
        assert bad["Field"] == f"Metadata.{key}"
    api.patch(f"/node/{a['ID']}", [{"op": "replace", "path": "/Origin", "value": "x"}], 400)
    e = api.patch(f"/edge/{edge['ID']}", [{"op": "add", "path": "/Metadata/Cost", "value": 3}])
    assert e["Metadata"] == {"RelationType": "layer2", "Cost": 3}
    api.delete(f"/node/{b['ID']}")
    api.get(f"/edge/{edge['ID']}", 404)


def test_rules_are_live_and_undone(api: Api) -> None:
    port = int(str(api.http.base_url).rsplit(":", 1)[1].split("/")[0])
    bad = api.post("noderule", {"Action": "update", "Query": "G.V(", "Metadata": {"A": 1}}, 400)
    assert bad["Field"] == "Query"
    update = api.post(
        "noderule",
        {"Action": "update", "Query": "G.V().Has('Type', 'sktdev')", "Metadata": {"Color": "red"}},
    )
    create = api.post("noderule", {"Action": "create", "Metadata": {"Name": "hub", "Type": "sw"}})
    link = api.post(
        "edgerule",
        {
            "Src": "G.V().Has('Name', 'hub')",
            "Dst": "G.V().Has('Type', 'sktdev')",
            "Metadata": {"RelationType": "layer2"},
        },
    )
    hub = topology(port).one(Name="hub")
    assert hub is not None
    # a node that appears later gets the metadata and the edge
    n = api.post("node", {"Metadata": {"Name": "late", "Type": "sktdev"}})
    topo = wait_topology(
        port,
        "the rules applied to the new node",
        lambda t: (
            t.by_id[n["ID"]]["Metadata"].get("Color") == "red"
            and len(t.edges_between(hub["ID"], n["ID"], RelationType="layer2")) == 1
        ),
    )
    assert topo.edges_between(hub["ID"], n["ID"])[0]["Parent"] == hub["ID"]
    api.delete(f"/edgerule/{link['UUID']}")
    assert not topology(port).edges_between(hub["ID"], n["ID"])
    api.delete(f"/noderule/{update['UUID']}")
    assert "Color" not in api.get(f"/node/{n['ID']}")["Metadata"]
    api.delete(f"/noderule/{create['UUID']}")
    assert topology(port).one(Name="hub") is None


def test_everything_survives_a_restart(cluster: Cluster, tmp_path: Path) -> None:
    data, port, host = tmp_path / "data", free_port(), uid("skthost")
    analyzer = start(cluster, data, port, host)
    with Api(port) as api:
        _survives(cluster, analyzer, api, data, port, host)


def _survives(
    cluster: Cluster, analyzer: Skydive, api: Api, data: Path, port: int, host: str
) -> None:
    capture = api.post("capture", {"GremlinQuery": "G.V()"})
    alert = api.post("alert", {"Expression": "G.V()"})
    rule = api.post("noderule", {"Action": "create", "Metadata": {"Name": "hub", "Type": "sw"}})
    a = api.post("node", {"Metadata": {"Name": "a", "Type": "device"}})
    a = api.patch(f"/node/{a['ID']}", [{"op": "add", "path": "/Metadata/K", "value": "v"}])
    hub = topology(port).one(Name="hub")
    assert hub is not None
    edge = api.post(
        "edge", {"Parent": hub["ID"], "Child": a["ID"], "Metadata": {"RelationType": "l2"}}
    )
    assert analyzer.stop() == 0
    start(cluster, data, port, host)
    assert api.get("/capture") == {capture["UUID"]: capture}
    assert api.get("/alert") == {alert["UUID"]: alert}
    assert api.get("/noderule") == {rule["UUID"]: rule}
    assert api.get(f"/node/{a['ID']}") == a
    assert api.get(f"/node/{hub['ID']}")["Metadata"] == {"Name": "hub", "Type": "sw"}
    assert api.get(f"/edge/{edge['ID']}") == edge
    api.post("capture", {"GremlinQuery": "G.V()"}, 409)


def test_corrupt_store_is_one_line_at_start_up(cluster: Cluster, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "resources.json").write_text("{oops")
    analyzer = cluster.spawn("analyzer", extra={"SKYDIVE_ANALYZER_DATA_DIR": str(data)})
    assert analyzer.proc is not None
    assert analyzer.proc.wait(20) == 1
    log = analyzer.log()
    assert f"{data / 'resources.json'} is corrupt" in log
    assert "Traceback" not in log


def test_rules_follow_an_agent(cluster: Cluster, tmp_path: Path) -> None:
    analyzer = start(cluster, tmp_path / "data")
    port = analyzer.analyzer_port
    with Api(port) as api:
        rule = api.post(
            "noderule",
            {"Action": "update", "Query": "G.V().Has('Type', 'host')", "Metadata": {"Rack": "r1"}},
        )
        ext = api.post("node", {"Metadata": {"Name": "tor", "Type": "switch"}})
        link = api.post(
            "edgerule",
            {
                "Src": "G.V().Has('Name', 'tor')",
                "Dst": "G.V().Has('Type', 'host')",
                "Metadata": {"RelationType": "layer2"},
            },
        )
        agent = start_agent(cluster, analyzer)
        host = agent.host_id
        wait_topology(
            port,
            "the rules applied to the agent's host node",
            lambda t: (
                t.by_id[host]["Metadata"].get("Rack") == "r1"
                and len(t.edges_between(ext["ID"], host, RelationType="layer2")) == 1
            ),
            timeout=20,
        )
        api.delete(f"/noderule/{rule['UUID']}")
        api.delete(f"/edgerule/{link['UUID']}")
        topo = topology(port)
        assert "Rack" not in topo.by_id[host]["Metadata"]
        assert not topo.edges_between(ext["ID"], host)
