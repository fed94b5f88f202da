"""Packet decoder on golden frames (tests/data/packets/make.py), truncations and byte flips."""

from __future__ import annotations

import ipaddress
import json
import random
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from pyskydive.errors import ProtocolError
from pyskydive.protocols.layers import _ipv6_text
from pyskydive.protocols.packet import TCP_ACK, TCP_SYN, DecodeError, Packet, decode
from pyskydive.protocols.pcap import PcapReader

DATA = Path(__file__).parents[2] / "data" / "packets"
GOLDEN: list[dict[str, Any]] = json.loads((DATA / "frames.json").read_text())
FRAMES = [bytes.fromhex(g["hex"]) for g in GOLDEN]


def check(packet: Packet, expected: dict[str, Any]) -> None:
    for key, want in expected.items():
        if key == "inner":
            assert packet.inner is not None
            check(packet.inner, want)
            continue
        got = getattr(packet, key)
        if isinstance(got, tuple):
            got = list(got)
        assert got == want, f"{key}: {got!r} != {want!r}"


@pytest.mark.parametrize("golden", GOLDEN, ids=[g["name"] for g in GOLDEN])
def test_golden(golden: dict[str, Any]) -> None:
    packet = decode(bytes.fromhex(golden["hex"]))
    expected = {"error": None, "encapsulated": False, **golden["expected"]}
    check(packet, expected)
    if "inner" not in expected:
        assert packet.inner is None


def test_golden_memoryview_and_bytearray_agree() -> None:
    for frame in FRAMES:
        want = decode(frame)
        assert decode(memoryview(frame)) == want
        assert decode(bytearray(frame)) == want


def test_frame_with_offset_memoryview() -> None:
    frame = FRAMES[0]
    assert decode(memoryview(b"junk" + frame)[4:]) == decode(frame)


def test_first_layer_ip_and_linux_sll() -> None:
    syn = next(f for g, f in zip(GOLDEN, FRAMES, strict=True) if g["name"] == "tcp_syn")
    raw = decode(syn[14:], first="IPv4")
    assert raw.layers_path == "IPv4/TCP"
    assert raw.tcp_flags == TCP_SYN
    sll = b"\x00\x04\x00\x01\x00\x06" + syn[6:12] + b"\0\0" + b"\x08\x00" + syn[14:]
    p = decode(sll, first="LinuxSLL")
    assert p.layers == ("LinuxSLL", "IPv4", "TCP")
    assert p.layers_path == "IPv4/TCP"  # as Skydive: the cooked header is not a layer of the path
    assert p.eth_src == "02:00:00:00:00:0a"


def test_unknown_first_layer_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b"", first="Token Ring")
    assert isinstance(info.value, ProtocolError)
    assert info.value.offset == 0


def test_memoryview_of_other_formats() -> None:
    frame = FRAMES[0][: len(FRAMES[0]) // 2 * 2]
    assert decode(memoryview(frame).cast("H")) == decode(frame)
    with pytest.raises(DecodeError):
        decode(memoryview(frame)[::2])  # not contiguous: a caller error


def test_tcp_flag_constants() -> None:
    p = decode(FRAMES[[g["name"] for g in GOLDEN].index("qinq_8021ad")])
    assert p.tcp_flags == TCP_ACK
    assert p.layers_path == "Ethernet/Dot1Q/Dot1Q/IPv4/TCP"


def test_errors_collects_inner_errors() -> None:
    idx = [g["name"] for g in GOLDEN].index("vxlan_inner_tcp")
    frame = FRAMES[idx]
    p = decode(frame[:-4])  # cut into the inner TCP header; IP/UDP lengths now lie
    assert p.error is None
    assert p.inner is not None
    assert p.inner.encapsulated
    assert p.errors == [p.inner.error]
    assert p.errors[0].startswith("truncated TCP header")


def _assert_sane(p: Packet, frame_len: int) -> None:
    assert isinstance(p, Packet)
    assert p.length == frame_len
    assert p.payload_len >= 0
    assert all(isinstance(name, str) for name in p.layers)
    if p.error is not None:
        assert "offset" in p.error


@pytest.mark.parametrize("golden", GOLDEN, ids=[g["name"] for g in GOLDEN])
def test_every_truncation(golden: dict[str, Any]) -> None:
    frame = bytes.fromhex(golden["hex"])
    full = decode(frame)
    for cut in range(len(frame)):
        p = decode(frame[:cut])
        _assert_sane(p, cut)
        # a prefix never decodes more layers than the whole frame
        assert len(p.layers) <= len(full.layers)
        assert p.layers == full.layers[: len(p.layers)]


def test_seeded_random_byte_flips() -> None:
    rng = random.Random(5)
    for _ in range(20_000):
        frame = bytearray(rng.choice(FRAMES))
        for _ in range(rng.randint(1, 6)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        if rng.random() < 0.3:
            del frame[rng.randrange(len(frame)) :]
        _assert_sane(decode(bytes(frame)), len(frame))


def test_seeded_random_garbage_from_every_first_layer() -> None:
    rng = random.Random(6)
    firsts = ["Ethernet", "LinuxSLL", "IPv4", "IPv6", "MPLS", "GRE", "VXLAN", "Geneve", "UDP"]
    for _ in range(20_000):
        frame = rng.randbytes(rng.randrange(0, 120))
        _assert_sane(decode(frame, first=rng.choice(firsts)), len(frame))


def test_packet_is_immutable_without_dict() -> None:
    p = decode(FRAMES[0])
    assert not hasattr(p, "__dict__")
    with pytest.raises(AttributeError):
        p.error = "x"  # type: ignore[misc]
    assert set(Packet._fields) >= {"layers", "error", "inner", "payload_len"}
    assert p._replace(error="x").error == "x"


def test_ipv6_text_matches_rfc5952_as_ipaddress_prints_it() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        groups = [rng.choice([0, 0, 0, 1, 0xFFFF, rng.randrange(1 << 16)]) for _ in range(8)]
        raw = struct.pack("!8H", *groups)
        want = ipaddress.IPv6Address(raw)
        if want.ipv4_mapped is None:  # Go (Skydive) prints those dotted; see the flow table
            assert _ipv6_text(raw) == want.compressed


def test_golden_pcap_holds_the_golden_frames() -> None:
    reader = PcapReader()
    records = reader.feed((DATA / "frames.pcap").read_bytes())
    reader.close()
    assert [r.data for r in records] == FRAMES  # re-run make.py after changing a case


def _bench(seconds: float = 2.0) -> float:
    """Packets/s over a mix of the golden frames (no assertion: benchmarks report)."""
    names = {"tcp_syn", "tcp_all_flags_payload", "dns_udp", "icmpv4_echo", "dot1q_udp",
             "icmpv6_echo", "vxlan_inner_tcp", "arp_request"}  # fmt: skip
    mix = [f for g, f in zip(GOLDEN, FRAMES, strict=True) if g["name"] in names]
    mix = mix * 125
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for frame in mix:
            decode(frame)
        count += len(mix)
    return count / (time.perf_counter() - start)


if __name__ == "__main__":
    print(f"decode: {_bench():,.0f} packets/s")


def test_layer_field_indexes_match_packet() -> None:
    from pyskydive.protocols import _packet_fields as fields

    for i, name in enumerate(Packet._fields):
        assert getattr(fields, f"_{name.upper()}") == i
    assert len(Packet._fields) == fields._NFIELDS
    assert list(Packet()) == fields._TEMPLATE
