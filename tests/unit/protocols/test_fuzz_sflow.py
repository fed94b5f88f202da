"""Fuzzing the sFlow v5 decoder and the flow table fed from it (hypothesis).

Inputs are random bytes behind a plausible header, and structure-aware mutations of the real
Open vSwitch datagrams of ``../shared/reference/sflow-ovs/``: XDR words (counts, lengths,
formats, enterprise/format tags) overwritten with edge values, byte flips inside the sampled
packet headers, truncations, insertions and splices of two datagrams.

Properties: :func:`~pyskydive.protocols.sflow.decode_datagram` returns a ``Datagram`` or raises
:class:`~pyskydive.errors.ProtocolError` (with an offset inside the input), nothing else;
:func:`~pyskydive.flow.fast.feed_sflow` never raises, reports the decode error as text, and
the table counts every sampled header the packet decoder finds malformed in
``stats.decode_errors``; the compiled and pure-Python paths agree.

Bounded and derandomized (same examples on every CI run, a few seconds);
``PYSKYDIVE_FUZZ_EXAMPLES=20000`` runs longer.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyskydive.errors import ProtocolError
from pyskydive.flow import FlowTable
from pyskydive.flow.fast import feed_sflow
from pyskydive.protocols.packet import decode
from pyskydive.protocols.sflow import Datagram, FlowSample, RawPacketHeader, decode_datagram

REFERENCE = Path(__file__).parents[3].parent / "shared" / "reference" / "sflow-ovs"
BIN = REFERENCE / "sflow_samples.bin"
EXAMPLES = int(os.environ.get("PYSKYDIVE_FUZZ_EXAMPLES", "1500"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

pytestmark = pytest.mark.skipif(
    not BIN.exists(), reason=f"reference OVS sFlow datagrams not found at {REFERENCE}"
)

# sampled-header protocol → first layer, as flow/fast.py feeds them (sflow_version_5.txt)
_FIRST = {1: "Ethernet", 11: "IPv4", 12: "IPv6"}


def _reference() -> list[bytes]:
    if not BIN.exists():
        return [b""]
    data = BIN.read_bytes()
    out, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from(">I", data, off)
        out.append(data[off + 4 : off + 4 + n])
        off += 4 + n
    return out


SEEDS = _reference()
_WORDS = (0, 1, 2, 3, 4, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0xFFFF_FFFC, 1 << 16)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            data = bytearray(draw(st.binary(min_size=4, max_size=16)))
        op = draw(st.sampled_from(("word", "word", "flip", "truncate", "insert", "splice")))
        pos = draw(st.integers(0, len(data) - 1))
        if op == "word":  # XDR is 4-byte aligned: hit counts, lengths and tags
            pos &= ~3
            word = draw(st.sampled_from((*_WORDS, len(data) - pos, len(data) - pos + 4)))
            data[pos : pos + 4] = struct.pack(">I", word & 0xFFFF_FFFF)
        elif op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        else:
            other = draw(st.sampled_from(SEEDS))
            data[pos:] = other[draw(st.integers(0, max(len(other) - 1, 0))) :]
    return bytes(data)


def _garbage() -> st.SearchStrategy[bytes]:
    head = st.sampled_from((struct.pack(">II", 5, 1), struct.pack(">II", 5, 2), b""))
    return st.builds(lambda h, rest: h + rest, head, st.binary(max_size=200))


DATAGRAMS = st.one_of(mutated(), _garbage())


def _decode(data: bytes) -> Datagram | None:
    try:
        result = decode_datagram(data)
    except ProtocolError as exc:
        assert exc.offset is not None and 0 <= exc.offset <= len(data), exc
        assert str(exc)
        return None
    assert isinstance(result, Datagram)
    return result


def _expected_header_errors(dg: Datagram | None) -> tuple[int, int]:
    """(sampled headers the table is fed, those the packet decoder finds malformed)."""
    fed = errors = 0
    for sample in dg.samples if dg is not None else ():
        if not isinstance(sample, FlowSample):
            continue
        for rec in sample.records:
            if isinstance(rec, RawPacketHeader) and rec.protocol in _FIRST:
                fed += 1
                p = decode(rec.header, first=_FIRST[rec.protocol])
                errors += p.error is not None or (p.inner is not None and bool(p.errors))
    return fed, errors


def test_reference_datagrams_decode() -> None:
    assert len(SEEDS) == 100
    assert all(_decode(d) is not None for d in SEEDS)


@FUZZ
@given(data=DATAGRAMS)
def test_decode_raises_only_protocol_error(data: bytes) -> None:
    _decode(data)
    _decode(bytearray(data))  # type: ignore[arg-type]


@FUZZ
@given(datagrams=st.lists(DATAGRAMS, min_size=1, max_size=4))
def test_feed_sflow_never_raises_and_counts_decode_errors(datagrams: list[bytes]) -> None:
    decoded = [_decode(d) for d in datagrams]
    fed = errors = 0
    for dg in decoded:
        f, e = _expected_header_errors(dg)
        fed, errors = fed + f, errors + e
    pure = FlowTable("tid", "cap", accelerate=False)
    fast = FlowTable("tid", "cap")  # the C path when the extension is built
    results = []
    for table in (pure, fast):
        got = []
        for i, (data, dg) in enumerate(zip(datagrams, decoded, strict=True)):
            feed = feed_sflow(table, data, 1_000 + i)
            assert (feed.error is None) == (dg is not None), feed.error
            got.append((feed.flow_samples, len(feed.counters), feed.error is None))
        assert table.stats.packets == fed
        assert table.stats.decode_errors == errors
        table.tick(10**12)
        assert len(table) == 0
        results.append(got)
    assert results[0] == results[1]
    assert pure.stats.flows_created == fast.stats.flows_created
