"""POST /api/pcap against a real analyzer: flows built from the packets' own timestamps and
queryable through POST /api/topology (G.Flows()...); a bad pcap is a 400 and adds no flow."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import httpx
from conftest import Cluster, start_analyzer, status

# The sample capture is shared with the unit tests (one builder, two users).
_SPEC = importlib.util.spec_from_file_location(
    "pcap_sample", Path(__file__).resolve().parents[1] / "unit" / "analyzer" / "pcap_sample.py"
)
assert _SPEC is not None and _SPEC.loader is not None
pcap_sample = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pcap_sample)
sample_pcap = pcap_sample.sample_pcap
A, B, T0_MS = pcap_sample.A, pcap_sample.B, pcap_sample.T0_MS


def query(port: int, gremlin: str) -> Any:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/topology", json={"GremlinQuery": gremlin}, timeout=10
    )
    assert r.status_code == 200, r.text
    return r.json()


def upload(port: int, body: bytes) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/api/pcap", content=body, timeout=30)


def test_pcap_upload_builds_queryable_flows(cluster: Cluster) -> None:
    port = start_analyzer(cluster).analyzer_port
    assert query(port, "G.Flows().Count()") == 0
    r = upload(port, sample_pcap())
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["Packets"] == 9 and summary["Flows"] == 3 and summary["DecodeErrors"] == 0
    capture_id = summary["CaptureID"]
    assert query(port, "G.Flows().Count()") == 3
    assert status(port)["Flows"]["Flows"] == 3

    # B is 10.0.0.2 for the ICMP and TCP flows: Has('Network', x) matches A or B
    flows = query(port, "G.Flows().Has('Network', '10.0.0.2')")
    by_path = {f["LayersPath"]: f for f in flows}
    assert sorted(by_path) == ["Ethernet/IPv4/ICMPv4", "Ethernet/IPv4/TCP"]
    icmp = by_path["Ethernet/IPv4/ICMPv4"]
    assert (icmp["Network"]["A"], icmp["Network"]["B"]) == (A, B)
    assert (icmp["Metric"]["ABPackets"], icmp["Metric"]["BAPackets"]) == (1, 1)
    assert icmp["ICMP"]["ID"] == 7
    # Start/Last come from the pcap, not from the wall clock
    assert (icmp["Start"], icmp["Last"]) == (T0_MS, T0_MS + 5)
    assert abs(icmp["Start"] - time.time() * 1000) > 86_400_000
    assert icmp["NodeTID"] == "" and icmp["CaptureID"] == capture_id

    tcp = query(port, "G.Flows().Has('Transport.Protocol', 'TCP')")
    assert len(tcp) == 1
    t = tcp[0]
    assert t["LayersPath"] == "Ethernet/IPv4/TCP"
    assert (t["Network"]["A"], t["Network"]["B"]) == (A, B)
    assert (t["Transport"]["A"], t["Transport"]["B"]) == (40000, 80)
    assert (t["Metric"]["ABPackets"], t["Metric"]["BAPackets"]) == (4, 2)
    assert (t["Start"], t["Last"]) == (T0_MS + 100, T0_MS + 202)
    assert t["FinishType"] == "TCP_FIN"

    dns = query(port, "G.Flows().Has('Application', 'DNS')")
    assert [f["LayersPath"] for f in dns] == ["Ethernet/IPv4/UDP/DNS"]
    assert (dns[0]["Transport"]["A"], dns[0]["Transport"]["B"]) == (5353, 53)

    assert query(port, "G.Flows().Has('Network', IPV4RANGE('10.0.0.3/32')).Count()") == 1
    assert query(port, "G.Flows().Has('Transport', 80).Count()") == 1
    ordered = query(port, "G.Flows().Sort(DESC, 'Metric.ABPackets').Values('LayersPath')")
    assert ordered[0] == "Ethernet/IPv4/TCP"
    assert query(port, "G.V().Flows().Count()") == 0  # no node has the pcap's empty NodeTID


def test_bad_pcap_is_400_and_adds_no_flow(cluster: Cluster) -> None:
    port = start_analyzer(cluster).analyzer_port
    r = upload(port, b"GET / HTTP/1.1 definitely not a pcap file")
    assert r.status_code == 400
    assert "magic" in r.json()["Error"] and r.json()["Offset"] == 0
    r = upload(port, sample_pcap()[:-5])
    assert r.status_code == 400 and "truncated" in r.json()["Error"]
    r = upload(port, b"")
    assert r.status_code == 400 and "empty" in r.json()["Error"]
    assert query(port, "G.Flows().Count()") == 0
