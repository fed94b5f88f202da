"""Fuzzing the packet decoder and the flow table behind it (hypothesis).

Inputs are random bytes from every first layer, and structure-aware mutations of the valid
frames of ``tests/data/packets/frames.pcap``: byte flips, "interesting" values (0, 0xff,
0x80...) written over length/type fields, truncations, insertions and splices of two frames.

Properties: :func:`~pyskydive.protocols.packet.decode` never raises on bytes (a malformed frame
comes back with ``error`` set); a :class:`~pyskydive.flow.FlowTable` fed those frames never
raises, counts every frame in ``stats.packets`` and every frame the decoder finds malformed in
``stats.decode_errors``; the compiled and pure-Python tables agree.

Bounded and derandomized so CI runs the same examples each time (a few seconds);
``PYSKYDIVE_FUZZ_EXAMPLES=20000`` runs longer, still derandomized.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyskydive.flow import FlowTable
from pyskydive.protocols.packet import Packet, decode
from pyskydive.protocols.pcap import PcapReader

DATA = Path(__file__).parents[2] / "data" / "packets"
EXAMPLES = int(os.environ.get("PYSKYDIVE_FUZZ_EXAMPLES", "1000"))
FIRST_LAYERS = ("Ethernet", "LinuxSLL", "IPv4", "IPv6", "MPLS", "GRE", "VXLAN", "Geneve", "UDP")

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _valid_frames() -> list[bytes]:
    reader = PcapReader()
    records = reader.feed((DATA / "frames.pcap").read_bytes())
    reader.close()
    return [bytes(r.data) for r in records]


VALID = _valid_frames()
_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid input with a few structure-blind but length-field-aware mutations."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "set", "set16", "truncate", "insert", "splice")))
        if not data:
            data = bytearray(draw(st.binary(min_size=1, max_size=8)))
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from(_INTERESTING))
        elif op == "set16":  # lengths, ethertypes, ports, counts
            value = draw(st.sampled_from((0, 1, 0x7FFF, 0x8000, 0xFFFF, len(data), len(data) + 1)))
            data[pos : pos + 2] = (value & 0xFFFF).to_bytes(2, "big")
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            other = draw(st.sampled_from(seeds))
            data[pos:] = other[draw(st.integers(0, max(len(other) - 1, 0))) :]
    return bytes(data)


FRAMES = st.one_of(st.binary(max_size=160), mutated(VALID))


def _assert_sane(packet: Packet) -> None:
    assert isinstance(packet, Packet)
    assert packet.error is None or (isinstance(packet.error, str) and packet.error)
    assert isinstance(packet.layers, tuple) and all(isinstance(x, str) for x in packet.layers)
    inner = packet.inner
    depth = 0
    while inner is not None:
        assert isinstance(inner, Packet)
        inner, depth = inner.inner, depth + 1
        assert depth < 64


def _is_error(packet: Packet) -> bool:
    """What FlowTable counts in ``stats.decode_errors``."""
    return packet.error is not None or (packet.inner is not None and bool(packet.errors))


def test_seed_frames_are_mostly_valid() -> None:
    # frames.pcap also holds a few deliberately malformed frames (see its make.py)
    assert len(VALID) >= 20
    assert sum(decode(f).error is None for f in VALID) >= len(VALID) * 3 // 4


@FUZZ
@given(frame=FRAMES, first=st.sampled_from(FIRST_LAYERS))
def test_decode_never_raises(frame: bytes, first: str) -> None:
    _assert_sane(decode(frame, first=first))
    _assert_sane(decode(memoryview(frame), first=first))


@FUZZ
@given(frames=st.lists(FRAMES, min_size=1, max_size=12))
def test_flow_table_never_raises_and_counts_decode_errors(frames: list[bytes]) -> None:
    expected_errors = sum(_is_error(decode(f)) for f in frames)
    pure = FlowTable("tid", "cap", accelerate=False)
    fast = FlowTable("tid", "cap")  # the C path when the extension is built
    for table in (pure, fast):
        for i, frame in enumerate(frames):
            table.feed_frame(frame, 1_000 + i, len(frame))
        assert table.stats.packets == len(frames)
        assert table.stats.decode_errors == expected_errors
        table.tick(2_000)
        expired = table.tick(10**12).expired
        assert len(table) == 0
        for flow in expired:
            flow.to_wire()
    assert pure.stats.flows_created == fast.stats.flows_created
