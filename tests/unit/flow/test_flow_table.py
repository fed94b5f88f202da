"""Flow table on frames built field by field and decoded by the real packet decoder."""

from __future__ import annotations

import struct

import pytest

from pyskydive.flow import FinishType, FlowTable, LayerKeyMode
from pyskydive.protocols.packet import Packet, decode

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
MAC_R = "02:00:00:00:00:99"  # a router's MAC: a second capture point sees other L2 addresses
SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04


def _mac(m: str) -> bytes:
    return bytes.fromhex(m.replace(":", ""))


def _ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def eth(et: int, src: str = MAC_A, dst: str = MAC_B, vlan: int | None = None) -> bytes:
    if vlan is not None:
        return _mac(dst) + _mac(src) + struct.pack("!HHH", 0x8100, vlan, et)
    return _mac(dst) + _mac(src) + struct.pack("!H", et)


def ipv4(proto: int, payload: bytes, src: str = "10.0.0.1", dst: str = "10.0.0.2") -> bytes:
    hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0)
    return hdr + _ip4(src) + _ip4(dst) + payload


def tcp(sp: int, dp: int, flags: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sp, dp, 1, 0, 5 << 4, flags, 65535, 0, 0) + data


def udp(sp: int, dp: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sp, dp, 8 + len(data), 0) + data


def icmp(t: int, ident: int, seq: int = 1) -> bytes:
    return struct.pack("!BBHHH", t, 0, 0, ident, seq)


def tcp_pkt(
    flags: int,
    *,
    rev: bool = False,
    src: str = MAC_A,
    dst: str = MAC_B,
    vlan: int | None = None,
    sport: int = 40000,
    data: bytes = b"",
) -> Packet:
    if rev:
        return decode(
            eth(0x0800, dst, src, vlan)
            + ipv4(6, tcp(80, sport, flags, data), "10.0.0.2", "10.0.0.1")
        )
    return decode(eth(0x0800, src, dst, vlan) + ipv4(6, tcp(sport, 80, flags, data)))


def vxlan(inner: bytes, vni: int = 4242) -> Packet:
    vx = struct.pack("!BxxxI", 0x08, vni << 8) + inner
    return decode(
        eth(0x0800, "02:00:00:00:aa:01", "02:00:00:00:aa:02")
        + ipv4(17, udp(49152, 4789, vx), "172.16.0.1", "172.16.0.2")
    )


def test_both_directions_one_flow_a_is_first_sender() -> None:
    t = FlowTable("node1", "cap1")
    t.feed(tcp_pkt(SYN, rev=True), 1000)  # the server speaks first: A is 10.0.0.2
    t.feed(tcp_pkt(SYN | ACK), 1010)
    t.feed(tcp_pkt(ACK, rev=True, data=b"xyz"), 1020)
    assert len(t) == 1
    (f,) = t.flows()
    assert f.network is not None and f.transport is not None and f.link is not None
    assert (f.network.a, f.network.b) == ("10.0.0.2", "10.0.0.1")
    assert (f.transport.a, f.transport.b) == (80, 40000)
    assert (f.link.a, f.link.b) == (MAC_B, MAC_A)
    m = f.metric
    assert (m.ab_packets, m.ba_packets) == (2, 1)
    assert m.ab_bytes == 2 * 54 + 3 and m.ba_bytes == 54
    assert (f.start, f.last, m.start, m.last) == (1000, 1020, 1000, 1020)
    assert f.layers_path == "Ethernet/IPv4/TCP"


def test_l2_vs_l3_key_modes() -> None:
    l2 = FlowTable("n", "c")
    l3 = FlowTable("n", "c", layer_key_mode=LayerKeyMode.L3)
    for t in (l2, l3):
        t.feed(tcp_pkt(ACK), 1)
        t.feed(tcp_pkt(ACK, src="02:00:00:00:00:0c"), 2)  # same IPs/ports, other MAC
    assert len(l2) == 2
    assert len(l3) == 1
    assert l3.flows()[0].metric.ab_packets == 2


def test_tracking_id_same_at_two_capture_points_uuid_differs() -> None:
    t1 = FlowTable("node1", "cap1", layer_key_mode=LayerKeyMode.L3)
    t2 = FlowTable("node2", "cap2", layer_key_mode=LayerKeyMode.L3)
    t1.feed(tcp_pkt(SYN), 100)
    t1.feed(tcp_pkt(SYN | ACK, rev=True), 101)
    # the second point sees the reply first, with other L2 addresses (after a router)
    t2.feed(tcp_pkt(SYN | ACK, rev=True, src=MAC_R), 205)
    (f1,), (f2,) = t1.flows(), t2.flows()
    assert f1.tracking_id == f2.tracking_id
    assert f1.l3_tracking_id == f2.l3_tracking_id
    assert f1.uuid != f2.uuid
    assert (f1.node_tid, f2.node_tid) == ("node1", "node2")


def test_tracking_id_same_in_l2_mode_on_same_segment() -> None:
    t1, t2 = FlowTable("node1", "cap1"), FlowTable("node2", "cap2")
    t1.feed(tcp_pkt(SYN), 100)
    t2.feed(tcp_pkt(SYN | ACK, rev=True), 100)
    assert t1.flows()[0].tracking_id == t2.flows()[0].tracking_id


def test_vxlan_inner_flow_parent_uuid_and_l3_tracking_id() -> None:
    inner = eth(0x0800, "02:00:00:00:01:01", "02:00:00:00:01:02") + ipv4(
        6, tcp(5555, 22, SYN), "192.168.0.1", "192.168.0.2"
    )
    tunnelled = FlowTable("n1", "c1")
    tunnelled.feed(vxlan(inner), 10)
    plain = FlowTable("n2", "c2")
    plain.feed(
        decode(eth(0x0800, vlan=7) + ipv4(6, tcp(5555, 22, SYN), "192.168.0.1", "192.168.0.2")), 10
    )
    flows = {f.layers_path: f for f in tunnelled.flows()}
    outer, inner_f = flows["Ethernet/IPv4/UDP/VXLAN"], flows["Ethernet/IPv4/TCP"]
    assert inner_f.parent_uuid == outer.uuid and outer.parent_uuid == ""
    assert outer.network is not None and outer.network.id == 4242
    (p,) = plain.flows()
    assert p.layers_path == "Ethernet/Dot1Q/IPv4/TCP" and p.link is not None and p.link.id == 7
    assert inner_f.l3_tracking_id == p.l3_tracking_id
    assert inner_f.tracking_id != p.tracking_id
    assert outer.l3_tracking_id != p.l3_tracking_id
    assert inner_f.to_wire()["ParentUUID"] == outer.uuid


@pytest.mark.parametrize(("flag", "finish"), [(FIN | ACK, "TCP_FIN"), (RST, "TCP_RST")])
def test_tcp_finish_after_hold(flag: int, finish: str) -> None:
    t = FlowTable("n", "c", fin_hold_ms=15_000)
    t.feed(tcp_pkt(ACK), 0)
    t.feed(tcp_pkt(flag, rev=True), 1000)
    assert t.tick(16_000).expired == []
    res = t.tick(16_001)
    (f,) = res.expired
    assert f.finish_type.value == finish
    assert f.to_wire()["FinishType"] == finish
    assert f.tcp_metric is not None
    assert (f.tcp_metric.ba_fin_start or f.tcp_metric.ba_rst_start) == 1000
    assert len(t) == 0 and t.stats.flows_expired == 1


def test_idle_expiry_and_short_flows() -> None:
    t = FlowTable("n", "c", expire_after_ms=600_000, short_flow_ms=10_000)
    t.feed(decode(eth(0x0800) + ipv4(17, udp(1000, 2000, b"x"))), 0)
    dns = (
        struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
        + b"\x07example\x03com\x00\x00\x01\x00\x01"
    )
    t.feed(decode(eth(0x0800) + ipv4(17, udp(3333, 53, dns))), 0)
    arp = (
        struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
        + _mac(MAC_A)
        + _ip4("10.0.0.1")
        + bytes(6)
        + _ip4("10.0.0.2")
    )
    t.feed(decode(eth(0x0806, dst="ff:ff:ff:ff:ff:ff") + arp), 0)
    assert len(t) == 3
    short = t.tick(10_001).expired
    assert sorted(f.application or f.layers_path for f in short) == ["DNS", "Ethernet/ARP"]
    assert all(f.finish_type is FinishType.TIMEOUT for f in short)
    assert t.tick(600_000).expired == []
    (f,) = t.tick(600_001).expired
    assert f.layers_path == "Ethernet/IPv4/UDP" and f.finish_type is FinishType.TIMEOUT


def test_periodic_updates_with_deltas() -> None:
    t = FlowTable("n", "c", update_every_ms=1000)
    t.feed(tcp_pkt(ACK), 0)
    t.feed(tcp_pkt(ACK, rev=True), 100)
    assert t.tick(500) == ([], [])
    (f,) = t.tick(1000).updated
    lu = f.last_update_metric
    assert lu is not None
    assert (lu.ab_packets, lu.ba_packets, lu.start, lu.last) == (1, 1, 0, 1000)
    t.feed(tcp_pkt(ACK), 1500)
    t.feed(tcp_pkt(ACK), 1600)
    (f,) = t.tick(2000).updated
    lu = f.last_update_metric
    assert lu is not None
    assert (lu.ab_packets, lu.ab_bytes, lu.ba_packets, lu.start, lu.last) == (2, 108, 0, 1000, 2000)
    assert (f.metric.ab_packets, f.metric.ba_packets) == (3, 1)
    assert t.tick(3000).updated == []  # nothing moved


def test_max_entries_overflow() -> None:
    t = FlowTable("n", "c", max_entries=2)
    for port in (1, 2, 3, 4):
        t.feed(tcp_pkt(ACK, sport=port), 0)
    t.feed(tcp_pkt(ACK, sport=1), 1)  # an existing flow still counts
    assert len(t) == 2 and t.stats.overflow == 2
    assert {f.metric.ab_packets for f in t.flows()} == {2, 1}


MS = 1_000_000  # ns


def test_tcp_rtt_syn_to_synack_in_nanoseconds() -> None:
    t = FlowTable("n", "c")
    t.feed(tcp_pkt(SYN), 1000, now_ns=1000 * MS + 123)
    t.feed(tcp_pkt(SYN | ACK, rev=True), 1042, now_ns=1042 * MS + 456)
    t.feed(tcp_pkt(ACK), 1050)
    (f,) = t.flows()
    assert f.metric.rtt == 42 * MS + 333
    assert f.to_wire()["Metric"]["RTT"] == 42 * MS + 333
    assert f.tcp_metric is not None  # TCPMetric stays in milliseconds
    assert (f.tcp_metric.ab_syn_start, f.tcp_metric.ba_syn_start) == (1000, 1042)


def test_tcp_rtt_without_now_ns_is_now_ms_in_nanoseconds() -> None:
    t = FlowTable("n", "c")
    t.feed(tcp_pkt(SYN), 1000)
    t.feed(tcp_pkt(SYN | ACK, rev=True), 1042)
    (f,) = t.flows()
    assert f.metric.rtt == 42 * MS


def test_tcp_rtt_syn_to_rst() -> None:
    t = FlowTable("n", "c")
    t.feed(tcp_pkt(SYN), 1000, now_ns=1000 * MS)
    t.feed(tcp_pkt(RST | ACK, rev=True), 1000, now_ns=1000 * MS + 250_000)  # port closed
    (f,) = t.flows()
    assert f.metric.rtt == 250_000 and f.finish_type is FinishType.TCP_RST


def test_tcp_rtt_follows_skydive_order_of_conditions() -> None:
    """``SYN and no probe: probe`` comes first: a SYN/ACK seen first starts the probe."""
    t = FlowTable("n", "c")
    t.feed(tcp_pkt(SYN | ACK, rev=True), 1000, now_ns=1000 * MS)
    t.feed(tcp_pkt(ACK), 1001, now_ns=1001 * MS)  # no SYN, no RST: nothing
    assert t.flows()[0].metric.rtt == 0
    t.feed(tcp_pkt(RST), 1005, now_ns=1005 * MS)
    (f,) = t.flows()
    assert f.metric.rtt == 5 * MS and f.rtt_probe == -1


def _echo(t: FlowTable, kind: int, ms: int, ns: int, ident: int = 77) -> None:
    if kind == 8:
        t.feed(decode(eth(0x0800) + ipv4(1, icmp(8, ident))), ms, now_ns=ns)
    else:
        frame = eth(0x0800, MAC_B, MAC_A) + ipv4(1, icmp(0, ident), "10.0.0.2", "10.0.0.1")
        t.feed(decode(frame), ms, now_ns=ns)


def test_icmp_echo_fields_and_sub_millisecond_rtt() -> None:
    t = FlowTable("n", "c")
    _echo(t, 8, 500, 500 * MS + 100_000)
    _echo(t, 0, 500, 500 * MS + 400_000)  # 0.3 ms later: the same millisecond
    t.feed(decode(eth(0x0800) + ipv4(1, icmp(8, 78))), 600)  # another ping id: another flow
    assert len(t) == 2
    f = next(f for f in t.flows() if f.icmp is not None and f.icmp.id == 77)
    assert f.to_wire()["ICMP"] == {"Type": "ECHO", "Code": 0, "ID": 77}
    assert (f.metric.ab_packets, f.metric.ba_packets, f.metric.rtt) == (1, 1, 300_000)
    assert f.layers_path == "Ethernet/IPv4/ICMPv4" and f.transport is None


def test_icmp_rtt_is_the_latest_echo_pair() -> None:
    t = FlowTable("n", "c")
    _echo(t, 8, 1000, 1000 * MS)
    _echo(t, 0, 1000, 1000 * MS + 300_000)
    _echo(t, 8, 2000, 2000 * MS)  # the next ping, a second later
    assert t.flows()[0].metric.rtt == 300_000  # not the time between the pings
    _echo(t, 8, 2000, 2000 * MS + 5)  # a second request while one is pending: ignored
    _echo(t, 0, 2000, 2000 * MS + 700_000)
    (f,) = t.flows()
    assert f.metric.rtt == 700_000 and f.rtt_probe == -1
    _echo(t, 0, 2001, 2001 * MS)  # a reply with no request pending: nothing
    assert t.flows()[0].metric.rtt == 700_000


def test_last_update_metric_carries_the_rtt() -> None:
    t = FlowTable("n", "c", update_every_ms=1000)
    _echo(t, 8, 1000, 1000 * MS)
    _echo(t, 0, 1000, 1000 * MS + 450_000)
    (f,) = t.tick(2000).updated
    assert f.to_wire()["LastUpdateMetric"]["RTT"] == 450_000


def test_icmpv6_echo_rtt_and_v4_types_do_not_count_in_v6() -> None:
    def ping6(t: FlowTable, kind: int, ns: int) -> None:
        a, b = bytes(15) + b"\x01", bytes(15) + b"\x02"
        src, dst = (a, b) if kind in (128, 8) else (b, a)
        body = icmp(kind, 9)
        ip6 = struct.pack("!IHBB", 6 << 28, len(body), 58, 64) + src + dst + body
        t.feed(decode(eth(0x86DD) + ip6), ns // MS, now_ns=ns)

    t = FlowTable("n", "c", layer_key_mode=LayerKeyMode.L3)
    ping6(t, 128, 7 * MS)
    ping6(t, 129, 7 * MS + 90_000)
    assert [f.metric.rtt for f in t.flows()] == [90_000]
    t = FlowTable("n", "c", layer_key_mode=LayerKeyMode.L3)
    ping6(t, 8, 7 * MS)  # ICMPv4's echo types mean nothing in ICMPv6
    ping6(t, 0, 8 * MS)
    assert all(f.metric.rtt == 0 for f in t.flows())


def test_decode_errors_counted_outer_layers_accounted() -> None:
    t = FlowTable("n", "c")
    frame = eth(0x0800) + ipv4(6, tcp(1, 2, ACK))
    t.feed(decode(frame[:40]), 0)  # TCP header cut short
    t.feed(decode(frame[:5]), 0)  # not even Ethernet
    assert t.stats.decode_errors == 2 and t.stats.packets == 2
    (f,) = t.flows()
    assert f.layers_path == "Ethernet/IPv4" and f.transport is None


def test_to_wire_field_names() -> None:
    t = FlowTable("node1", "cap1", update_every_ms=10)
    t.feed(tcp_pkt(SYN), 1)
    (f,) = t.tick(20).updated
    w = f.to_wire()
    assert set(w) == {
        "UUID", "LayersPath", "Application", "Link", "Network", "Transport", "Metric",
        "LastUpdateMetric", "TCPMetric", "TrackingID", "L3TrackingID", "NodeTID", "CaptureID",
        "Start", "Last",
    }  # fmt: skip
    assert w["Network"] == {"Protocol": "IPV4", "A": "10.0.0.1", "B": "10.0.0.2", "ID": 0}
    assert w["Link"]["Protocol"] == "ETHERNET" and w["Transport"]["Protocol"] == "TCP"
    assert set(w["Metric"]) == {
        "ABPackets", "ABBytes", "BAPackets", "BABytes", "Start", "Last", "RTT"
    }  # fmt: skip
    assert (w["NodeTID"], w["CaptureID"]) == ("node1", "cap1")


def test_vxlan_both_directions_one_outer_and_one_inner_flow() -> None:
    fwd_inner = eth(0x0800, "02:00:00:00:01:01", "02:00:00:00:01:02") + ipv4(
        6, tcp(5555, 22, SYN), "192.168.0.1", "192.168.0.2"
    )
    rev_inner = eth(0x0800, "02:00:00:00:01:02", "02:00:00:00:01:01") + ipv4(
        6, tcp(22, 5555, SYN | ACK), "192.168.0.2", "192.168.0.1"
    )
    vx = struct.pack("!BxxxI", 0x08, 4242 << 8)
    t = FlowTable("n", "c")
    t.feed(vxlan(fwd_inner), 10)
    # the reply, from the other VTEP, with another (entropy) UDP source port
    t.feed(
        decode(
            eth(0x0800, "02:00:00:00:aa:02", "02:00:00:00:aa:01")
            + ipv4(17, udp(51000, 4789, vx + rev_inner), "172.16.0.2", "172.16.0.1")
        ),
        13,
    )
    assert len(t) == 2
    flows = {f.layers_path: f for f in t.flows()}
    outer, inner = flows["Ethernet/IPv4/UDP/VXLAN"], flows["Ethernet/IPv4/TCP"]
    assert (outer.metric.ab_packets, outer.metric.ba_packets) == (1, 1)
    assert (inner.metric.ab_packets, inner.metric.ba_packets) == (1, 1)
    assert inner.parent_uuid == outer.uuid and inner.metric.rtt == 3_000_000


def test_tracking_id_ignores_vlan_tags() -> None:
    tagged, plain = FlowTable("n1", "c"), FlowTable("n2", "c")
    tagged.feed(tcp_pkt(SYN, vlan=100), 1)
    plain.feed(tcp_pkt(SYN), 1)
    (a,), (b,) = tagged.flows(), plain.flows()
    assert a.layers_path == "Ethernet/Dot1Q/IPv4/TCP" and b.layers_path == "Ethernet/IPv4/TCP"
    assert a.tracking_id == b.tracking_id and a.l3_tracking_id == b.l3_tracking_id


def test_linux_sll_frame_without_a_peer_mac_is_a_flow() -> None:
    """A cooked (SLL) capture knows the sender's MAC only: the key must still be orderable."""
    sll = struct.pack("!HHH8sH", 0, 1, 6, bytes.fromhex("0200000000010000"), 0x0800)
    ip = bytes.fromhex("450000200001000040110000") + bytes([10, 0, 0, 1, 10, 0, 0, 2])
    udp = struct.pack("!HHHH", 1000, 2000, 12, 0) + b"abcd"
    packet = decode(sll + ip + udp, first="LinuxSLL")
    assert packet.eth_src is not None and packet.eth_dst is None
    for mode in ("L2", "L3"):
        table = FlowTable("n", "c", layer_key_mode=LayerKeyMode(mode))
        table.feed(packet, 1000)
        table.feed(packet, 1001)
        [flow] = table.flows()
        assert flow.metric.ab_packets == 2 and flow.network is not None
