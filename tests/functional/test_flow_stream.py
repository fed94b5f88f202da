"""/ws/subscriber/flow against a real analyzer: a pcap posted to /api/pcap reaches every
subscriber as one ``flow``/``store`` message holding exactly the flows G.Flows() then returns;
namespaces and X-Gremlin-Filter select what each subscriber gets."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Cluster, Subscriber, start_analyzer
from websockets.exceptions import ConnectionClosed

_SPEC = importlib.util.spec_from_file_location(
    "pcap_sample", Path(__file__).resolve().parents[1] / "unit" / "analyzer" / "pcap_sample.py"
)
assert _SPEC is not None and _SPEC.loader is not None
pcap_sample = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pcap_sample)

PATH = "/ws/subscriber/flow"


def query(port: int, gremlin: str) -> Any:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/topology", json={"GremlinQuery": gremlin}, timeout=10
    )
    assert r.status_code == 200, r.text
    return r.json()


def upload(port: int) -> dict[str, Any]:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/pcap", content=pcap_sample.sample_pcap(), timeout=30
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def packets(flows: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    return {f["UUID"]: (f["Metric"]["ABPackets"], f["Metric"]["BAPackets"]) for f in flows}


def test_subscribers_receive_the_flows_of_a_pcap(cluster: Cluster) -> None:
    port = start_analyzer(cluster).analyzer_port
    every = Subscriber(port, PATH)
    tcp_only = Subscriber(
        port, PATH, **{"X-Gremlin-Filter": "G.Flows().Has('Transport.Protocol', 'TCP')"}
    )
    stats_only = Subscriber(port, PATH, **{"X-Websocket-Namespace": "stats"})
    with every, tcp_only, stats_only:
        summary = upload(port)
        msg = every.recv()
        assert (msg["Namespace"], msg["Type"]) == ("flow", "store")
        stored = query(port, "G.Flows()")
        assert len(stored) == summary["Flows"] == 3
        assert packets(msg["Obj"]) == packets(stored)
        by_proto = {_last(f): packets([f])[f["UUID"]] for f in msg["Obj"]}
        assert by_proto == {"ICMPv4": (1, 1), "TCP": (4, 2), "DNS": (1, 0)}

        msg = tcp_only.recv()
        assert (msg["Namespace"], msg["Type"]) == ("flow", "store")
        tcp = query(port, "G.Flows().Has('Transport.Protocol', 'TCP')")
        assert [f["UUID"] for f in msg["Obj"]] == [f["UUID"] for f in tcp]
        assert packets(msg["Obj"]) == packets(tcp)

        # a second upload: a new batch, with new flows, for everybody
        second = upload(port)
        msg = every.recv()
        assert {f["CaptureID"] for f in msg["Obj"]} == {second["CaptureID"]}
        assert len(msg["Obj"]) == 3
        assert len(tcp_only.recv()["Obj"]) == 1

        with pytest.raises(TimeoutError):  # the stats namespace carries no flows
            stats_only.recv(timeout=0.5)


def _last(flow: dict[str, Any]) -> str:
    return str(flow["LayersPath"]).rsplit("/", 1)[-1]


def test_per_capture_namespace_and_bad_filter(cluster: Cluster) -> None:
    port = start_analyzer(cluster).analyzer_port
    first = upload(port)
    capture_ns = f"flow/{first['CaptureID']}"
    with Subscriber(port, PATH, **{"X-Websocket-Namespace": capture_ns}) as one_capture:
        upload(port)  # another capture: not for this subscriber
        with pytest.raises(TimeoutError):
            one_capture.recv(timeout=0.5)

    bad = Subscriber(port, PATH, **{"X-Gremlin-Filter": "G.V().Has('Type', 'host')"})
    with bad:
        msg = bad.recv()
        assert (msg["Namespace"], msg["Type"]) == ("flow", "Error")
        assert "X-Gremlin-Filter" in msg["Obj"]["Error"]
        with pytest.raises(ConnectionClosed):
            bad.recv(timeout=5)
    # the analyzer carries on
    assert query(port, "G.Flows().Count()") == 6
