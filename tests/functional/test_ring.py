"""TpacketRing on a real veth between two throwaway namespaces: exact per-flow counts, BPF.

Each test makes namespaces ``skr<id>a``/``skr<id>b`` joined by a veth pair (same names), removed
at teardown even when the test fails. Traffic is sent by Python sockets inside the namespaces
(``ip netns exec``), the ring is opened inside ``skr<id>a`` (its socket stays there) and polled
into a FlowTable until the traffic is all in.
"""

from __future__ import annotations

import secrets
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pyskydive.flow import FlowTable
from pyskydive.probes.flow.ring import TpacketRing
from pyskydive.probes.topology.nsutil import call_in_netns

pytestmark = pytest.mark.functional

A_IP, B_IP = "10.77.0.1", "10.77.0.2"

# A raw-socket ICMP echo sender (iputils ping is not installed everywhere): COUNT requests with
# identifier 0x5151, 50 ms apart; the peer's kernel answers each one.
_PINGER = """
import socket, struct, sys, time
dst, count = sys.argv[1], int(sys.argv[2])
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for seq in range(count):
    body = struct.pack("!BBHHH", 8, 0, 0, 0x5151, seq) + b"skydive!"
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    s.sendto(body, (dst, 0))
    time.sleep(0.05)
time.sleep(0.2)
"""
_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40001))
for _ in range(int(sys.argv[2])):
    s.sendto(b"x" * 32, (sys.argv[1], 9999))
"""


@dataclass
class Pair:
    a: str  # namespace and veth end (the capture side)
    b: str

    def run(self, ns: str, script: str, *args: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args],
            check=True,
            timeout=30,
        )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def pair() -> Iterator[Pair]:
    tag = secrets.token_hex(3)
    p = Pair(f"skr{tag}a", f"skr{tag}b")
    made: list[str] = []
    try:
        for ns in (p.a, p.b):
            made.append(ns)
            _ip("netns", "add", ns)
        _ip("link", "add", p.a, "type", "veth", "peer", "name", p.b)
        for ns, addr in ((p.a, A_IP), (p.b, B_IP)):
            _ip("link", "set", ns, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ns)
            _ip("-n", ns, "link", "set", ns, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield p
    finally:
        for ns in made:  # the veth ends go with their namespaces
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)
        subprocess.run(["ip", "link", "del", p.a], check=False, capture_output=True, timeout=30)


def _open_ring(p: Pair, **kw: Any) -> TpacketRing:
    def make() -> TpacketRing:
        import socket

        return TpacketRing(socket.if_nametoindex(p.a), **kw)

    return call_in_netns(f"/run/netns/{p.a}", make)


def _drain(ring: TpacketRing, table: FlowTable) -> int:
    """Poll until the ring stays empty for half a second (blocks retire after 100 ms)."""
    total = 0
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 20
    while time.monotonic() - quiet_since < 0.5 and time.monotonic() < deadline:
        n = ring.poll(table, 100)
        if n:
            total += n
            quiet_since = time.monotonic()
    return total


def _flows(table: FlowTable) -> dict[str, dict[str, Any]]:
    out = {}
    for f in table.flows():
        w = f.to_wire()
        icmp = w.get("ICMP", {}).get("Type", "")  # UDP to a closed port draws ICMP errors
        out[f"{w['LayersPath']} {w.get('Network', {}).get('A')} {icmp}".rstrip()] = w
    return out


def test_ring_counts_both_directions_exactly(pair: Pair) -> None:
    table = FlowTable("node", "cap")
    with _open_ring(pair, block_size=1 << 16, block_count=8) as ring:
        pair.run(pair.a, _PINGER, B_IP, "5")  # a → b: requests are OUTGOING on the capture end
        pair.run(pair.b, _UDP, A_IP, "40")  # b → a: incoming
        fed = _drain(ring, table)
        received, dropped = ring.stats()
    flows = _flows(table)
    icmp = flows[f"Ethernet/IPv4/ICMPv4 {A_IP} ECHO"]
    assert (icmp["Metric"]["ABPackets"], icmp["Metric"]["BAPackets"]) == (5, 5)
    assert icmp["ICMP"] == {"Type": "ECHO", "Code": 0, "ID": 0x5151}
    assert icmp["Metric"]["RTT"] >= 0
    assert icmp["Metric"]["ABBytes"] == 5 * (14 + 20 + 16)
    udp = flows[f"Ethernet/IPv4/UDP {B_IP}"]
    assert (udp["Metric"]["ABPackets"], udp["Metric"]["BAPackets"]) == (40, 0)
    assert udp["Transport"] == {"Protocol": "UDP", "A": 40001, "B": 9999, "ID": 0}
    assert udp["Metric"]["ABBytes"] == 40 * (14 + 20 + 8 + 32)
    assert fed == table.stats.packets
    assert (received, dropped) == (fed, 0)


# ldh [12]; jeq #0x800 jt 0 jf 3; ldb [23]; jeq #17 jt 0 jf 1; ret #262144; ret #0
# (``tcpdump -dd 'ip and udp'``, hand-assembled: struct sock_filter is code u16, jt u8, jf u8, k)
UDP_ONLY = b"".join(
    struct.pack("=HBBI", *insn)
    for insn in (
        (0x28, 0, 0, 12),
        (0x15, 0, 3, 0x0800),
        (0x30, 0, 0, 23),
        (0x15, 0, 1, 17),
        (0x06, 0, 0, 0x40000),
        (0x06, 0, 0, 0),
    )
)


def test_bpf_filters_in_the_kernel(pair: Pair) -> None:
    table = FlowTable("node", "cap")
    with _open_ring(pair, bpf=UDP_ONLY, block_size=1 << 16, block_count=8) as ring:
        pair.run(pair.a, _PINGER, B_IP, "3")
        pair.run(pair.b, _UDP, A_IP, "25")
        fed = _drain(ring, table)
        received, dropped = ring.stats()
    paths = {f.layers_path for f in table.flows()}
    assert paths == {"Ethernet/IPv4/UDP"}  # no ARP, no ICMP, no IPv6 noise
    (udp,) = table.flows()
    assert (udp.metric.ab_packets, udp.metric.ba_packets) == (25, 0)
    assert (fed, received, dropped) == (25, 25, 0)
