"""POST /api/pcap against a real analyzer: flows built from the packets' own timestamps and
queryable through POST /api/topology (G.Flows()...); a bad pcap is a 400 and adds no flow."""

from __future__ import annotations

import struct
import time
from typing import Any

import httpx
from conftest import Cluster, start_analyzer, status

from pyskydive.protocols.pcap import write_pcap

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
T0_MS = 1_600_000_000_000  # 2020-09-13: far from the wall clock
SYN, ACK, FIN = 0x02, 0x10, 0x01


def _eth(src: str, dst: str) -> bytes:
    return bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", "")) + b"\x08\x00"


def _ipv4(proto: int, payload: bytes, src: str, dst: str) -> bytes:
    hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0)
    return hdr + bytes(map(int, src.split("."))) + bytes(map(int, dst.split("."))) + payload


def _frame(proto: int, payload: bytes, src: str, dst: str, forward: bool) -> bytes:
    macs = (MAC_A, MAC_B) if forward else (MAC_B, MAC_A)
    return _eth(*macs) + _ipv4(proto, payload, src, dst)


def icmp(t: int, ident: int, seq: int) -> bytes:
    return struct.pack("!BBHHH", t, 0, 0, ident, seq) + b"ping"


def tcp(sp: int, dp: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sp, dp, 1, 0, 5 << 4, flags, 65535, 0, 0)


def udp(sp: int, dp: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sp, dp, 8 + len(data), 0) + data


DNS_QUERY = (
    struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00\x00\x01\x00\x01"
)

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def sample_records() -> list[tuple[int, bytes]]:
    """(timestamp_ns, frame): an ICMP echo pair, a TCP SYN/SYN-ACK/FIN exchange, a DNS query."""
    ms = 1_000_000
    t = T0_MS * ms
    return [
        (t, _frame(1, icmp(8, 7, 1), A, B, True)),
        (t + 5 * ms, _frame(1, icmp(0, 7, 1), B, A, False)),
        (t + 100 * ms, _frame(6, tcp(40000, 80, SYN), A, B, True)),
        (t + 110 * ms, _frame(6, tcp(80, 40000, SYN | ACK), B, A, False)),
        (t + 111 * ms, _frame(6, tcp(40000, 80, ACK), A, B, True)),
        (t + 200 * ms, _frame(6, tcp(40000, 80, FIN | ACK), A, B, True)),
        (t + 201 * ms, _frame(6, tcp(80, 40000, FIN | ACK), B, A, False)),
        (t + 202 * ms, _frame(6, tcp(40000, 80, ACK), A, B, True)),
        (t + 300 * ms, _frame(17, udp(5353, 53, DNS_QUERY), A, C, True)),
    ]


def sample_pcap() -> bytes:
    return write_pcap(sample_records())


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
