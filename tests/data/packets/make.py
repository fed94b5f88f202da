"""Generate the packet decoder's golden inputs: ``frames.json`` and ``frames.pcap``.

Every frame is built field by field with :mod:`struct` (seeded, deterministic); the expected
decode is what the builder put in, so the decoder is checked against construction, not against
itself. Run ``python tests/data/packets/make.py`` after changing a case and commit both files.
The pcap holds the same frames, for dissection by tshark where it is installed.
"""

from __future__ import annotations

import json
import random
import struct
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[2] / "src"))

from pyskydive.protocols.pcap import write_pcap  # noqa: E402

RNG = random.Random(20261127)
MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"


def mac(m: str) -> bytes:
    return bytes.fromhex(m.replace(":", ""))


def ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def ip6(a: str) -> bytes:
    import ipaddress

    return ipaddress.IPv6Address(a).packed


def eth(et: int, src: str = MAC_A, dst: str = MAC_B) -> bytes:
    return mac(dst) + mac(src) + struct.pack("!H", et)


def vlan(vid: int, et: int, pcp: int = 0) -> bytes:
    return struct.pack("!HH", (pcp << 13) | vid, et)


def ipv4(
    proto: int,
    payload: bytes,
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    ttl: int = 64,
    ident: int = 1,
    flags: int = 2,
    frag: int = 0,
    options: bytes = b"",
) -> bytes:
    hl = 20 + len(options)
    return (
        struct.pack(
            "!BBHHHBBH",
            0x40 | hl // 4,
            0,
            hl + len(payload),
            ident,
            flags << 13 | frag,
            ttl,
            proto,
            0,
        )
        + ip4(src)
        + ip4(dst)
        + options
        + payload
    )


def ipv6(nh: int, payload: bytes, src: str = "fd00::1", dst: str = "fd00::2", fl: int = 0) -> bytes:
    return struct.pack("!IHBB", 6 << 28 | fl, len(payload), nh, 64) + ip6(src) + ip6(dst) + payload


def tcp(
    sp: int, dp: int, flags: int, seq: int, ack: int, data: bytes = b"", win: int = 65535
) -> bytes:
    return struct.pack("!HHIIBBHHH", sp, dp, seq, ack, 5 << 4, flags, win, 0, 0) + data


def udp(sp: int, dp: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sp, dp, 8 + len(data), 0) + data


def icmp(t: int, c: int, ident: int, seq: int, data: bytes = b"") -> bytes:
    return struct.pack("!BBHHH", t, c, 0, ident, seq) + data


def rand(n: int) -> bytes:
    return bytes(RNG.randrange(256) for _ in range(n))


def dns_query() -> bytes:
    return (
        struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
        + b"\x07example\x03com\x00\x00\x01\x00\x01"
    )


def dhcp_discover() -> bytes:
    body = struct.pack("!BBBBIHH", 1, 1, 6, 0, 0xDEADBEEF, 0, 0x8000) + bytes(16) + mac(MAC_A)
    return body + bytes(10 + 192) + b"\x63\x82\x53\x63\x35\x01\x01\xff"


CASES: list[tuple[str, bytes, dict[str, Any]]] = []


def case(name: str, frame: bytes, **expected: Any) -> None:
    CASES.append((name, frame, expected))


L2 = {"eth_src": MAC_A, "eth_dst": MAC_B}
V4 = {"ip_version": 4, "ip_src": "10.0.0.1", "ip_dst": "10.0.0.2"}
V6 = {"ip_version": 6, "ip_src": "fd00::1", "ip_dst": "fd00::2"}

# ICMPv4 echo, padded to the Ethernet minimum (padding is not payload)
case(
    "icmpv4_echo",
    (eth(0x0800) + ipv4(1, icmp(8, 0, 0x4242, 7, b"ab"))).ljust(60, b"\0"),
    layers_path="Ethernet/IPv4/ICMPv4",
    icmp_type=8,
    icmp_code=0,
    icmp_id=0x4242,
    icmp_seq=7,
    ip_proto=1,
    ttl=64,
    ip_total_len=30,
    payload_len=2,
    ethertype=0x0800,
    **L2,
    **V4,
)
case(
    "tcp_syn",
    eth(0x0800) + ipv4(6, tcp(40000, 80, 0x02, 1000, 0)),
    layers_path="Ethernet/IPv4/TCP",
    src_port=40000,
    dst_port=80,
    tcp_flags=0x02,
    tcp_seq=1000,
    tcp_ack=0,
    tcp_window=65535,
    payload_len=0,
    **V4,
)
case(
    "tcp_all_flags_payload",
    eth(0x0800) + ipv4(6, tcp(80, 40000, 0xFF, 0xFFFFFFFF, 1, rand(100))),
    layers_path="Ethernet/IPv4/TCP",
    tcp_flags=0xFF,
    tcp_seq=0xFFFFFFFF,
    tcp_ack=1,
    payload_len=100,
)
case(
    "ipv4_options_fragment_first",
    eth(0x0800) + ipv4(17, udp(5000, 6000, rand(40)), flags=1, options=b"\x94\x04\x00\x00"),
    layers_path="Ethernet/IPv4/UDP",
    ip_options_len=4,
    ip_header_len=24,
    ip_flags=1,
    frag_offset=0,
    src_port=5000,
    dst_port=6000,
    udp_len=48,
    payload_len=40,
)
case(
    "ipv4_fragment_later",
    eth(0x0800) + ipv4(17, rand(64), flags=0, frag=185, ident=77),
    layers_path="Ethernet/IPv4/Fragment",
    frag_offset=185,
    ip_id=77,
    src_port=None,
    payload_len=64,
)
case(
    "dot1q_udp",
    eth(0x8100) + vlan(42, 0x0800, pcp=5) + ipv4(17, udp(1234, 9, b"hello")),
    layers_path="Ethernet/Dot1Q/IPv4/UDP",
    vlans=[42],
    ethertype=0x0800,
    payload_len=5,
)
case(
    "qinq_8021ad",
    eth(0x88A8) + vlan(100, 0x8100) + vlan(200, 0x0800) + ipv4(6, tcp(1, 2, 0x10, 5, 6)),
    layers_path="Ethernet/Dot1Q/Dot1Q/IPv4/TCP",
    vlans=[100, 200],
    tcp_flags=0x10,
)
case(
    "arp_request",
    (
        eth(0x0806, dst="ff:ff:ff:ff:ff:ff")
        + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
        + mac(MAC_A)
        + ip4("10.0.0.1")
        + bytes(6)
        + ip4("10.0.0.2")
    ).ljust(60, b"\0"),
    layers_path="Ethernet/ARP",
    arp_op=1,
    arp_sender_hw=MAC_A,
    arp_sender_ip="10.0.0.1",
    arp_target_hw="00:00:00:00:00:00",
    arp_target_ip="10.0.0.2",
    eth_dst="ff:ff:ff:ff:ff:ff",
)
case(
    "dns_udp",
    eth(0x0800) + ipv4(17, udp(33333, 53, dns_query())),
    layers_path="Ethernet/IPv4/UDP/DNS",
    application="DNS",
    dst_port=53,
)
case(
    "dns_tcp",
    eth(0x86DD) + ipv6(6, tcp(53, 40001, 0x18, 9, 10, b"\x00\x1d" + dns_query())),
    layers_path="Ethernet/IPv6/TCP/DNS",
    application="DNS",
    src_port=53,
    **V6,
)
case(
    "dhcp_discover",
    eth(0x0800, dst="ff:ff:ff:ff:ff:ff")
    + ipv4(17, udp(68, 67, dhcp_discover()), src="0.0.0.0", dst="255.255.255.255"),
    layers_path="Ethernet/IPv4/UDP/DHCPv4",
    application="DHCPv4",
    ip_src="0.0.0.0",
    ip_dst="255.255.255.255",
)
case(
    "sctp_init",
    eth(0x0800) + ipv4(132, struct.pack("!HHII", 3868, 3868, 0, 0) + rand(20)),
    layers_path="Ethernet/IPv4/SCTP",
    src_port=3868,
    dst_port=3868,
    sctp_vtag=0,
    payload_len=20,
)
case(
    "icmpv6_echo",
    eth(0x86DD, dst="33:33:00:00:00:01") + ipv6(58, icmp(128, 0, 99, 1, rand(16)), fl=0xABCDE),
    layers_path="Ethernet/IPv6/ICMPv6",
    icmp_type=128,
    icmp_id=99,
    icmp_seq=1,
    flow_label=0xABCDE,
    payload_len=16,
    ip_proto=58,
    **V6,
)
case(
    "icmpv6_ns",
    eth(0x86DD)
    + ipv6(
        58,
        struct.pack("!BBHI", 135, 0, 0, 0) + ip6("fe80::1:2") + b"\x01\x01" + mac(MAC_A),
        src="fe80::a",
        dst="ff02::1:ff01:2",
    ),
    layers_path="Ethernet/IPv6/ICMPv6",
    icmp_type=135,
    icmp_id=None,
    nd_target="fe80::1:2",
    ip_dst="ff02::1:ff01:2",
    payload_len=8,
)
_hbh = struct.pack("!BB", 43, 0) + b"\x01\x04\0\0\0\0"
_rt = struct.pack("!BBBB", 44, 2, 0, 1) + bytes(4) + ip6("fd00::99")
_frag = struct.pack("!BxHI", 60, 0 << 3 | 1, 0xCAFE)
_dst = struct.pack("!BB", 17, 0) + b"\x01\x04\0\0\0\0"
case(
    "ipv6_ext_fragment_routing",
    eth(0x86DD) + ipv6(0, _hbh + _rt + _frag + _dst + udp(1000, 2000, rand(10))),
    layers_path="Ethernet/IPv6/IPv6HopByHop/IPv6Routing/IPv6Fragment/IPv6Destination/UDP",
    ip_proto=17,
    ip_id=0xCAFE,
    ip_flags=1,
    frag_offset=0,
    ip_options_len=48,
    src_port=1000,
    payload_len=10,
)
case(
    "ipv6_truncated_routing_header",
    eth(0x86DD) + ipv6(0, _hbh + struct.pack("!BBBB", 17, 6, 0, 1) + bytes(20)),
    layers_path="Ethernet/IPv6/IPv6HopByHop",
    error="truncated IPv6Routing header at offset 62",
    ip_src="fd00::1",
    ip_proto=None,
)
case(
    "ipv6_fragment_later",
    eth(0x86DD) + ipv6(44, struct.pack("!BxHI", 6, 100 << 3, 7) + rand(32)),
    layers_path="Ethernet/IPv6/IPv6Fragment/Fragment",
    frag_offset=100,
    ip_proto=6,
    payload_len=32,
)
_inner = eth(0x0800, src="02:00:00:00:01:01", dst="02:00:00:00:01:02") + ipv4(
    6, tcp(5555, 22, 0x02, 1, 0), src="192.168.0.1", dst="192.168.0.2"
)
case(
    "vxlan_inner_tcp",
    eth(0x0800) + ipv4(17, udp(49152, 4789, struct.pack("!BxxxI", 0x08, 4242 << 8) + _inner)),
    layers_path="Ethernet/IPv4/UDP/VXLAN",
    tunnel="VXLAN",
    tunnel_id=4242,
    dst_port=4789,
    inner={
        "layers_path": "Ethernet/IPv4/TCP",
        "encapsulated": True,
        "eth_src": "02:00:00:00:01:01",
        "ip_src": "192.168.0.1",
        "ip_dst": "192.168.0.2",
        "dst_port": 22,
        "tcp_flags": 2,
    },
)
case(
    "geneve_inner_ethernet",
    eth(0x0800)
    + ipv4(17, udp(49153, 6081, struct.pack("!BBHI", 1, 0, 0x6558, 777 << 8) + bytes(4) + _inner)),
    layers_path="Ethernet/IPv4/UDP/Geneve",
    tunnel="Geneve",
    tunnel_id=777,
    inner={"layers_path": "Ethernet/IPv4/TCP", "encapsulated": True, "src_port": 5555},
)
case(
    "gre_key_inner_ipv4",
    eth(0x0800)
    + ipv4(
        47,
        struct.pack("!HHI", 0x2000, 0x0800, 0x01020304)
        + ipv4(1, icmp(0, 0, 5, 6), src="172.16.0.1", dst="172.16.0.2"),
    ),
    layers_path="Ethernet/IPv4/GRE",
    tunnel="GRE",
    tunnel_id=0x01020304,
    gre_proto=0x0800,
    inner={"layers_path": "IPv4/ICMPv4", "ip_src": "172.16.0.1", "icmp_type": 0, "icmp_id": 5},
)
case(
    "gre_teb_inner_ethernet",
    eth(0x86DD) + ipv6(47, struct.pack("!HH", 0, 0x6558) + _inner),
    layers_path="Ethernet/IPv6/GRE",
    tunnel="GRE",
    tunnel_id=None,
    gre_proto=0x6558,
    inner={"layers_path": "Ethernet/IPv4/TCP", "ip_dst": "192.168.0.2"},
)
case(
    "mpls_two_labels_ipv4",
    eth(0x8847)
    + struct.pack("!II", 1000 << 12 | 64, 2000 << 12 | 0x100 | 64)
    + ipv4(17, udp(7, 7, b"x")),
    layers_path="Ethernet/MPLS",
    tunnel="MPLS",
    mpls_labels=[1000, 2000],
    ip_src=None,
    inner={"layers_path": "IPv4/UDP", "encapsulated": True, "payload_len": 1, **V4},
)
case(
    "mpls_ipv6",
    eth(0x8847) + struct.pack("!I", 16 << 12 | 0x100 | 1) + ipv6(58, icmp(129, 0, 1, 2)),
    layers_path="Ethernet/MPLS",
    mpls_labels=[16],
    inner={"layers_path": "IPv6/ICMPv6", "icmp_type": 129, "icmp_id": 1, **V6},
)
case(
    "gre_key_mpls_ipv4",
    eth(0x0800)
    + ipv4(
        47,
        struct.pack("!HHI", 0x2000, 0x8847, 99)
        + struct.pack("!I", 300 << 12 | 0x100 | 9)
        + ipv4(6, tcp(1, 2, 0x11, 3, 4), src="172.16.1.1", dst="172.16.1.2"),
    ),
    layers_path="Ethernet/IPv4/GRE/MPLS",
    tunnel="GRE",
    tunnel_id=99,
    gre_proto=0x8847,
    mpls_labels=[300],
    ip_src="10.0.0.1",
    inner={"layers_path": "IPv4/TCP", "ip_src": "172.16.1.1", "tcp_flags": 0x11},
)
case(
    "ipip",
    eth(0x0800) + ipv4(4, ipv4(17, udp(1, 2, b"zz"), src="192.0.2.1", dst="192.0.2.2")),
    layers_path="Ethernet/IPv4",
    tunnel="IPinIP",
    ip_proto=4,
    ip_src="10.0.0.1",
    inner={"layers_path": "IPv4/UDP", "ip_src": "192.0.2.1", "payload_len": 2},
)
case(
    "vxlan_over_ipv6_inner_dot1q_icmpv6",
    eth(0x86DD)
    + ipv6(
        17,
        udp(
            50000,
            4789,
            struct.pack("!BxxxI", 0x08, 16777215 << 8)
            + eth(0x8100)
            + vlan(7, 0x86DD)
            + ipv6(58, icmp(128, 0, 3, 4, b"ping"), src="fd01::1", dst="fd01::2"),
        ),
    ),
    layers_path="Ethernet/IPv6/UDP/VXLAN",
    tunnel_id=16777215,
    **V6,
    inner={
        "layers_path": "Ethernet/Dot1Q/IPv6/ICMPv6",
        "vlans": [7],
        "ip_src": "fd01::1",
        "icmp_id": 3,
        "payload_len": 4,
    },
)
case(
    "ethernet_in_ethernet",
    eth(0x6558) + _inner,
    layers_path="Ethernet",
    ethertype=0x6558,
    tunnel=None,
    inner={"layers_path": "Ethernet/IPv4/TCP", "eth_src": "02:00:00:00:01:01"},
)
case(
    "llc_8023",
    eth(0x0026) + b"\x42\x42\x03" + rand(35),
    layers_path="Ethernet",
    ethertype=0x26,
    payload_len=38,
)
case(
    "truncated_tcp",
    (eth(0x0800) + ipv4(6, tcp(1, 2, 2, 3, 4)))[:44],
    layers_path="Ethernet/IPv4",
    error="truncated TCP header at offset 34",
    **V4,
)
case(
    "ipv4_bad_ihl",
    eth(0x0800) + b"\x43" + ipv4(6, tcp(1, 2, 2, 3, 4))[1:],
    layers_path="Ethernet",
    error="malformed IPv4 header at offset 14: IPv4 header length 12 < 20",
)


def main() -> None:
    out = [
        {"name": name, "hex": frame.hex(), "expected": expected} for name, frame, expected in CASES
    ]
    (HERE / "frames.json").write_text(json.dumps(out, indent=1) + "\n")
    (HERE / "frames.pcap").write_bytes(
        write_pcap((1_700_000_000_000_000_000 + i * 1000, f) for i, (_, f, _) in enumerate(CASES))
    )


if __name__ == "__main__":
    main()
