"""sFlow v5 flow and counter records (enterprise 0, plus what Open vSwitch sends).

Layouts follow sflow_version_5.txt ("Flow Data Types", "Counter Data Types") and, for the
application and OVS blocks, sflowtool's ``readCounters_APP_RESOURCES`` and
``readCounters_OVSDP``. Each decoder gets the record body as ``(mv, off, length)``; a known
record whose body is not exactly its structure's size raises :class:`ProtocolError`, like
sflowtool's ``lengthCheck``. Public names are re-exported by :mod:`pyskydive.protocols.sflow`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address
from struct import Struct
from typing import Any

from pyskydive.errors import ProtocolError

_U32 = Struct(">I")
_RAW_HEADER = Struct(">IIII")  # protocol, frame length, stripped, header length
_ETHERNET = Struct(">I6s2x6s2xI")
_IPV4 = Struct(">II4s4sIIII")
_IPV6 = Struct(">II16s16sIIII")


class HeaderProtocol(IntEnum):
    """``header_protocol`` of a sampled header (spec "Sampled Header")."""

    ETHERNET_ISO88023 = 1
    ISO88024_TOKENBUS = 2
    ISO88025_TOKENRING = 3
    FDDI = 4
    FRAME_RELAY = 5
    X25 = 6
    PPP = 7
    SMDS = 8
    AAL5 = 9
    AAL5_IP = 10
    IPV4 = 11
    IPV6 = 12
    MPLS = 13
    POS = 14
    IEEE80211_MAC = 15
    IEEE80211_AMPDU = 16
    IEEE80211_AMSDU_SUBFRAME = 17


# --- flow records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawPacketHeader:
    """0:1 sampled header: the first bytes of the packet, for the packet decoder."""

    protocol: int  # a HeaderProtocol value (kept as int: agents may send others)
    frame_length: int  # original length of the packet, before sampling
    stripped: int  # bytes removed from the packet before the header was taken (e.g. FCS)
    header: bytes


@dataclass(frozen=True, slots=True)
class EthernetFrame:
    """0:2 ethernet frame data."""

    length: int
    src_mac: bytes
    dst_mac: bytes
    type: int


@dataclass(frozen=True, slots=True)
class SampledIPv4:
    """0:3 packet IPv4 data."""

    length: int
    protocol: int
    src_ip: IPv4Address
    dst_ip: IPv4Address
    src_port: int
    dst_port: int
    tcp_flags: int
    tos: int


@dataclass(frozen=True, slots=True)
class SampledIPv6:
    """0:4 packet IPv6 data."""

    length: int
    protocol: int
    src_ip: IPv6Address
    dst_ip: IPv6Address
    src_port: int
    dst_port: int
    tcp_flags: int
    priority: int


@dataclass(frozen=True, slots=True)
class ExtendedSwitch:
    """0:1001 extended switch data (802.1Q VLAN and priority in and out)."""

    src_vlan: int
    src_priority: int
    dst_vlan: int
    dst_priority: int


@dataclass(frozen=True, slots=True)
class ExtendedRouter:
    """0:1002 extended router data (``next_hop`` is None for address type UNKNOWN)."""

    next_hop: IPv4Address | IPv6Address | None
    src_mask_len: int
    dst_mask_len: int


@dataclass(frozen=True, slots=True)
class ExtendedGateway:
    """0:1003 extended gateway data (BGP); ``as_path`` is ((segment type, (AS, ...)), ...)."""

    next_hop: IPv4Address | IPv6Address | None
    as_number: int
    src_as: int
    src_peer_as: int
    as_path: tuple[tuple[int, tuple[int, ...]], ...]
    communities: tuple[int, ...]
    local_pref: int


@dataclass(frozen=True, slots=True)
class UnknownRecord:
    """A flow or counter record this decoder does not know, kept raw."""

    enterprise: int
    format: int
    data: bytes


FlowRecord = (
    RawPacketHeader
    | EthernetFrame
    | SampledIPv4
    | SampledIPv6
    | ExtendedSwitch
    | ExtendedRouter
    | ExtendedGateway
    | UnknownRecord
)

# --- counter records ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GenericInterfaceCounters:
    """0:1 generic interface counters (RFC 2233 ifTable/ifXTable)."""

    if_index: int
    if_type: int
    if_speed: int
    if_direction: int  # 0 unknown, 1 full-duplex, 2 half-duplex, 3 in, 4 out
    if_status: int  # bit 0 admin up, bit 1 oper up
    in_octets: int
    in_ucast_pkts: int
    in_multicast_pkts: int
    in_broadcast_pkts: int
    in_discards: int
    in_errors: int
    in_unknown_protos: int
    out_octets: int
    out_ucast_pkts: int
    out_multicast_pkts: int
    out_broadcast_pkts: int
    out_discards: int
    out_errors: int
    promiscuous_mode: int


@dataclass(frozen=True, slots=True)
class EthernetCounters:
    """0:2 ethernet interface counters (RFC 2358 dot3StatsTable)."""

    alignment_errors: int
    fcs_errors: int
    single_collision_frames: int
    multiple_collision_frames: int
    sqe_test_errors: int
    deferred_transmissions: int
    late_collisions: int
    excessive_collisions: int
    internal_mac_transmit_errors: int
    carrier_sense_errors: int
    frame_too_longs: int
    internal_mac_receive_errors: int
    symbol_errors: int


@dataclass(frozen=True, slots=True)
class VlanCounters:
    """0:5 VLAN counters."""

    vlan_id: int
    octets: int
    ucast_pkts: int
    multicast_pkts: int
    broadcast_pkts: int
    discards: int


@dataclass(frozen=True, slots=True)
class ProcessorCounters:
    """0:1001 processor information (CPU in hundredths of a percent, memory in bytes)."""

    cpu_5s: int
    cpu_1m: int
    cpu_5m: int
    total_memory: int
    free_memory: int


@dataclass(frozen=True, slots=True)
class OpenFlowPort:
    """0:1004 OpenFlow port (sFlow OpenFlow structures; OVS sends it per port)."""

    datapath_id: int
    port_no: int


@dataclass(frozen=True, slots=True)
class PortName:
    """0:1005 port name (OVS sends the interface name)."""

    name: str


@dataclass(frozen=True, slots=True)
class AppResources:
    """0:2203 application resources (OVS sends it for the vswitchd process)."""

    user_time: int  # ms
    system_time: int  # ms
    mem_used: int
    mem_max: int
    fd_open: int
    fd_max: int
    conn_open: int
    conn_max: int


@dataclass(frozen=True, slots=True)
class OvsDpStats:
    """0:2207 Open vSwitch datapath statistics (sflowtool's ``OVS_dp_*``)."""

    n_hit: int
    n_missed: int
    n_lost: int
    n_mask_hit: int
    n_flows: int
    n_masks: int


CounterRecord = (
    GenericInterfaceCounters
    | EthernetCounters
    | VlanCounters
    | ProcessorCounters
    | OpenFlowPort
    | PortName
    | AppResources
    | OvsDpStats
    | UnknownRecord
)

# --- decoders -------------------------------------------------------------------------------

Decoder = Callable[[memoryview, int, int], Any]
"""Decodes a record body ``(mv, offset, length)``; the tables below map data formats to them."""


def _bad_length(name: str, off: int, length: int, expected: int) -> ProtocolError:
    return ProtocolError(f"{name} record is {length} bytes, expected {expected}", off)


def _fixed(st: Struct, cls: Callable[..., Any]) -> Decoder:
    size = st.size
    unpack = st.unpack_from
    name = cls.__name__

    def decode(mv: memoryview, off: int, length: int) -> Any:
        if length != size:
            raise _bad_length(name, off, length, size)
        return cls(*unpack(mv, off))

    return decode


def _raw_header(mv: memoryview, off: int, length: int) -> RawPacketHeader:
    if length < 16:
        raise _bad_length("sampled header", off, length, 16)
    proto, frame_length, stripped, hlen = _RAW_HEADER.unpack_from(mv, off)
    if 16 + ((hlen + 3) & ~3) != length:
        raise ProtocolError(f"sampled header length {hlen} does not fit record of {length}", off)
    start = off + 16
    return RawPacketHeader(proto, frame_length, stripped, bytes(mv[start : start + hlen]))


def _ethernet(mv: memoryview, off: int, length: int) -> EthernetFrame:
    if length != 24:
        raise _bad_length("ethernet", off, length, 24)
    return EthernetFrame(*_ETHERNET.unpack_from(mv, off))


def _ipv4(mv: memoryview, off: int, length: int) -> SampledIPv4:
    if length != 32:
        raise _bad_length("IPv4", off, length, 32)
    ln, proto, src, dst, sport, dport, flags, tos = _IPV4.unpack_from(mv, off)
    return SampledIPv4(ln, proto, IPv4Address(src), IPv4Address(dst), sport, dport, flags, tos)


def _ipv6(mv: memoryview, off: int, length: int) -> SampledIPv6:
    if length != 56:
        raise _bad_length("IPv6", off, length, 56)
    ln, proto, src, dst, sport, dport, flags, prio = _IPV6.unpack_from(mv, off)
    return SampledIPv6(ln, proto, IPv6Address(src), IPv6Address(dst), sport, dport, flags, prio)


class _Reader:
    """Bounded XDR reader for the variable-length records (router, gateway, port name)."""

    __slots__ = ("end", "mv", "off")

    def __init__(self, mv: memoryview, off: int, length: int) -> None:
        self.mv, self.off, self.end = mv, off, off + length

    def u32(self) -> int:
        if self.off + 4 > self.end:
            raise ProtocolError("truncated record", self.off)
        value: int = _U32.unpack_from(self.mv, self.off)[0]
        self.off += 4
        return value

    def take(self, n: int) -> bytes:
        if n > self.end - self.off:
            raise ProtocolError(f"{n} bytes overrun record", self.off)
        data = bytes(self.mv[self.off : self.off + n])
        self.off += (n + 3) & ~3
        if self.off > self.end:
            raise ProtocolError("padding overruns record", self.end)
        return data

    def address(self) -> IPv4Address | IPv6Address | None:
        kind = self.u32()
        if kind == 1:
            return IPv4Address(self.take(4))
        if kind == 2:
            return IPv6Address(self.take(16))
        if kind == 0:
            return None
        raise ProtocolError(f"unknown address type {kind}", self.off - 4)

    def u32s(self) -> tuple[int, ...]:
        n = self.u32()
        if n > (self.end - self.off) >> 2:
            raise ProtocolError(f"array of {n} words overruns record", self.off - 4)
        values = Struct(f">{n}I").unpack_from(self.mv, self.off)
        self.off += 4 * n
        return values

    def done(self, name: str) -> None:
        if self.off != self.end:
            raise ProtocolError(f"{self.end - self.off} stray bytes at the end of {name}", self.off)


def _router(mv: memoryview, off: int, length: int) -> ExtendedRouter:
    r = _Reader(mv, off, length)
    record = ExtendedRouter(r.address(), r.u32(), r.u32())
    r.done("extended router")
    return record


def _gateway(mv: memoryview, off: int, length: int) -> ExtendedGateway:
    r = _Reader(mv, off, length)
    next_hop, as_number, src_as, src_peer_as = r.address(), r.u32(), r.u32(), r.u32()
    n = r.u32()
    if n > (r.end - r.off) >> 3:
        raise ProtocolError(f"AS path of {n} segments overruns record", r.off - 4)
    path = tuple((r.u32(), r.u32s()) for _ in range(n))
    record = ExtendedGateway(next_hop, as_number, src_as, src_peer_as, path, r.u32s(), r.u32())
    r.done("extended gateway")
    return record


def _port_name(mv: memoryview, off: int, length: int) -> PortName:
    r = _Reader(mv, off, length)
    n = r.u32()
    if n > 255:
        raise ProtocolError(f"port name of {n} bytes (at most 255)", off)
    name = r.take(n).decode("utf-8", "replace")
    r.done("port name")
    return PortName(name)


FLOW_DECODERS: dict[int, Decoder] = {
    1: _raw_header,
    2: _ethernet,
    3: _ipv4,
    4: _ipv6,
    1001: _fixed(Struct(">IIII"), ExtendedSwitch),
    1002: _router,
    1003: _gateway,
}

COUNTER_DECODERS: dict[int, Decoder] = {
    1: _fixed(Struct(">IIQIIQIIIIIIQIIIIII"), GenericInterfaceCounters),
    2: _fixed(Struct(">13I"), EthernetCounters),
    5: _fixed(Struct(">IQIIII"), VlanCounters),
    1001: _fixed(Struct(">IIIQQ"), ProcessorCounters),
    1004: _fixed(Struct(">QI"), OpenFlowPort),
    1005: _port_name,
    2203: _fixed(Struct(">IIQQIIII"), AppResources),
    2207: _fixed(Struct(">6I"), OvsDpStats),
}
