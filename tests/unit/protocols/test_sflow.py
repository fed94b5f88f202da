"""sFlow v5 decoder: real Open vSwitch datagrams against sflowtool, golden round-trips, fuzzing."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest

from pyskydive.errors import ProtocolError
from pyskydive.protocols.sflow import (
    AppResources,
    CounterRecord,
    CounterSample,
    Datagram,
    EthernetCounters,
    EthernetFrame,
    ExtendedGateway,
    ExtendedRouter,
    ExtendedSwitch,
    FlowRecord,
    FlowSample,
    GenericInterfaceCounters,
    HeaderProtocol,
    OpenFlowPort,
    OvsDpStats,
    PortName,
    ProcessorCounters,
    RawPacketHeader,
    Sample,
    SampledIPv4,
    SampledIPv6,
    UnknownRecord,
    UnknownSample,
    VlanCounters,
    counters_to_metrics,
    decode_datagram,
)

REFERENCE = Path(__file__).parents[3].parent / "shared" / "reference" / "sflow-ovs"
BIN = REFERENCE / "sflow_samples.bin"
JSONL = REFERENCE / "sflow_samples.sflowtool.jsonl"

needs_reference = pytest.mark.skipif(
    not BIN.exists(), reason=f"reference OVS sFlow datagrams not found at {REFERENCE}"
)


def reference_datagrams() -> list[bytes]:
    """The .bin framing: each datagram as a 4-byte big-endian length then its bytes."""
    data = BIN.read_bytes()
    out, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from(">I", data, off)
        out.append(data[off + 4 : off + 4 + n])
        off += 4 + n
    assert off == len(data)
    return out


def sflowtool_decodes() -> list[dict[str, Any]]:
    lines = JSONL.read_text().splitlines()
    assert lines[0].startswith("pcap ")  # sflowtool's pcap header line
    return [json.loads(line) for line in lines[1:]]


# --- against sflowtool ----------------------------------------------------------------------


def _port(fmt: int, value: int) -> str:
    return {0: str(value), 1: f"dropCode {value}", 2: f"multiple {value}"}[fmt]


def _check_flow_record(rec: FlowRecord, el: dict[str, str]) -> None:
    if el["flowBlock_tag"] == "0:1":
        assert isinstance(rec, RawPacketHeader)
        assert rec.protocol == int(el["headerProtocol"])
        assert rec.frame_length == int(el["sampledPacketSize"])
        assert rec.stripped == int(el["strippedBytes"])
        assert len(rec.header) == int(el["headerLen"])
        assert rec.header.hex("-").upper() == el["headerBytes"]
    elif el["flowBlock_tag"] == "0:1001":
        assert rec == ExtendedSwitch(
            int(el["in_vlan"]), int(el["in_priority"]), int(el["out_vlan"]), int(el["out_priority"])
        )
    else:
        raise AssertionError(f"no comparison for flow block {el['flowBlock_tag']}")


_GENERIC_NAMES = {
    "if_index": "ifIndex",
    "if_type": "networkType",
    "if_speed": "ifSpeed",
    "if_direction": "ifDirection",
    "if_status": "ifStatus",
    "in_octets": "ifInOctets",
    "in_ucast_pkts": "ifInUcastPkts",
    "in_multicast_pkts": "ifInMulticastPkts",
    "in_broadcast_pkts": "ifInBroadcastPkts",
    "in_discards": "ifInDiscards",
    "in_errors": "ifInErrors",
    "in_unknown_protos": "ifInUnknownProtos",
    "out_octets": "ifOutOctets",
    "out_ucast_pkts": "ifOutUcastPkts",
    "out_multicast_pkts": "ifOutMulticastPkts",
    "out_broadcast_pkts": "ifOutBroadcastPkts",
    "out_discards": "ifOutDiscards",
    "out_errors": "ifOutErrors",
    "promiscuous_mode": "ifPromiscuousMode",
}
_ETHERNET_NAMES = {
    "alignment_errors": "dot3StatsAlignmentErrors",
    "fcs_errors": "dot3StatsFCSErrors",
    "single_collision_frames": "dot3StatsSingleCollisionFrames",
    "multiple_collision_frames": "dot3StatsMultipleCollisionFrames",
    "sqe_test_errors": "dot3StatsSQETestErrors",
    "deferred_transmissions": "dot3StatsDeferredTransmissions",
    "late_collisions": "dot3StatsLateCollisions",
    "excessive_collisions": "dot3StatsExcessiveCollisions",
    "internal_mac_transmit_errors": "dot3StatsInternalMacTransmitErrors",
    "carrier_sense_errors": "dot3StatsCarrierSenseErrors",
    "frame_too_longs": "dot3StatsFrameTooLongs",
    "internal_mac_receive_errors": "dot3StatsInternalMacReceiveErrors",
    "symbol_errors": "dot3StatsSymbolErrors",
}
_APP_NAMES = {
    "user_time": "user_time",
    "system_time": "system_time",
    "mem_used": "memory_used",
    "mem_max": "memory_max",
    "fd_open": "files_open",
    "fd_max": "files_max",
    "conn_open": "connections_open",
    "conn_max": "connections_max",
}
_OVSDP_NAMES = {
    "n_hit": "OVS_dp_hits",
    "n_missed": "OVS_dp_misses",
    "n_lost": "OVS_dp_lost",
    "n_mask_hit": "OVS_dp_mask_hits",
    "n_flows": "OVS_dp_flows",
    "n_masks": "OVS_dp_masks",
}
_COUNTER_CHECKS: dict[str, tuple[type, dict[str, str]]] = {
    "0:1": (GenericInterfaceCounters, _GENERIC_NAMES),
    "0:2": (EthernetCounters, _ETHERNET_NAMES),
    "0:2203": (AppResources, _APP_NAMES),
    "0:2207": (OvsDpStats, _OVSDP_NAMES),
}


def _check_counter_record(rec: CounterRecord, el: dict[str, str]) -> None:
    tag = el["counterBlock_tag"]
    if tag in _COUNTER_CHECKS:
        cls, names = _COUNTER_CHECKS[tag]
        assert isinstance(rec, cls)
        for ours, theirs in names.items():
            assert getattr(rec, ours) == int(el[theirs]), (tag, ours)
    elif tag == "0:1004":
        assert isinstance(rec, OpenFlowPort)
        assert f"{rec.datapath_id:016x}" == el["openflow_datapath_id"]
        assert rec.port_no == int(el["openflow_port"])
    elif tag == "0:1005":
        assert rec == PortName(el["ifName"])
    else:
        raise AssertionError(f"no comparison for counter block {tag}")


def _check_sample(sample: Sample, ref: dict[str, Any]) -> None:
    assert not isinstance(sample, UnknownSample)
    assert sample.sequence_number == int(ref["sampleSequenceNo"])
    assert f"{sample.source_id_type}:{sample.source_id_index}" == ref["sourceId"]
    assert len(sample.records) == len(ref["elements"])
    if isinstance(sample, FlowSample):
        assert ref["sampleType_tag"] == ("0:3" if sample.expanded else "0:1")
        assert sample.sampling_rate == int(ref["meanSkipCount"])
        assert sample.sample_pool == int(ref["samplePool"])
        assert sample.drops == int(ref["dropEvents"])
        assert _port(sample.input_format, sample.input) == ref["inputPort"]
        assert _port(sample.output_format, sample.output) == ref["outputPort"]
        for frec, el in zip(sample.records, ref["elements"], strict=True):
            _check_flow_record(frec, el)
    else:
        assert ref["sampleType_tag"] == ("0:4" if sample.expanded else "0:2")
        for crec, el in zip(sample.records, ref["elements"], strict=True):
            _check_counter_record(crec, el)


@needs_reference
def test_every_reference_datagram_matches_sflowtool() -> None:
    datagrams, refs = reference_datagrams(), sflowtool_decodes()
    assert len(datagrams) == len(refs) == 100
    kinds = {FlowSample: 0, CounterSample: 0}
    for raw, ref in zip(datagrams, refs, strict=True):
        dg = decode_datagram(raw)
        assert len(raw) == int(ref["datagramSize"])
        assert dg.version == int(ref["datagramVersion"]) == 5
        assert str(dg.agent_address) == ref["agent"]
        assert dg.sub_agent_id == int(ref["agentSubId"])
        assert dg.sequence_number == int(ref["packetSequenceNo"])
        assert dg.uptime_ms == int(ref["sysUpTime"])
        assert len(dg.samples) == int(ref["samplesInPacket"]) == len(ref["samples"])
        for sample, sref in zip(dg.samples, ref["samples"], strict=True):
            _check_sample(sample, sref)
            kinds[type(sample)] += 1
    assert kinds == {FlowSample: 608, CounterSample: 32}


@needs_reference
def test_reference_counters_become_interface_metrics() -> None:
    dg = decode_datagram(reference_datagrams()[0])
    sample = dg.samples[1]
    assert isinstance(sample, CounterSample)
    generic = sample.records[3]
    assert isinstance(generic, GenericInterfaceCounters)
    assert generic.if_index == 37
    # OVS sends 0xffffffff for the broadcast/multicast counters it does not keep.
    assert counters_to_metrics(generic) == {
        "RxBytes": 852,
        "TxBytes": 1368,
        "RxPackets": 10,
        "TxPackets": 16,
        "RxDropped": 0,
        "TxDropped": 0,
        "RxErrors": 0,
        "TxErrors": 0,
        "Multicast": 0,
    }


@needs_reference
def test_memoryview_input_decodes_the_same() -> None:
    raw = reference_datagrams()[3]
    assert decode_datagram(memoryview(raw)) == decode_datagram(raw)
    assert decode_datagram(bytearray(raw)) == decode_datagram(raw)
    padded = b"xx" + raw
    assert decode_datagram(memoryview(padded)[2:]) == decode_datagram(raw)
    interleaved = bytes(b for byte in raw for b in (byte, 0))
    assert decode_datagram(memoryview(interleaved)[::2]) == decode_datagram(raw)


# --- a tiny encoder, for golden round-trips ------------------------------------------------


def _opaque(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data + b"\0" * (-len(data) % 4)


def _addr(a: IPv4Address | IPv6Address | None) -> bytes:
    if a is None:
        return struct.pack(">I", 0)
    return struct.pack(">I", 1 if a.version == 4 else 2) + a.packed


def _u32s(values: tuple[int, ...]) -> bytes:
    return struct.pack(f">I{len(values)}I", len(values), *values)


def encode_flow_record(r: FlowRecord) -> bytes:
    if isinstance(r, RawPacketHeader):
        fmt, body = (
            1,
            struct.pack(">III", r.protocol, r.frame_length, r.stripped) + _opaque(r.header),
        )
    elif isinstance(r, EthernetFrame):
        fmt, body = 2, struct.pack(">I6s2x6s2xI", r.length, r.src_mac, r.dst_mac, r.type)
    elif isinstance(r, SampledIPv4 | SampledIPv6):
        last = r.tos if isinstance(r, SampledIPv4) else r.priority
        fmt = 3 if isinstance(r, SampledIPv4) else 4
        body = struct.pack(">II", r.length, r.protocol) + r.src_ip.packed + r.dst_ip.packed
        body += struct.pack(">IIII", r.src_port, r.dst_port, r.tcp_flags, last)
    elif isinstance(r, ExtendedSwitch):
        fmt = 1001
        body = struct.pack(">IIII", r.src_vlan, r.src_priority, r.dst_vlan, r.dst_priority)
    elif isinstance(r, ExtendedRouter):
        fmt, body = 1002, _addr(r.next_hop) + struct.pack(">II", r.src_mask_len, r.dst_mask_len)
    elif isinstance(r, ExtendedGateway):
        fmt = 1003
        body = _addr(r.next_hop) + struct.pack(">IIII", r.as_number, r.src_as, r.src_peer_as, 0)
        body = body[:-4] + struct.pack(">I", len(r.as_path))
        for seg_type, path in r.as_path:
            body += struct.pack(">I", seg_type) + _u32s(path)
        body += _u32s(r.communities) + struct.pack(">I", r.local_pref)
    else:
        return struct.pack(">I", r.enterprise << 12 | r.format) + _opaque(r.data)
    return struct.pack(">I", fmt) + _opaque(body)


_COUNTER_FORMATS: dict[type, tuple[int, str]] = {
    GenericInterfaceCounters: (1, ">IIQIIQIIIIIIQIIIIII"),
    EthernetCounters: (2, ">13I"),
    VlanCounters: (5, ">IQIIII"),
    ProcessorCounters: (1001, ">IIIQQ"),
    OpenFlowPort: (1004, ">QI"),
    AppResources: (2203, ">IIQQIIII"),
    OvsDpStats: (2207, ">6I"),
}


def encode_counter_record(r: CounterRecord) -> bytes:
    if isinstance(r, UnknownRecord):
        return struct.pack(">I", r.enterprise << 12 | r.format) + _opaque(r.data)
    if isinstance(r, PortName):
        return struct.pack(">I", 1005) + _opaque(_opaque(r.name.encode()))
    fmt, layout = _COUNTER_FORMATS[type(r)]
    values = [getattr(r, f) for f in r.__dataclass_fields__]
    return struct.pack(">I", fmt) + _opaque(struct.pack(layout, *values))


def encode_sample(s: Sample) -> bytes:
    if isinstance(s, UnknownSample):
        return struct.pack(">I", s.enterprise << 12 | s.format) + _opaque(s.data)
    if isinstance(s, FlowSample):
        if s.expanded:
            fmt, body = 3, struct.pack(
                ">IIIIIIIIII", s.sequence_number, s.source_id_type, s.source_id_index,
                s.sampling_rate, s.sample_pool, s.drops,
                s.input_format, s.input, s.output_format, s.output,
            )  # fmt: skip
        else:
            fmt, body = 1, struct.pack(
                ">IIIIIII", s.sequence_number, s.source_id_type << 24 | s.source_id_index,
                s.sampling_rate, s.sample_pool, s.drops,
                s.input_format << 30 | s.input, s.output_format << 30 | s.output,
            )  # fmt: skip
        recs = b"".join(encode_flow_record(r) for r in s.records)
    else:
        if s.expanded:
            fmt = 4
            body = struct.pack(">III", s.sequence_number, s.source_id_type, s.source_id_index)
        else:
            fmt = 2
            body = struct.pack(">II", s.sequence_number, s.source_id_type << 24 | s.source_id_index)
        recs = b"".join(encode_counter_record(r) for r in s.records)
    return struct.pack(">I", fmt) + _opaque(body + struct.pack(">I", len(s.records)) + recs)


def encode_datagram(d: Datagram) -> bytes:
    head = struct.pack(">I", d.version) + _addr(d.agent_address)
    head += struct.pack(">IIII", d.sub_agent_id, d.sequence_number, d.uptime_ms, len(d.samples))
    return head + b"".join(encode_sample(s) for s in d.samples)


GENERIC = GenericInterfaceCounters(
    7, 6, 10**10, 1, 3, 2**40 + 5, 100, 3, 2, 1, 4, 0xFFFFFFFF, 2**33, 200, 5, 0xFFFFFFFF, 6, 7, 1
)

HAND_MADE = [
    Datagram(
        5,
        IPv6Address("2001:db8::1"),
        3,
        42,
        123456,
        (
            FlowSample(
                sequence_number=1,
                source_id_type=0,
                source_id_index=7,
                sampling_rate=512,
                sample_pool=4096,
                drops=2,
                input_format=0,
                input=7,
                output_format=2,  # sent to 3 interfaces
                output=3,
                records=(
                    RawPacketHeader(HeaderProtocol.ETHERNET_ISO88023, 1518, 4, bytes(range(61))),
                    EthernetFrame(1514, b"\x00\x01\x02\x03\x04\x05", b"\xaa" * 6, 0x0800),
                    SampledIPv4(
                        1500,
                        6,
                        IPv4Address("10.0.0.1"),
                        IPv4Address("10.0.0.2"),
                        1234,
                        80,
                        0x12,
                        0,
                    ),
                    SampledIPv6(
                        1500, 17, IPv6Address("fe80::1"), IPv6Address("ff02::2"), 53, 5353, 0, 3
                    ),
                    ExtendedSwitch(10, 1, 20, 2),
                    ExtendedRouter(IPv4Address("192.0.2.1"), 24, 16),
                    ExtendedRouter(None, 0, 0),
                    ExtendedGateway(
                        IPv6Address("2001:db8::fe"),
                        65000,
                        65001,
                        65002,
                        ((2, (65002, 65003)), (1, (1, 2, 3))),
                        (0xFFFF0001,),
                        100,
                    ),
                    UnknownRecord(4413, 7, b"\x01\x02\x03\x04"),
                ),
            ),
            FlowSample(
                sequence_number=2,
                source_id_type=3,
                source_id_index=70000,  # does not fit the compact form's 24 bits
                sampling_rate=1,
                sample_pool=1,
                drops=0,
                input_format=1,  # discarded, reason 0x100
                input=0x100,
                output_format=0,
                output=0x3FFFFFFF,  # internal
                records=(RawPacketHeader(11, 20, 0, b"\x45" + b"\0" * 19),),
                expanded=True,
            ),
            CounterSample(
                9,
                0,
                7,
                (
                    GENERIC,
                    EthernetCounters(*range(13)),
                    VlanCounters(100, 2**35, 1, 2, 3, 4),
                    ProcessorCounters(1234, 5678, 9012, 2**34, 2**33),
                    OpenFlowPort(0xE615C11E3640, 65534),
                    PortName("veth-été"),
                    AppResources(1, 2, 3, 4, 5, 6, 7, 8),
                    OvsDpStats(1, 2, 3, 4, 5, 6),
                    UnknownRecord(0, 2100, b""),
                ),
            ),
            CounterSample(10, 1, 0x12345678, (PortName(""),), expanded=True),
            UnknownSample(4300, 1, b"\xde\xad\xbe\xef"),
        ),
    ),
    Datagram(5, IPv4Address("192.0.2.9"), 0, 1, 0, ()),
]


@pytest.mark.parametrize("datagram", HAND_MADE, ids=["everything", "empty"])
def test_hand_made_datagrams_round_trip(datagram: Datagram) -> None:
    assert decode_datagram(encode_datagram(datagram)) == datagram


def test_golden_bytes_of_a_minimal_flow_sample() -> None:
    golden = bytes.fromhex(
        "00000005 00000001 0a000001 00000000 00000007 000003e8 00000001"  # header, 1 sample
        "00000001 0000003c"  # flow sample, 60 bytes
        "00000003 00000021 00000040 00000080 00000000 00000005 80000002 00000001"
        "00000001 00000014 00000001 0000003c 00000000 00000002 abcd0000"  # sampled header
    )
    dg = decode_datagram(golden)
    assert dg == Datagram(
        5, IPv4Address("10.0.0.1"), 0, 7, 1000,
        (FlowSample(3, 0, 33, 64, 128, 0, 0, 5, 2, 2, (RawPacketHeader(1, 60, 0, b"\xab\xcd"),)),),
    )  # fmt: skip
    assert encode_datagram(dg) == golden


@needs_reference
def test_reference_datagrams_reencode_losslessly() -> None:
    # Not byte for byte: OVS leaves garbage (0xff) in the XDR padding after a sampled header,
    # which the decoder ignores as sflowtool does; the encoder writes zeros.
    for raw in reference_datagrams():
        dg = decode_datagram(raw)
        again = encode_datagram(dg)
        assert len(again) == len(raw)
        assert decode_datagram(again) == dg


def test_counters_to_metrics_skips_unknown_counters() -> None:
    assert counters_to_metrics(GENERIC) == {
        "RxBytes": 2**40 + 5,
        "TxBytes": 2**33,
        "RxPackets": 105,
        "TxPackets": 205,
        "RxDropped": 1,
        "TxDropped": 6,
        "RxErrors": 4,
        "TxErrors": 7,
        "Multicast": 3,
    }


# --- malformed input ------------------------------------------------------------------------

_MINIMAL = encode_datagram(HAND_MADE[0])
OVSDP_SAMPLE = CounterSample(1, 0, 1, (OvsDpStats(1, 2, 3, 4, 5, 6),))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated datagram header"),
        (struct.pack(">II", 4, 1) + bytes(20), "unsupported sFlow version 4"),
        (struct.pack(">II", 5, 3) + bytes(20), "unknown agent address type 3"),
        (struct.pack(">IIIIIII", 5, 1, 0, 0, 0, 0, 1000), "datagram claims 1000 samples"),
        (_MINIMAL + b"\0\0\0\0", "4 trailing bytes after the last sample"),
        (
            encode_datagram(Datagram(5, IPv4Address("1.2.3.4"), 0, 0, 0, (OVSDP_SAMPLE,)))
            .replace(struct.pack(">II", 2207, 24), struct.pack(">II", 2207, 20)),
            "OvsDpStats record is 20 bytes, expected 24",
        ),
    ],
    ids=["empty", "version", "address", "sample-count", "trailing", "record-size"],
)  # fmt: skip
def test_malformed_datagrams_raise_protocol_error(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_datagram(data)
    assert reason in info.value.reason
    assert info.value.offset is not None


def test_sampled_header_longer_than_its_record_is_rejected() -> None:
    sample = FlowSample(1, 0, 1, 1, 1, 0, 0, 1, 0, 2, (RawPacketHeader(1, 64, 0, b"abcd"),))
    raw = encode_datagram(Datagram(5, IPv4Address("1.2.3.4"), 0, 0, 0, (sample,)))
    raw = raw.replace(struct.pack(">I", 4) + b"abcd", struct.pack(">I", 9) + b"abcd")
    with pytest.raises(ProtocolError, match="sampled header length 9"):
        decode_datagram(raw)


def _fuzz_inputs() -> Iterator[bytes]:
    yield _MINIMAL
    yield encode_datagram(Datagram(5, IPv4Address("1.2.3.4"), 0, 0, 0, (OVSDP_SAMPLE,)))
    if BIN.exists():
        refs = reference_datagrams()
        yield from (refs[0], refs[1], refs[5], refs[50], refs[-1])


def _decode_or_protocol_error(data: bytes) -> None:
    try:
        result = decode_datagram(data)
    except ProtocolError as exc:
        assert exc.offset is not None and 0 <= exc.offset <= len(data)
    else:
        assert isinstance(result, Datagram)


def test_every_truncation_raises_protocol_error() -> None:
    for raw in _fuzz_inputs():
        for n in range(len(raw)):
            with pytest.raises(ProtocolError):
                decode_datagram(raw[:n])


def test_seeded_byte_flips_never_escape_protocol_error() -> None:
    rng = random.Random(20261127)
    for raw in _fuzz_inputs():
        for _ in range(1500):
            data = bytearray(raw)
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(len(data))
                data[pos] = rng.choice((0, 0xFF, rng.randrange(256), data[pos] ^ 0x80))
            _decode_or_protocol_error(bytes(data))


def test_random_garbage_never_escapes_protocol_error() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        head = struct.pack(">II", 5, rng.choice((1, 2)))
        _decode_or_protocol_error(head + rng.randbytes(rng.randrange(200)))
