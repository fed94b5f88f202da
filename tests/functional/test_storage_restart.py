"""The analyzer's storage as a user meets it, on both backends: captures, flows and topology
history survive an analyzer restart; /api/pcap flows land in history at their own timestamps;
with Elasticsearch stopped during ingest the analyzer keeps serving, reports its backlog in
/api/status and loses nothing once the node is back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    Cluster,
    Kernel,
    Skydive,
    api_up,
    sh,
    start_agent,
    status,
    topology,
    wait_for,
    wait_node,
)
from es_fixtures import load_module

pytestmark = [pytest.mark.slow]


_TESTS = Path(__file__).resolve().parents[1]
pcap_sample = load_module("pcap_sample", _TESTS / "unit" / "analyzer" / "pcap_sample.py")
T0_MS: int = pcap_sample.T0_MS


@pytest.fixture(params=["embedded", "elasticsearch"])
def storage_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Environment selecting the backend under test for an analyzer."""
    if request.param == "embedded":
        return {}  # the default: the embedded store in analyzer.data_dir
    node = request.getfixturevalue("es_node")
    prefix = request.getfixturevalue("es_prefix")
    entry = {"driver": "elasticsearch", "hosts": [node.url], "index_prefix": prefix}
    return {
        "SKYDIVE_STORAGE_es": json.dumps({**entry, "bulk_maxdelay": 0.1}),
        "SKYDIVE_ANALYZER_TOPOLOGY_BACKEND": "es",
        "SKYDIVE_ANALYZER_FLOW_BACKEND": "es",
    }


def start(cluster: Cluster, env: dict[str, str]) -> Skydive:
    analyzer = cluster.spawn("analyzer", extra=env)
    wait_for("the analyzer API", lambda: api_up(analyzer.analyzer_port), timeout=30)
    return analyzer


def restart(analyzer: Skydive) -> None:
    assert analyzer.stop() == 0, analyzer.log()[-3000:]
    analyzer.start()
    wait_for("the analyzer API again", lambda: api_up(analyzer.analyzer_port), timeout=30)


def gremlin(port: int, query: str) -> Any:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/topology", json={"GremlinQuery": query}, timeout=30
    )
    assert r.status_code == 200, f"{query}: {r.status_code} {r.text}"
    return r.json()


def upload_pcap(port: int) -> None:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/pcap", content=pcap_sample.sample_pcap(), timeout=30
    )
    assert r.status_code == 200, r.text


def storage_idle(port: int) -> bool:
    s = status(port)["Storage"]
    return all(role["Connected"] and role["Backlog"] == 0 for role in s.values())


#: The window of the sample pcap's packets (T0_MS .. T0_MS + 1 s) as G.At's arguments.
PCAP_WINDOW = f"{(T0_MS + 1000)}, 2"


def test_captures_flows_and_history_survive_a_restart(
    cluster: Cluster, kernel: Kernel, storage_env: dict[str, str]
) -> None:
    analyzer = start(cluster, storage_env)
    port = analyzer.analyzer_port
    agent = start_agent(cluster, analyzer)

    veth = kernel.link_name()
    sh(f"ip link add {veth} type veth peer name {veth}p")
    node = wait_node(port, Name=veth)
    seen_at = int(time.time() * 1000)
    time.sleep(0.05)
    sh(f"ip link del {veth}")
    wait_for("the veth gone", lambda: not topology(port).find(Name=veth))

    capture = {"GremlinQuery": "G.V().Has('Name', 'sktnothing')", "Type": "pcap"}
    r = httpx.post(f"http://127.0.0.1:{port}/api/capture", json=capture, timeout=10)
    assert r.status_code == 201, r.text
    capture_id = r.json()["UUID"]
    upload_pcap(port)
    wait_for(  # in history within moments (writes are buffered, never waited for)
        "the pcap's flows in history",
        lambda: gremlin(port, f"G.At({PCAP_WINDOW}).Flows().Count()") == 3,
        timeout=30,
    )
    wait_for("storage written", lambda: storage_idle(port), timeout=30)

    restart(analyzer)
    wait_for("the agent back", lambda: topology(port).by_id.get(agent.host_id), timeout=30)

    # the capture is still there (and still an on-demand capture)
    captures = httpx.get(f"http://127.0.0.1:{port}/api/capture", timeout=10).json()
    assert capture_id in captures
    assert captures[capture_id]["GremlinQuery"] == capture["GremlinQuery"]
    # the graph as it was before the restart
    past = gremlin(port, f"G.At({seen_at}).V().Has('Name', '{veth}')")
    assert [n["ID"] for n in past] == [node["ID"]]
    assert agent.host_id in {n["ID"] for n in gremlin(port, f"G.At({seen_at}).V()")}
    # the pcap's flows, at their own timestamps, with their metric history
    flows = gremlin(port, f"G.At({PCAP_WINDOW}).Flows().Has('Network', '10.0.0.2')")
    assert sorted(f["LayersPath"] for f in flows) == ["Ethernet/IPv4/ICMPv4", "Ethernet/IPv4/TCP"]
    tcp = gremlin(port, f"G.At({PCAP_WINDOW}).Flows().Has('Transport.Protocol', 'TCP')")
    assert [(f["Start"], f["Last"]) for f in tcp] == [(T0_MS + 100, T0_MS + 202)]
    metrics = gremlin(port, f"G.At({PCAP_WINDOW}).Flows().Has('Transport', 80).Metrics()")
    [by_uuid] = metrics
    assert list(by_uuid) == [tcp[0]["UUID"]]
    assert sum(m["ABPackets"] for m in by_uuid[tcp[0]["UUID"]]) == 4
    # nothing of that is in the live view: those flows ended years ago
    assert gremlin(port, "G.Flows().Has('Transport', 80).Count()") == 0
    assert status(port)["Storage"]["Topology"]["Backend"] in ("embedded", "elasticsearch")


def test_elasticsearch_stopped_during_ingest_loses_nothing(
    cluster: Cluster, kernel: Kernel, es_node: Any, es_prefix: str
) -> None:
    env = {
        "SKYDIVE_STORAGE_es": json.dumps(
            {
                "driver": "elasticsearch",
                "hosts": [es_node.url],
                "index_prefix": es_prefix,
                "bulk_maxdelay": 0.1,
            }
        ),
        "SKYDIVE_ANALYZER_TOPOLOGY_BACKEND": "es",
        "SKYDIVE_ANALYZER_FLOW_BACKEND": "es",
    }
    analyzer = start(cluster, env)
    port = analyzer.analyzer_port
    start_agent(cluster, analyzer)
    wait_for("storage written", lambda: storage_idle(port), timeout=30)

    es_node.stop()  # down during ingest
    try:
        veths = [kernel.link_name() for _ in range(3)]
        for veth in veths:
            sh(f"ip link add {veth} type veth peer name {veth}p")
        for veth in veths:
            wait_node(port, Name=veth)
        upload_pcap(port)
        # still serving the live graph, and saying that storage is behind
        assert gremlin(port, f"G.V().Has('Name', '{veths[0]}').Count()") == 1

        def behind() -> dict[str, Any] | None:
            topo: dict[str, Any] = status(port)["Storage"]["Topology"]
            return topo if not topo["Connected"] and topo["Backlog"] > 0 else None

        storage = wait_for("the backlog reported", behind, timeout=30)
        assert storage["Backend"] == "elasticsearch" and storage["LastError"]
        seen_at = int(time.time() * 1000)
    finally:
        es_node.restart()

    wait_for("the backlog written", lambda: storage_idle(port), timeout=90)
    assert status(port)["Storage"]["Topology"]["Dropped"] == 0
    wait_for(  # written, and searchable after the index's next refresh
        "the veths made while Elasticsearch was down, in history",
        lambda: (
            set(veths)
            <= set(gremlin(port, f"G.At({seen_at}).V().Has('Type', 'veth').Values('Name')"))
        ),
        timeout=30,
    )
    wait_for(
        "the pcap's flows in history",
        lambda: gremlin(port, f"G.At({PCAP_WINDOW}).Flows().Count()") == 3,
        timeout=30,
    )


def test_a_foreign_data_dir_stops_the_analyzer_with_its_path(cluster: Cluster) -> None:
    data = cluster.tmp / "not-a-store"
    data.mkdir()
    (data / "thesis.odt").write_bytes(b"precious")
    analyzer = cluster.spawn("analyzer", extra={"SKYDIVE_ANALYZER_DATA_DIR": str(data)})
    assert analyzer.proc is not None
    assert analyzer.proc.wait(30) == 1
    lines = [line for line in analyzer.log().splitlines() if line.startswith("skydive: ")]
    assert lines == [
        f"skydive: {data}: not a pyskydive embedded store (no FORMAT file; holds thesis.odt)"
    ]
    assert "Traceback" not in analyzer.log()
    assert sorted(p.name for p in data.iterdir()) == ["thesis.odt"]  # nothing written


def test_an_incompatible_elasticsearch_mapping_stops_the_analyzer_naming_the_index(
    cluster: Cluster, es_node: Any, es_prefix: str
) -> None:
    index = f"{es_prefix}flow_v1-000001"
    r = httpx.put(
        f"{es_node.url}/{index}",
        json={
            "aliases": {f"{es_prefix}flow": {"is_write_index": True}},
            "mappings": {"properties": {"Start": {"type": "text"}}},
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    env = {
        "SKYDIVE_STORAGE_es": json.dumps(
            {"driver": "elasticsearch", "hosts": [es_node.url], "index_prefix": es_prefix}
        ),
        "SKYDIVE_ANALYZER_FLOW_BACKEND": "es",
    }
    analyzer = cluster.spawn("analyzer", extra=env)
    assert analyzer.proc is not None
    assert analyzer.proc.wait(60) == 1
    lines = [line for line in analyzer.log().splitlines() if line.startswith("skydive: ")]
    assert len(lines) == 1 and index in lines[0] and "mapped as" in lines[0], analyzer.log()
    assert "Traceback" not in analyzer.log()


def test_two_analyzers_on_one_elasticsearch_share_captures_rules_and_api_nodes(
    cluster: Cluster, es_node: Any, es_prefix: str
) -> None:
    entry = {"driver": "elasticsearch", "hosts": [es_node.url], "index_prefix": es_prefix}
    env = {
        "SKYDIVE_STORAGE_es": json.dumps({**entry, "bulk_maxdelay": 0.1}),
        "SKYDIVE_ANALYZER_TOPOLOGY_BACKEND": "es",
        "SKYDIVE_ANALYZER_FLOW_BACKEND": "es",
    }
    first, second = start(cluster, env), start(cluster, env)
    a, b = first.analyzer_port, second.analyzer_port

    capture = {"GremlinQuery": "G.V().Has('Name', 'sktshared')", "Type": "pcap"}
    r = httpx.post(f"http://127.0.0.1:{a}/api/capture", json=capture, timeout=10)
    assert r.status_code == 201, r.text
    capture_id = r.json()["UUID"]
    rule = {"Action": "create", "Metadata": {"Name": "sktswitch", "Type": "switch"}}
    r = httpx.post(f"http://127.0.0.1:{a}/api/noderule", json=rule, timeout=10)
    assert r.status_code == 201, r.text

    def on_second(path: str) -> dict[str, Any]:
        got: dict[str, Any] = httpx.get(f"http://127.0.0.1:{b}{path}", timeout=10).json()
        return got

    wait_for("the capture on the second analyzer", lambda: capture_id in on_second("/api/capture"))
    # the rule is applied there too: its node exists in the second analyzer's graph
    wait_for("the rule's node on the second", lambda: topology(b).one(Name="sktswitch"))

    r = httpx.delete(f"http://127.0.0.1:{b}/api/capture/{capture_id}", timeout=10)
    assert r.status_code == 200, r.text
    wait_for(
        "the deletion seen by the first",
        lambda: capture_id not in httpx.get(f"http://127.0.0.1:{a}/api/capture", timeout=10).json(),
    )

    # an API node: created on the first, patched on the second, deleted on the first
    node = {"Metadata": {"Name": "sktapinode", "Type": "device"}}
    r = httpx.post(f"http://127.0.0.1:{a}/api/node", json=node, timeout=10)
    assert r.status_code in (200, 201), r.text
    node_id = r.json()["ID"]
    wait_for("the API node on the second", lambda: topology(b).one(Name="sktapinode"))
    patch = [{"op": "add", "path": "/Metadata/Rack", "value": "r7"}]
    r = httpx.patch(f"http://127.0.0.1:{b}/api/node/{node_id}", json=patch, timeout=10)
    assert r.status_code == 200, r.text

    def rack_on_first() -> bool:
        found = topology(a).one(Name="sktapinode")
        return found is not None and found["Metadata"].get("Rack") == "r7"

    wait_for("the patch seen by the first", rack_on_first)
    r = httpx.delete(f"http://127.0.0.1:{a}/api/node/{node_id}", timeout=10)
    assert r.status_code == 200, r.text
    wait_for("the deletion seen by the second", lambda: not topology(b).find(Name="sktapinode"))
