"""Fast front ends of the flow table: pcap streams, sFlow datagrams and AF_PACKET blocks.

Theory of operation
-------------------
Each entry point here has two implementations with the same results: the compiled one in
:mod:`pyskydive.flow._fastflow` (a C extension built by ``pip install .``; optional) and a
pure-Python one built on :func:`pyskydive.protocols.packet.decode` and
:meth:`FlowTable.feed <pyskydive.flow.table.FlowTable.feed>`. :data:`COMPILED` tells whether
the extension loaded; a :class:`~pyskydive.flow.table.FlowTable` made with
``accelerate=False`` (or any table when ``PYSKYDIVE_PURE=1``) always takes the pure path.

The compiled path is a hybrid (see ``_fastflow.c``): C decodes the common frames (Ethernet,
802.1Q/802.1ad tags, IPv4, IPv6 without extension headers, TCP, UDP, ICMP) and accounts them
in its own per-flow counters; every other frame (tunnels, ARP, fragments, DNS/DHCP ports,
truncated or malformed headers, Linux SLL) goes through the pure decoder and ``FlowTable.feed``.
Flows are always *created* by Python (so UUIDs and tracking ids are computed by one code), and
each flow's mutable state has one owner at a time: the C counters are copied into the
:class:`~pyskydive.flow.model.Flow` records before anything in Python reads them (``tick``,
``flows``) or a slow-path packet updates them, and copied back after.

* :class:`PcapFlowFeeder` turns a pcap byte stream into flows, ticking the table with the
  packets' own time at most every ``tick_every_ms`` of packet time (after the packet that
  crosses the interval; the result does not depend on how the stream is chunked).
* :func:`feed_sflow` feeds the sampled headers of one sFlow v5 datagram, and returns its counter
  samples; a malformed datagram feeds nothing (same rule as
  :func:`~pyskydive.protocols.sflow.decode_datagram`). Compiled, C checks the whole datagram
  first (flow samples in full, counter samples only framed), Python decodes the counter samples
  (their errors come out the same, being the first of the datagram), then C feeds the headers;
  a datagram C cannot vouch for (an error, a 0:1002/0:1003 record) takes the pure path.
* :func:`feed_tpacket_block` walks one TPACKET_V3 ring block (see
  :mod:`pyskydive.probes.flow.ring`).

Timestamps: packets are accounted at their own time in ms, and in ns for the RTT (see
:mod:`pyskydive.flow.table`): pcap records and TPACKET_V3 headers carry nanoseconds (or
microseconds), an sFlow datagram has only its arrival time, ``now_ms * 1_000_000``.

Userspace filters: :class:`PcapFlowFeeder` and :func:`feed_sflow` take an optional ``accept``
hook, ``accept(frame) -> bool`` (a :class:`pyskydive.protocols.bpf.Matcher`, in the capture
probes): a frame it rejects is not fed at all (as if a kernel filter had dropped it: no packet
counted, no tick) and is counted in ``filtered``. With a hook, the compiled path cuts records
and datagrams in Python (the pure front end) and calls the hook there; each accepted frame is
still decoded and accounted in C by :meth:`FlowTable.feed_frame`. That costs a Python loop per
packet, of the order of the hook's own ctypes call; the flows are the same either way.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, TypeAlias

from pyskydive.errors import ProtocolError
from pyskydive.flow.model import Flow
from pyskydive.flow.table import _COMPILED, FlowTable
from pyskydive.protocols.pcap import PcapHeader, PcapReader, first_layer
from pyskydive.protocols.sflow import (
    CounterSample,
    FlowSample,
    RawPacketHeader,
    _counter_sample,
    decode_datagram,
)

__all__ = [
    "COMPILED",
    "FLUSH_AFTER_MS",
    "Accept",
    "PcapFlowFeeder",
    "SflowFeed",
    "feed_sflow",
    "feed_tpacket_block",
]

#: True when the C extension ``pyskydive.flow._fastflow`` loaded.
COMPILED: Final = _COMPILED

#: How far after the last packet :meth:`PcapFlowFeeder.finish` ticks: every flow expires.
FLUSH_AFTER_MS: Final = 10**12

# sFlow sampled-header protocol → the packet decoder's first layer (sflow_version_5.txt).
_SFLOW_FIRST: Final[dict[int, str]] = {1: "Ethernet", 11: "IPv4", 12: "IPv6"}
# what an ``accept`` hook sees in front of a sampled IPv4 / IPv6 header: a zero Ethernet header
_SFLOW_ETH_PREFIX: Final[dict[int, bytes]] = {
    11: bytes(12) + b"\x08\x00",
    12: bytes(12) + b"\x86\xdd",
}

#: ``accept(frame) -> bool``: a userspace filter (module docstring).
Accept: TypeAlias = Callable[[bytes], bool]

_GLOBAL_LEN: Final = 24
_MAX_CAPLEN: Final = 0x40000  # as PcapReader

# struct tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac, net, then
# tpacket_hdr_variant1: rxhash, vlan_tci, vlan_tpid
_TP3_HDR = struct.Struct("=IIIIIIHHIIH")
_TP_STATUS_VLAN_VALID: Final = 0x10
_TP_STATUS_VLAN_TPID_VALID: Final = 0x40


@dataclass(slots=True)
class SflowFeed:
    """What :func:`feed_sflow` did with one datagram."""

    flow_samples: int
    counters: list[CounterSample] = field(default_factory=list)
    error: str | None = None
    filtered: int = 0  # sampled headers the ``accept`` hook rejected


def feed_sflow(
    table: FlowTable,
    datagram: bytes | bytearray | memoryview,
    now_ms: int,
    accept: Accept | None = None,
) -> SflowFeed:
    """Feed every sampled header (Ethernet, IPv4, IPv6) of one sFlow v5 datagram to ``table``.

    Each header is accounted with the record's ``frame_length`` as wire length and ``now_ms``.
    Counter samples are returned decoded. Never raises on bad bytes: a malformed datagram feeds
    nothing and comes back with ``error`` set to the :class:`ProtocolError` text.

    ``accept``: a header it rejects is not fed (counted in ``filtered``). It is always given an
    Ethernet frame, so that one filter (compiled for DLT_EN10MB) fits every header: a sampled
    IPv4 or IPv6 header gets a zero Ethernet header (MACs 00:00:00:00:00:00) in front.
    """
    fast = table._fast
    if fast is not None and accept is None:
        if not isinstance(datagram, bytes):
            datagram = bytes(datagram)  # one contiguous buffer for C and the counter decoder
        spans = fast.sflow_check(datagram)
        if spans is not None:  # None: the pure decoder must look (an error, a rare record)
            counters: list[CounterSample] = []
            if spans:  # C framed them; their records are decoded (and checked) in Python
                mv = memoryview(datagram).cast("B")
                try:
                    counters = [_counter_sample(mv, off, end, exp) for off, end, exp in spans]
                except ProtocolError as exc:
                    return SflowFeed(0, [], str(exc))
            flows: int = fast.sflow_feed(datagram, now_ms)
            return SflowFeed(flows, counters)
    return _feed_sflow_pure(table, datagram, now_ms, accept)


def _feed_sflow_pure(
    table: FlowTable,
    datagram: bytes | bytearray | memoryview,
    now_ms: int,
    accept: Accept | None,
) -> SflowFeed:
    try:
        dg = decode_datagram(datagram)
    except ProtocolError as exc:
        return SflowFeed(0, [], str(exc))
    flows = 0
    filtered = 0
    counters: list[CounterSample] = []
    for sample in dg.samples:
        if isinstance(sample, FlowSample):
            flows += 1
            for rec in sample.records:
                if isinstance(rec, RawPacketHeader):
                    first = _SFLOW_FIRST.get(rec.protocol)
                    if first is None:
                        continue
                    if accept is not None:
                        frame = bytes(rec.header)
                        if not accept(_SFLOW_ETH_PREFIX.get(rec.protocol, b"") + frame):
                            filtered += 1
                            continue
                    table.feed_frame(rec.header, now_ms, rec.frame_length, first)
        elif isinstance(sample, CounterSample):
            counters.append(sample)
    return SflowFeed(flows, counters, None, filtered)


def feed_tpacket_block(table: FlowTable, block: memoryview, first: str = "Ethernet") -> int:
    """Feed every packet of one TPACKET_V3 block (``struct tpacket_block_desc``) to ``table``.

    Each packet is accounted at its own ``tp_sec``/``tp_nsec`` (ms, and ns for the RTT) with
    ``tp_len`` as wire
    length. Returns the number of packets. The caller owns the block (status, release). A VLAN
    tag the kernel took out of the frame (``TP_STATUS_VLAN_VALID``) is put back, as libpcap
    does, so the flow shows its ``Dot1Q`` layer.
    """
    fast = table._fast
    if fast is not None:
        try:
            n: int = fast.feed_tpacket_block(block, first)
        except ValueError as exc:  # the C walker's bound checks
            raise ProtocolError(str(exc), None) from exc
        return n
    if len(block) < 48:
        raise ProtocolError("a TPACKET_V3 block is at least 48 bytes", 0)
    _version, _priv, _status, num_pkts, first_off = struct.unpack_from("=IIIII", block, 0)
    off = first_off
    size = len(block)
    count = 0
    for _ in range(num_pkts):
        if off + 48 > size:  # sizeof(struct tpacket3_hdr)
            raise ProtocolError("tpacket3_hdr runs past its block", off)
        nxt, sec, nsec, snaplen, wire, status, mac, _net, _rxhash, tci, tpid = _TP3_HDR.unpack_from(
            block, off
        )
        if off + mac + snaplen > size:
            raise ProtocolError("tpacket3 frame runs past its block", off)
        frame: bytes | memoryview = block[off + mac : off + mac + snaplen]
        if status & _TP_STATUS_VLAN_VALID and first == "Ethernet" and snaplen >= 12:
            if not status & _TP_STATUS_VLAN_TPID_VALID or not tpid:
                tpid = 0x8100
            frame = bytes(frame[:12]) + struct.pack("!HH", tpid, tci & 0xFFFF) + bytes(frame[12:])
            wire += 4
        table.feed_frame(frame, sec * 1000 + nsec // 1_000_000, wire, first, sec * 10**9 + nsec)
        count += 1
        if not nxt:
            break
        off += nxt
    return count


class PcapFlowFeeder:
    """Sans-I/O pcap stream → flows: ``feed(chunk)`` and ``finish()`` return flow wire dicts.

    Raises :class:`ProtocolError` (with the stream offset) on a bad pcap, as
    :class:`~pyskydive.protocols.pcap.PcapReader` does. Packets are accounted at their record's
    time (ns for the RTT). ``accept``: a record whose data (the frame as captured, in the
    stream's link type) it rejects is skipped, counted in ``filtered`` and not in ``packets``;
    give it to the constructor, or set the attribute before the first :meth:`feed`.
    """

    def __init__(
        self, table: FlowTable, tick_every_ms: int = 1000, accept: Accept | None = None
    ) -> None:
        self.table = table
        self.tick_every_ms = tick_every_ms
        self.accept = accept
        self.packets = 0
        self.filtered = 0
        self._reader = PcapReader()  # the global header, and the pure path
        self._buf = bytearray()  # compiled path: records not cut yet
        self._offset = 0  # stream offset of _buf[0] (compiled path)
        self._first: str | None = None
        self._now: int | None = None
        self._ticked: int | None = None

    @property
    def header(self) -> PcapHeader | None:
        return self._reader.header

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[dict[str, Any]]:
        """Account the complete records of ``chunk`` (after any left over); return emitted flows."""
        out: list[dict[str, Any]] = []
        fast = self.table._fast
        if (
            fast is None
            or self.accept is not None  # the hook is called from the Python loop
            or (self._reader.header is not None and self._first != "Ethernet")
        ):
            self._feed_pure(chunk, out)
            return out
        buf = self._buf
        buf += chunk
        if self._reader.header is None:
            if len(buf) < _GLOBAL_LEN:
                return out
            self._reader.feed(bytes(buf[:_GLOBAL_LEN]))
            del buf[:_GLOBAL_LEN]
            self._offset = _GLOBAL_LEN
            header = self._reader.header
            assert header is not None
            if header.linktype != 1:  # only Ethernet has a C decoder: the rest is pure
                rest = bytes(buf)
                buf.clear()
                self._feed_pure(rest, out)
                return out
        header = self._reader.header
        self._first = "Ethernet"
        bad = fast.pcap_check(buf, 0, header.big_endian)
        if bad >= 0:  # PcapReader would raise before returning any record of this chunk
            self._raise_caplen(bad, header.big_endian)
        pos = 0
        while True:
            pos, count, now, status = fast.feed_pcap(
                buf,
                pos,
                header.big_endian,
                header.nanosecond,
                self.tick_every_ms,
                -1 if self._ticked is None else self._ticked,
            )
            self.packets += count
            if count:
                self._now = now
            if status == 1:  # a tick is due after the packet at ``now``
                self._ticked = now
                self._emit(self.table.tick(now), out)
                continue
            if status == 2:  # pcap_check saw it first; kept for safety
                self._raise_caplen(pos, header.big_endian)
            break
        del buf[:pos]
        self._offset += pos
        return out

    def _raise_caplen(self, pos: int, big_endian: bool) -> NoReturn:
        (caplen,) = struct.unpack_from(">I" if big_endian else "<I", self._buf, pos + 8)
        raise ProtocolError(
            f"record captured length {caplen} exceeds {_MAX_CAPLEN}", self._offset + pos
        )

    def finish(self) -> list[dict[str, Any]]:
        """Check the stream ended on a record boundary, then flush every flow."""
        if self._buf and self._reader.header is not None:  # C cut every complete record
            raise ProtocolError(
                f"truncated pcap record ({len(self._buf)} bytes left)", self._offset
            )
        self._reader.close()
        header = self._reader.header
        assert header is not None
        if self._first is None:
            first_layer(header.linktype)  # an unsupported link type is an error even if empty
        base = self._now if self._now is not None else 0
        out: list[dict[str, Any]] = []
        self._emit(self.table.tick(base + FLUSH_AFTER_MS), out)
        return out

    def _feed_pure(self, chunk: bytes | bytearray | memoryview, out: list[dict[str, Any]]) -> None:
        records = self._reader.feed(chunk)
        if not records:
            return
        first = self._first
        if first is None:
            header = self._reader.header
            assert header is not None
            first = self._first = first_layer(header.linktype)
        table = self.table
        every = self.tick_every_ms
        accept = self.accept
        ticked = self._ticked
        for rec in records:
            if accept is not None and not accept(rec.data):
                self.filtered += 1
                continue
            ns = rec.timestamp_ns
            now = ns // 1_000_000
            table.feed_frame(rec.data, now, rec.original_len, first, ns)
            self.packets += 1
            self._now = now
            if ticked is None or abs(now - ticked) >= every:
                ticked = now
                self._emit(table.tick(now), out)
        self._ticked = ticked

    @staticmethod
    def _emit(result: tuple[list[Flow], list[Flow]], out: list[dict[str, Any]]) -> None:
        updated, expired = result
        out.extend(f.to_wire() for f in updated)
        out.extend(f.to_wire() for f in expired)
