"""The packet decoder against tshark's dissection of the same golden pcap (skipped without tshark).

tshark (Debian package ``tshark``) is an independent oracle for the layer sequence and the
fields the flow table keys on. Known, documented differences: tshark stops at a fragment that
waits for reassembly (we decode a first fragment's transport header) and dissects truncated or
malformed headers that we refuse, so those frames compare on the common prefix only.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pyskydive.protocols.packet import Packet, decode
from pyskydive.protocols.pcap import PcapReader

PCAP = Path(__file__).parents[2] / "data" / "packets" / "frames.pcap"
TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

FIELDS = [
    "frame.protocols",
    "ip.src",
    "ipv6.src",
    "tcp.srcport",
    "udp.dstport",
    "tcp.flags",
    "vlan.id",
    "ieee8021ad.id",
    "vxlan.vni",
    "gre.key",
    "geneve.vni",
    "mpls.label",
    "icmpv6.nd.ns.target_address",
    "icmp.ident",
    "icmpv6.echo.identifier",
    "arp.src.proto_ipv4",
]
NAMES = {
    "eth": "Ethernet",
    "vlan": "Dot1Q",
    "ieee8021ad": "Dot1Q",
    "ip": "IPv4",
    "ipv6": "IPv6",
    "arp": "ARP",
    "icmp": "ICMPv4",
    "icmpv6": "ICMPv6",
    "tcp": "TCP",
    "udp": "UDP",
    "sctp": "SCTP",
    "gre": "GRE",
    "vxlan": "VXLAN",
    "geneve": "Geneve",
    "mpls": "MPLS",
    "dns": "DNS",
    "dhcp": "DHCPv4",
    "ipv6.hopopts": "IPv6HopByHop",
    "ipv6.routing": "IPv6Routing",
    "ipv6.fraghdr": "IPv6Fragment",
    "ipv6.dstopts": "IPv6Destination",
}


def tshark_rows() -> list[dict[str, list[str]]]:
    assert TSHARK is not None
    cmd = [TSHARK, "-n", "-r", str(PCAP), "-T", "fields", "-E", "occurrence=a"]
    for field in FIELDS:
        cmd += ["-e", field]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
    rows = []
    for line in out.splitlines():
        values = line.split("\t")
        rows.append(
            {f: [x for x in v.split(",") if x] for f, v in zip(FIELDS, values, strict=True)}
        )
    return rows


def chain(p: Packet) -> list[Packet]:
    out = [p]
    while out[-1].inner is not None:
        inner = out[-1].inner
        assert inner is not None
        out.append(inner)
    return out


def number(text: str) -> int:
    return int(text, 16) if text.startswith("0x") else int(text)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[Packet, dict[str, list[str]]]]:
    reader = PcapReader()
    records = reader.feed(PCAP.read_bytes())
    reader.close()
    rows = tshark_rows()
    assert len(rows) == len(records)
    return [(decode(r.data), row) for r, row in zip(records, rows, strict=True)]


def test_layer_sequence(pairs: list[tuple[Packet, dict[str, list[str]]]]) -> None:
    for packet, row in pairs:
        theirs = [NAMES[n] for n in row["frame.protocols"][0].split(":") if n in NAMES]
        ours = [name for p in chain(packet) for name in p.layers if name != "Fragment"]
        waits_for_reassembly = any(p.ip_flags is not None and p.ip_flags & 1 for p in chain(packet))
        if packet.errors or waits_for_reassembly:
            common = min(len(ours), len(theirs))
            assert ours[:common] == theirs[:common], (packet.layers_path, theirs)
        else:
            assert ours == theirs, (packet.layers_path, theirs)


def test_fields(pairs: list[tuple[Packet, dict[str, list[str]]]]) -> None:
    checked = 0
    for packet, row in pairs:
        if packet.errors:
            continue
        ps = chain(packet)
        v4 = [p.ip_src for p in ps if p.ip_version == 4]
        v6 = [p.ip_src for p in ps if p.ip_version == 6]
        assert row["ip.src"] == v4
        assert row["ipv6.src"] == v6
        if row["tcp.srcport"]:
            assert [number(x) for x in row["tcp.srcport"]] == [
                p.src_port for p in ps if p.tcp_flags is not None
            ]
            assert [number(x) for x in row["tcp.flags"]] == [
                p.tcp_flags for p in ps if p.tcp_flags is not None
            ]
        if row["udp.dstport"]:
            assert [number(x) for x in row["udp.dstport"]] == [
                p.dst_port for p in ps if p.udp_len is not None
            ]
        vlans = [number(x) for x in row["ieee8021ad.id"] + row["vlan.id"]]
        assert vlans == [vid for p in ps for vid in p.vlans]
        ids = [number(x) for x in row["vxlan.vni"] + row["gre.key"] + row["geneve.vni"]]
        assert ids == [p.tunnel_id for p in ps if p.tunnel_id is not None]
        assert [number(x) for x in row["mpls.label"]] == [x for p in ps for x in p.mpls_labels]
        assert row["icmpv6.nd.ns.target_address"] == [p.nd_target for p in ps if p.nd_target]
        idents = [number(x) for x in row["icmp.ident"] + row["icmpv6.echo.identifier"]]
        assert idents == [p.icmp_id for p in ps if p.icmp_id is not None]
        assert row["arp.src.proto_ipv4"] == [p.arp_sender_ip for p in ps if p.arp_sender_ip]
        checked += 1
    assert checked > 20
