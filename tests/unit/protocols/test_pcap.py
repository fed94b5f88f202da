"""pcap reader/writer: round trips in both byte orders and resolutions, random chunking, errors."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from pyskydive.errors import ProtocolError
from pyskydive.protocols.packet import decode
from pyskydive.protocols.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    PcapReader,
    Record,
    first_layer,
    write_header,
    write_pcap,
    write_record,
)

GOLDEN_PCAP = Path(__file__).parents[2] / "data" / "packets" / "frames.pcap"


def records(n: int, seed: int) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    return [
        (1_700_000_000_000_000_000 + i * 1_234_567_891 + rng.randrange(1000) * 1000,
         rng.randbytes(rng.randrange(0, 1600)))
        for i in range(n)
    ]  # fmt: skip


def feed_in_chunks(data: bytes, seed: int) -> tuple[PcapReader, list[Record]]:
    rng = random.Random(seed)
    reader = PcapReader()
    out: list[Record] = []
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 2, 3, 7, 16, 24, 100, 1500, 65536])
        out += reader.feed(data[pos : pos + step])
        pos += step
    reader.close()
    return reader, out


@pytest.mark.parametrize("nanosecond", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
def test_round_trip_random_chunks(nanosecond: bool, big_endian: bool) -> None:
    recs = records(200, seed=1)
    data = write_pcap(recs, nanosecond=nanosecond, big_endian=big_endian)
    for seed in range(5):
        reader, got = feed_in_chunks(data, seed)
        assert reader.header is not None
        assert reader.header.big_endian is big_endian
        assert reader.header.nanosecond is nanosecond
        assert reader.header.linktype == LINKTYPE_ETHERNET
        want_ts = [ts if nanosecond else ts // 1000 * 1000 for ts, _ in recs]
        assert [r.timestamp_ns for r in got] == want_ts
        assert [r.data for r in got] == [d for _, d in recs]
        assert all(r.captured_len == r.original_len == len(r.data) for r in got)


def test_whole_file_at_once_and_original_length() -> None:
    data = write_header(linktype=LINKTYPE_LINUX_SLL) + write_record(
        5_000_001_000, b"abc", original_len=1500
    )
    reader = PcapReader()
    (rec,) = reader.feed(data)
    assert rec == Record(5_000_001_000, 3, 1500, b"abc")
    assert reader.header is not None
    assert first_layer(reader.header.linktype) == "LinuxSLL"


def test_golden_pcap_decodes_like_golden_frames() -> None:
    reader = PcapReader()
    recs = reader.feed(GOLDEN_PCAP.read_bytes())
    reader.close()
    assert reader.header is not None
    assert len(recs) > 20
    first = first_layer(reader.header.linktype)
    assert decode(recs[0].data, first=first).layers_path == "Ethernet/IPv4/ICMPv4"


def test_bad_magic() -> None:
    with pytest.raises(ProtocolError) as info:
        PcapReader().feed(b"\x0a\x0d\x0d\x0a" + bytes(40))  # a pcapng section header
    assert info.value.offset == 0
    assert "magic" in info.value.reason


def test_bad_version() -> None:
    data = bytearray(write_header())
    struct.pack_into("<H", data, 4, 1)
    with pytest.raises(ProtocolError) as info:
        PcapReader().feed(bytes(data))
    assert info.value.offset == 4


def test_truncated_record_on_close_carries_offset() -> None:
    data = write_pcap([(0, b"x" * 10), (1, b"y" * 10)])
    reader = PcapReader()
    assert len(reader.feed(data[:-3])) == 1
    with pytest.raises(ProtocolError) as info:
        reader.close()
    assert info.value.offset == 24 + 16 + 10


def test_truncated_global_header_on_close() -> None:
    reader = PcapReader()
    assert reader.feed(write_header()[:10]) == []
    with pytest.raises(ProtocolError):
        reader.close()


def test_desynchronised_stream_is_an_error_with_offset() -> None:
    data = write_pcap([(0, b"x" * 10)]) + struct.pack("<IIII", 0, 0, 0x7FFFFFFF, 10)
    reader = PcapReader()
    with pytest.raises(ProtocolError) as info:
        reader.feed(data)
    assert info.value.offset == 24 + 16 + 10


def test_unsupported_link_type() -> None:
    with pytest.raises(ProtocolError):
        first_layer(105)  # 802.11


def test_random_garbage_only_protocol_errors() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        data = write_header()[: rng.randrange(25)] + rng.randbytes(rng.randrange(200))
        reader = PcapReader()
        try:
            for i in range(0, len(data), 7):
                reader.feed(data[i : i + 7])
            reader.close()
        except ProtocolError:
            pass
