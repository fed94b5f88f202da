"""The compiled flow path gives the pure path's flows, exactly (pyskydive.flow.fast).

Every test runs the same input through a table with ``accelerate=False`` and one with the C
extension, and compares every emitted flow's ``to_wire()`` and the table stats. The input is
the decoder's golden frames plus a seeded mix (:func:`mixed_frames`) of frames the C decoder
takes (TCP with SYN/FIN/RST, UDP, ICMP echo both ways, IPv6, VLAN tags, IPv4 options, padding)
and frames it leaves to Python (truncations, DNS, DHCP, VXLAN, Geneve, ARP, fragments, IPv6
extension headers, SCTP, GRE), in both key modes, with ticks, overflow and a final flush.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyskydive.errors import ProtocolError
from pyskydive.flow import FlowTable, LayerKeyMode
from pyskydive.flow.fast import (
    COMPILED,
    FLUSH_AFTER_MS,
    PcapFlowFeeder,
    feed_sflow,
    feed_tpacket_block,
)
from pyskydive.protocols.packet import decode
from pyskydive.protocols.pcap import write_pcap

FRAMES_PCAP = Path(__file__).parents[2] / "data" / "packets" / "frames.pcap"
REFERENCE = Path(__file__).parents[3].parent / "shared" / "reference" / "sflow-ovs"

ACCELERATED = COMPILED and os.environ.get("PYSKYDIVE_PURE") != "1"
needs_compiled = pytest.mark.skipif(
    not ACCELERATED,
    reason="the C extension pyskydive.flow._fastflow is not built (no compiler?)"
    if not COMPILED
    else "PYSKYDIVE_PURE=1: every table is pure",
)

T0 = 1_700_000_000_000


def test_compiled_when_required() -> None:
    """CI sets PYSKYDIVE_REQUIRE_COMPILED=1: a failed (optional) build must not skip silently."""
    if os.environ.get("PYSKYDIVE_REQUIRE_COMPILED") == "1":
        assert COMPILED, "pyskydive.flow._fastflow did not build or load (gcc, python3-dev?)"


SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


# -- a seeded mix of frames ---------------------------------------------------------------


def _mac(i: int) -> bytes:
    return bytes((2, 0, 0, 0, i >> 8 & 255, i & 255))


def _ip4(proto: int, payload: bytes, src: bytes, dst: bytes, frag: int = 0x4000,
         options: bytes = b"") -> bytes:  # fmt: skip
    hl = 20 + len(options)
    return (
        struct.pack("!BBHHHBBH", 0x40 | hl // 4, 0, hl + len(payload), 7, frag, 64, proto, 0)
        + src
        + dst
        + options
        + payload
    )


def _ip6(nh: int, payload: bytes, src: bytes, dst: bytes) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload), nh, 64) + src + dst + payload


def _tcp(sp: int, dp: int, flags: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sp, dp, 1, 2, 5 << 4, flags, 1000, 0, 0) + data


def _udp(sp: int, dp: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sp, dp, 8 + len(data), 0) + data


def _icmp(t: int, ident: int, v6: bool = False) -> bytes:
    return struct.pack("!BBHHH", t, 0, 0, ident, 1) + b"ping"


class _Flow:
    def __init__(self, rng: random.Random, i: int) -> None:
        self.kind = rng.choice(
            ["tcp"] * 4 + ["udp"] * 3 + ["icmp"] * 2
            + ["dns", "dhcp", "vxlan", "arp", "frag", "trunc", "opts", "ext6", "sctp", "gre",
               "unreach", "nd"]
        )  # fmt: skip
        self.v6 = self.kind in ("ext6", "nd") or (
            self.kind in ("tcp", "udp", "icmp", "trunc") and rng.random() < 0.3
        )
        self.vlans = [rng.randrange(1, 4095) for _ in range(rng.choice([0, 0, 0, 1, 2, 5]))]
        self.macs = (_mac(rng.randrange(1, 40)), _mac(rng.randrange(1, 40)))
        n = 16 if self.v6 else 4
        self.ips = (
            bytes([10] + [0] * (n - 2) + [rng.randrange(1, 30)]),
            bytes([10] + [0] * (n - 2) + [rng.randrange(1, 30)]),
        )
        self.ports = (rng.randrange(1024, 1100), rng.choice([80, 443, 8080, 5000, 1024]))
        self.ident = rng.randrange(0, 4)

    def frame(self, rng: random.Random, forward: bool) -> bytes:
        s, d = (0, 1) if forward else (1, 0)
        src, dst = self.ips[s], self.ips[d]
        sp, dp = (self.ports[s], self.ports[d])
        k = self.kind
        v6 = self.v6
        if k in ("tcp", "trunc"):
            flags = rng.choice([SYN, SYN | ACK, ACK, ACK, PSH | ACK, FIN | ACK, RST, 0])
            l4 = _tcp(sp, dp, flags, b"x" * rng.randrange(0, 3))
            if k == "trunc":
                l4 = l4[: rng.randrange(0, 19)]
            l3 = _ip6(6, l4, src, dst) if v6 else _ip4(6, l4, src, dst)
        elif k == "udp":
            l4 = _udp(sp, dp, b"u" * rng.randrange(0, 5))
            l3 = _ip6(17, l4, src, dst) if v6 else _ip4(17, l4, src, dst)
        elif k == "icmp":
            t = (128 if forward else 129) if v6 else (8 if forward else 0)
            l4 = _icmp(t, self.ident)
            l3 = _ip6(58, l4, src, dst) if v6 else _ip4(1, l4, src, dst)
        elif k == "unreach":
            l3 = _ip4(1, _icmp(3, 0), src, dst)
        elif k == "nd":
            l4 = struct.pack("!BBHI", 135, 0, 0, 0) + src
            l3 = _ip6(58, l4[: rng.choice([24, 12])], src, dst)
        elif k == "dns":
            ports = (40000, 53) if forward else (53, 40000)
            l4 = _udp(*ports, b"\x12\x34" + b"\x00" * 10)
            l3 = _ip4(17, l4, src, dst)
        elif k == "dhcp":
            l3 = _ip4(17, _udp(68, 67, b"\x01" * 12), src, dst)
        elif k == "vxlan":
            inner = self.macs[1] + self.macs[0] + b"\x08\x00" + _ip4(6, _tcp(1, 2, SYN), src, dst)
            vx = struct.pack("!BxxxI", 0x08, 42 << 8) + inner
            l3 = _ip4(17, _udp(rng.randrange(30000, 30010), 4789, vx), src, dst)
        elif k == "arp":
            arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + self.macs[s] + src + b"\0" * 6 + dst
            return self._eth(s, d, 0x0806, arp)
        elif k == "frag":
            l3 = _ip4(17, _udp(sp, dp, b"f" * 8), src, dst, frag=rng.choice([0x2000, 0x0003]))
        elif k == "opts":
            l3 = _ip4(6, _tcp(sp, dp, rng.choice([SYN, ACK])), src, dst, options=b"\x01" * 4)
        elif k == "ext6":
            hop = struct.pack("!BB", 17, 0) + b"\0" * 6
            l3 = _ip6(0, hop + _udp(sp, dp, b"e"), src, dst)
        elif k == "sctp":
            l3 = _ip4(132, struct.pack("!HHII", sp, dp, 9, 0), src, dst)
        else:  # gre
            l3 = _ip4(47, struct.pack("!HH", 0, 0x0800) + _ip4(17, _udp(1, 2, b""), dst, src), src,
                      dst)  # fmt: skip
        frame = self._eth(s, d, 0x86DD if v6 else 0x0800, l3)
        if rng.random() < 0.1:
            frame += b"\0" * rng.randrange(1, 12)  # Ethernet padding
        return frame

    def _eth(self, s: int, d: int, et: int, payload: bytes) -> bytes:
        tags = b""
        for vid in self.vlans:
            tags += struct.pack("!H", 0x8100) + struct.pack("!H", vid)
        head = self.macs[d] + self.macs[s]
        if tags:
            return head + tags[:2] + tags[2:] + struct.pack("!H", et) + payload
        return head + struct.pack("!H", et) + payload


def mixed_frames(seed: int, packets: int, flows: int) -> list[tuple[int, bytes]]:
    """``(time_ms, frame)``: a seeded mix over ``flows`` conversations."""
    rng = random.Random(seed)
    pool = [_Flow(rng, i) for i in range(flows)]
    out = []
    now = T0
    for _ in range(packets):
        now += rng.choice([0, 0, 1, 3, 50, 700])
        f = rng.choice(pool)
        out.append((now, f.frame(rng, rng.random() < 0.6)))
    return out


# -- running both paths -------------------------------------------------------------------


def _wire(flows: list[Any]) -> list[dict[str, Any]]:
    return [f.to_wire() for f in flows]


def run_frames(
    frames: list[tuple[int, bytes]],
    accelerate: bool,
    *,
    mode: LayerKeyMode = LayerKeyMode.L2,
    max_entries: int = 500_000,
    mixed_api: bool = False,
    tick_every: int = 17,
) -> tuple[list[Any], Any]:
    """Feed frames (ticking every ``tick_every`` packets); every tick's output, then stats.

    Two frames in three carry a nanosecond time within their millisecond (the RTT's clock).
    """
    table = FlowTable(
        "node",
        "cap",
        layer_key_mode=mode,
        max_entries=max_entries,
        update_every_ms=2000,
        expire_after_ms=30_000,
        fin_hold_ms=1500,
        short_flow_ms=1000,
        accelerate=accelerate,
    )
    assert table.accelerated is (accelerate and ACCELERATED)
    out: list[Any] = []
    rng = random.Random(5)
    now = T0
    for i, (now, frame) in enumerate(frames):
        now_ns = None if i % 3 == 0 else now * 1_000_000 + i * 7919 % 1_000_000
        if mixed_api and rng.random() < 0.3:  # the Packet API on the same flows
            table.feed(decode(frame), now, len(frame) + 4, now_ns)
        else:
            table.feed_frame(frame, now, len(frame) + 4, now_ns=now_ns)
        if i % tick_every == 0:
            updated, expired = table.tick(now)
            out.append((_wire(updated), _wire(expired), len(table)))
        if i % 101 == 0:
            out.append(sorted(f.uuid + str(f.metric) for f in table.flows()))
    updated, expired = table.tick(now + FLUSH_AFTER_MS)
    out.append((_wire(updated), _wire(expired), len(table)))
    return out, table.stats


@needs_compiled
@pytest.mark.parametrize("mode", [LayerKeyMode.L2, LayerKeyMode.L3])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mixed_frames_identical(mode: LayerKeyMode, seed: int) -> None:
    frames = mixed_frames(seed, 3000, 120)
    pure, pstats = run_frames(frames, False, mode=mode)
    fast, fstats = run_frames(frames, True, mode=mode)
    assert pstats == fstats
    assert pstats.decode_errors > 0 and pstats.flows_created > 100
    assert fast == pure
    rtts = [f["Metric"]["RTT"] for tick in pure[:-1] if isinstance(tick, tuple) for f in tick[0]]
    assert any(r % 1_000_000 for r in rtts)  # RTTs were measured, to the nanosecond


@needs_compiled
def test_packet_api_and_frames_on_the_same_flows() -> None:
    """Slow-path accounting of a flow C owns pulls C's counters first and pushes them back."""
    frames = mixed_frames(7, 3000, 60)
    pure, pstats = run_frames(frames, False, mixed_api=True)
    fast, fstats = run_frames(frames, True, mixed_api=True)
    assert pstats == fstats
    assert fast == pure


@needs_compiled
@pytest.mark.parametrize("max_entries", [1, 10, 50])
def test_overflow_identical(max_entries: int) -> None:
    frames = mixed_frames(11, 2000, 200)
    pure, pstats = run_frames(frames, False, max_entries=max_entries, tick_every=400)
    fast, fstats = run_frames(frames, True, max_entries=max_entries, tick_every=400)
    assert pstats.overflow > 0
    assert pstats == fstats
    assert fast == pure


# -- pcap ---------------------------------------------------------------------------------


def _pcap_flows(
    data: bytes, accelerate: bool, chunk: int, accept: Callable[[bytes], bool] | None = None
) -> tuple[list[dict[str, Any]], Any]:
    table = FlowTable("n", "c", accelerate=accelerate, update_every_ms=1000)
    feeder = PcapFlowFeeder(table, tick_every_ms=500, accept=accept)
    out: list[dict[str, Any]] = []
    for i in range(0, len(data), chunk):
        out += feeder.feed(data[i : i + chunk])
    out += feeder.finish()
    assert feeder.packets == table.stats.packets
    if accept is None:
        assert feeder.filtered == 0
    return out, table.stats


@needs_compiled
@pytest.mark.parametrize("chunk", [1, 100, 1 << 20])
def test_pcap_feeder_identical(chunk: int) -> None:
    frames = mixed_frames(4, 2000, 100)
    data = FRAMES_PCAP.read_bytes()
    for extra in (data, write_pcap((t * 1_000_000, f) for t, f in frames)):
        pure = _pcap_flows(extra, False, chunk)
        fast = _pcap_flows(extra, True, chunk)
        assert fast == pure
        assert len(pure[0]) > 10


def test_pcap_feeder_chunking_does_not_matter() -> None:
    data = write_pcap((t * 1_000_000, f) for t, f in mixed_frames(9, 500, 40))
    assert _pcap_flows(data, False, 33) == _pcap_flows(data, False, len(data))


def _no_udp(frame: bytes) -> bool:
    return "UDP" not in decode(frame).layers


@pytest.mark.parametrize("chunk", [64, 1 << 20])
def test_pcap_feeder_accept_hook_skips_what_it_rejects(chunk: int) -> None:
    """A rejected record is as if it was never in the stream: same flows, same ticks."""
    frames = [(t * 1_000_000 + 77, f) for t, f in mixed_frames(13, 1500, 80)]
    kept = [(t, f) for t, f in frames if _no_udp(f)]
    assert 100 < len(kept) < len(frames)
    want = _pcap_flows(write_pcap(kept, nanosecond=True), False, chunk)
    data = write_pcap(frames, nanosecond=True)
    for accelerate in (False, True) if ACCELERATED else (False,):
        table = FlowTable("n", "c", accelerate=accelerate, update_every_ms=1000)
        feeder = PcapFlowFeeder(table, tick_every_ms=500, accept=_no_udp)
        out: list[dict[str, Any]] = []
        for i in range(0, len(data), chunk):
            out += feeder.feed(data[i : i + chunk])
        out += feeder.finish()
        assert (out, table.stats) == want
        assert (feeder.packets, feeder.filtered) == (len(kept), len(frames) - len(kept))
        outer = [f for f in out if "ParentUUID" not in f]  # GRE can carry UDP inside
        assert outer and not any("UDP" in f["LayersPath"] for f in outer)


@pytest.mark.parametrize("nanosecond", [True, False])
def test_pcap_feeder_rtt_from_record_time_in_nanoseconds(nanosecond: bool) -> None:
    a, b = bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2))
    ping = _mac(2) + _mac(1) + b"\x08\x00" + _ip4(1, _icmp(8, 5), a, b)
    pong = _mac(1) + _mac(2) + b"\x08\x00" + _ip4(1, _icmp(0, 5), b, a)
    t = T0 * 1_000_000 + 123_000
    second = 1_000_000_000
    data = write_pcap(
        [(t, ping), (t + 300_000, pong), (t + second, ping), (t + second + 250_000, pong)],
        nanosecond=nanosecond,
    )
    results = []
    for accelerate in (False, True) if ACCELERATED else (False,):
        out, _ = _pcap_flows(data, accelerate, 1 << 20)
        results.append(out)
        first_update = out[0]["Metric"]  # at the second ping, before its reply
        assert (first_update["ABPackets"], first_update["BAPackets"]) == (2, 1)
        assert first_update["RTT"] == 300_000  # 0.3 ms: within one millisecond
        assert out[-1]["Metric"]["RTT"] == 250_000  # the latest echo pair's
    assert all(r == results[0] for r in results)


# -- sFlow --------------------------------------------------------------------------------


def _reference_datagrams() -> list[bytes]:
    blob = (REFERENCE / "sflow_samples.bin").read_bytes()
    out, off = [], 0
    while off < len(blob):
        (n,) = struct.unpack_from(">I", blob, off)
        out.append(blob[off + 4 : off + 4 + n])
        off += 4 + n
    return out


def _sflow_run(datagrams: list[bytes], accelerate: bool) -> tuple[list[Any], Any]:
    table = FlowTable("n", "c", accelerate=accelerate)
    out: list[Any] = []
    for i, dg in enumerate(datagrams):
        got = feed_sflow(table, dg, T0 + i * 10)
        out.append((got.flow_samples, got.counters, got.error))
    out.append(_wire(table.tick(T0 + FLUSH_AFTER_MS).expired))
    return out, table.stats


@pytest.mark.skipif(
    not (REFERENCE / "sflow_samples.bin").exists(), reason=f"no OVS datagrams at {REFERENCE}"
)
@needs_compiled
def test_feed_sflow_ovs_identical() -> None:
    datagrams = _reference_datagrams()
    fast = FlowTable("n", "c")._fast
    assert sum(fast.sflow_check(dg) is not None for dg in datagrams) == len(datagrams)
    bad = [dg[:-3] for dg in datagrams[:5]] + [b"\x00\x00\x00\x05", b""]
    for dg in datagrams[1:20]:  # a counter sample claiming too many records: C frames it fine
        spans = fast.sflow_check(dg)
        if spans:
            off = spans[-1][0]
            bad.append(dg[: off + 8] + struct.pack(">I", 1000) + dg[off + 12 :])
    pure = _sflow_run(datagrams + bad, False)
    fast = _sflow_run(datagrams + bad, True)
    assert fast == pure
    results = pure[0]
    assert sum(r[0] for r in results[:-1]) > 50
    assert any(r[1] for r in results[:-1])  # counter samples came back decoded
    assert all(r[2] is not None for r in results[len(datagrams) : -1])
    assert len(results[-1]) > 0


@pytest.mark.skipif(
    not (REFERENCE / "sflow_samples.bin").exists(), reason=f"no OVS datagrams at {REFERENCE}"
)
def test_feed_sflow_accept_hook() -> None:
    """Rejected headers are not fed (counted in ``filtered``); same result on both paths."""
    datagrams = _reference_datagrams()
    seen: list[bytes] = []

    def everything(frame: bytes) -> bool:
        seen.append(frame)
        return True

    for accelerate in (False, True) if ACCELERATED else (False,):
        plain, hooked = FlowTable("n", "c", accelerate=accelerate), FlowTable("n", "c")
        for i, dg in enumerate(datagrams):
            assert feed_sflow(plain, dg, T0 + i) == feed_sflow(hooked, dg, T0 + i, everything)
        assert _wire(plain.tick(T0 + FLUSH_AFTER_MS).expired) == _wire(
            hooked.tick(T0 + FLUSH_AFTER_MS).expired
        )
    assert seen and all(decode(f).layers[0] == "Ethernet" for f in seen)

    results = []
    for accelerate in (False, True) if ACCELERATED else (False,):
        table = FlowTable("n", "c", accelerate=accelerate)
        got = [feed_sflow(table, dg, T0 + i, _no_udp) for i, dg in enumerate(datagrams)]
        flows = _wire(table.tick(T0 + FLUSH_AFTER_MS).expired)
        results.append((got, flows, table.stats))
        assert sum(g.filtered for g in got) > 0
        outer = [f for f in flows if "ParentUUID" not in f]
        assert outer and not any("UDP" in f["LayersPath"] for f in outer)
    assert all(r == results[0] for r in results)


def test_feed_sflow_accept_hook_sees_ip_headers_behind_a_zero_ethernet_header() -> None:
    ip = _ip4(1, _icmp(8, 1), bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2)))
    record = struct.pack(">IIII", 11, len(ip) + 14, 0, len(ip)) + ip  # sampled_header, IPv4
    sample = struct.pack(">IIIIIIII", 1, 1, 1, 1, 0, 0, 2, 1)  # flow_sample, 1 record
    sample += struct.pack(">II", 1, len(record)) + record
    dg = struct.pack(">IIIIIII", 5, 1, 0x7F000001, 0, 1, 1000, 1)
    dg += struct.pack(">II", 1, len(sample)) + sample
    seen: list[bytes] = []
    table = FlowTable("n", "c")
    got = feed_sflow(table, dg, T0, lambda f: seen.append(f) is None)
    assert got.error is None and got.filtered == 0 and table.stats.packets == 1
    assert seen == [bytes(12) + b"\x08\x00" + ip]
    assert feed_sflow(FlowTable("n", "c"), dg, T0, lambda f: False).filtered == 1


def test_feed_sflow_error_feeds_nothing() -> None:
    table = FlowTable("n", "c")
    got = feed_sflow(table, b"\x00\x00\x00\x04" + b"\x00" * 30, T0)
    assert got.flow_samples == 0 and got.counters == []
    assert got.error == "at offset 0: unsupported sFlow version 4"
    assert table.stats.packets == 0


# -- TPACKET_V3 blocks --------------------------------------------------------------------


def tpacket_block(frames: list[tuple[int, bytes]], vlan_tci: int | None = None) -> bytes:
    """A TPACKET_V3 block as the kernel lays it out (tpacket_block_desc, tpacket3_hdr)."""
    body = b""
    first = 48
    hdr_len = 48  # tpacket3_hdr padded; frames start at tp_mac
    entries = []
    for t, f in frames:
        size = (hdr_len + len(f) + 15) & ~15
        entries.append((t, f, size))
    off = first
    out = bytearray(first)
    for i, (t, f, size) in enumerate(entries):
        nxt = size if i < len(entries) - 1 else 0
        status = 0
        tci = 0
        if vlan_tci is not None:
            status = 0x10
            tci = vlan_tci
        hdr = struct.pack(
            "=IIIIIIHHIIHH8x", nxt, t // 1000, (t % 1000) * 1_000_000, len(f), len(f) + 4,
            status, hdr_len, hdr_len, 0, tci, 0, 0,
        )  # fmt: skip
        body = hdr + f
        out += body + b"\0" * (size - len(body))
        off += size
    struct.pack_into("=IIIII", out, 0, 3, 0, 1, len(entries), first)
    return bytes(out)


@needs_compiled
@pytest.mark.parametrize("vlan", [None, 7])
def test_tpacket_block_identical(vlan: int | None) -> None:
    frames = mixed_frames(21, 600, 50)
    if vlan is not None:
        frames = [(t, f) for t, f in frames if f[12:14] in (b"\x08\x00", b"\x86\xdd")]
    results = []
    for accelerate in (False, True):
        table = FlowTable("n", "c", accelerate=accelerate)
        count = 0
        for i in range(0, len(frames), 64):
            count += feed_tpacket_block(table, memoryview(tpacket_block(frames[i : i + 64], vlan)))
        assert count == len(frames)
        results.append((_wire(table.tick(T0 + FLUSH_AFTER_MS).expired), table.stats))
    assert results[0] == results[1]
    if vlan is not None:
        outer = [f for f in results[0][0] if "ParentUUID" not in f]
        assert outer and all(f["LayersPath"].startswith("Ethernet/Dot1Q/") for f in outer)


# -- the C decoder against the pure one ---------------------------------------------------

_READ = (
    "layers", "eth_src", "eth_dst", "vlans", "ip_version", "ip_src", "ip_dst", "ip_proto",
    "src_port", "dst_port", "icmp_type", "icmp_code", "icmp_id", "tunnel", "tunnel_id",
    "application", "error", "inner",
)  # fmt: skip


@needs_compiled
@pytest.mark.parametrize("first", ["Ethernet", "IPv4", "IPv6"])
def test_c_decoder_agrees_with_the_pure_one(first: str) -> None:
    """Every frame C takes gives, field for field, what the table reads from ``decode``."""
    from pyskydive.flow.table import _packet_from_fields

    frames = [f for _, f in mixed_frames(31, 3000, 300)]
    frames += [bytes.fromhex(line) for line in _golden_hex()]
    fast = FlowTable("n", "c")._fast
    taken = 0
    for frame in frames:
        if first != "Ethernet":
            frame = frame[14:]  # untagged ones start with IPv4/IPv6; others fail both ways
        fields = fast.parse_fields(frame, first)
        if fields is None:
            continue
        taken += 1
        want = decode(frame, first=first)
        got = _packet_from_fields(fields)
        assert [getattr(got, n) for n in _READ] == [getattr(want, n) for n in _READ], frame.hex()
    assert taken > 100


def _golden_hex() -> list[str]:
    import json

    cases = json.loads((FRAMES_PCAP.parent / "frames.json").read_text())
    return [c["hex"] for c in cases]


def _udp_flow_frame(i: int) -> bytes:
    ip = _ip4(17, _udp(1024 + (i & 1023), 5000, b"m"), (10 << 24 | i >> 10).to_bytes(4, "big"),
              b"\xac\x10\x00\x01")  # fmt: skip
    return _mac(1) + _mac(2) + b"\x08\x00" + ip


@needs_compiled
def test_many_flows_grow_the_c_table() -> None:
    """Thousands of flows: the C table rehashes and reuses freed entries as flows expire."""
    frames = [(T0 + i, _udp_flow_frame(i % 6000)) for i in range(15000)]
    results = []
    for accelerate in (False, True):
        table = FlowTable("n", "c", accelerate=accelerate, expire_after_ms=2500)
        out: list[Any] = []
        for i, (now, frame) in enumerate(frames):
            table.feed_frame(frame, now, 60)
            if i % 1000 == 999:
                out.append(_wire(table.tick(now).expired))
        out.append(_wire(table.tick(T0 + FLUSH_AFTER_MS).expired))
        results.append((out, table.stats))
    assert results[0] == results[1]
    assert results[0][1].flows_created > 6000


@needs_compiled
@pytest.mark.parametrize(("nanosecond", "big_endian"), [(True, False), (False, True), (True, True)])
def test_pcap_feeder_byte_orders_and_resolutions(nanosecond: bool, big_endian: bool) -> None:
    frames = mixed_frames(12, 500, 40)
    data = write_pcap(
        ((t * 1_000_000 + 123, f) for t, f in frames), nanosecond=nanosecond, big_endian=big_endian
    )
    assert _pcap_flows(data, True, 4096) == _pcap_flows(data, False, 4096)


@needs_compiled
def test_pcap_feeder_linux_sll_and_errors() -> None:
    sll = write_pcap(
        [(T0 * 1_000_000, b"\x00\x00\x03\x04\x00\x06" + bytes(8) + b"\x08\x00" + f[14:])
         for _, f in mixed_frames(3, 50, 5) if f[12:14] == b"\x08\x00"],
        linktype=113,
    )  # fmt: skip
    assert _pcap_flows(sll, True, 100) == _pcap_flows(sll, False, 100)
    good = write_pcap((t * 1_000_000, f) for t, f in mixed_frames(3, 50, 5))
    bad_caplen = good[:24] + struct.pack("<IIII", 1, 0, 0x50000, 10) + good[40:]
    for data in (good[:-5], good[:20], b"\x00" * 30, bad_caplen, good[:100] + bad_caplen[24:]):
        errors = []
        for accelerate in (True, False):
            table = FlowTable("n", "c", accelerate=accelerate)
            feeder = PcapFlowFeeder(table)
            with pytest.raises(ProtocolError) as info:
                for i in range(0, len(data), 64):
                    feeder.feed(data[i : i + 64])
                feeder.finish()
            errors.append((str(info.value), info.value.offset, table.stats.packets))
        assert errors[0] == errors[1]


# -- generative: mutated frames ----------------------------------------------------------

_BASE = [f for _, f in mixed_frames(41, 400, 80)]
_MUTATION = st.tuples(
    st.integers(0, len(_BASE) - 1),  # which frame
    st.integers(0, 130),  # where
    st.binary(min_size=0, max_size=3),  # bytes written there
    st.integers(0, 160),  # cut the frame to this length (0: keep it whole)
)


def _mutate(m: tuple[int, int, bytes, int]) -> bytes:
    i, at, data, cut = m
    f = bytearray(_BASE[i])
    f[at : at + len(data)] = data
    return bytes(f[:cut] if cut else f)


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(st.lists(_MUTATION, min_size=1, max_size=60), st.sampled_from(list(LayerKeyMode)))
def test_mutated_frames_identical(mutations: list[Any], mode: LayerKeyMode) -> None:
    """Damaged frames (bytes overwritten, cut anywhere) give the same flows on both paths."""
    from pyskydive.flow.table import _packet_from_fields

    frames = [(T0 + 7 * n, _mutate(m)) for n, m in enumerate(mutations)]
    fast = FlowTable("n", "c", layer_key_mode=mode)._fast
    for _, frame in frames:
        fields = fast.parse_fields(frame, "Ethernet")
        if fields is not None:
            want, got = decode(frame), _packet_from_fields(fields)
            assert [getattr(got, n) for n in _READ] == [getattr(want, n) for n in _READ]
    pure = run_frames(frames, False, mode=mode, tick_every=9)
    assert run_frames(frames, True, mode=mode, tick_every=9) == pure
