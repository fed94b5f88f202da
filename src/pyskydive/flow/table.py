"""The flow table: packets in, flows out, with an injected clock (STYLE §2).

Theory of operation
-------------------
``feed(packet, now_ms, length)`` accounts one decoded packet: it builds the direction-free key
(see :mod:`pyskydive.flow.keys`), looks the flow up in a dict, creates it on a miss (A = this
packet's sender), and adds the packet to the AB or BA counters. A tunnelled packet accounts its
outer layers as one flow, then its ``inner`` packet as a second flow whose ParentUUID is the
outer flow's UUID (recursively for nested tunnels). Identifiers are hashed once, at creation.

``tick(now_ms)`` is called by the shell (about once a second, or per pcap batch with the packets'
own time): it expires flows idle longer than ``expire_after_ms``, TCP flows that saw FIN or RST
``fin_hold_ms`` after their last packet, ARP and DNS flows ``short_flow_ms`` after their last
packet; and every ``update_every_ms`` it returns the flows that saw packets since the previous
update with ``LastUpdateMetric`` holding the delta (Start/Last = the update interval). Expired
flows carry their final delta and a FinishType (TIMEOUT unless TCP_FIN/TCP_RST was seen).
Returned ``Flow`` objects are live records: serialise them (``to_wire()``) before the next
``feed``.

Errors: a packet with ``error`` set (truncated or malformed, in any of its tunnel levels)
counts one ``stats.decode_errors`` and is still accounted with the layers that decoded (a
truncated TCP header gives an ``Ethernet/IPv4`` flow, not the TCP one). A packet with no usable
layer is counted and dropped. When ``max_entries`` flows are live, packets of new flows are
dropped and counted in ``stats.overflow``.

Semantics follow Skydive v0.28 ``flow/table.go`` (update/expire timers, FinishType) and
``flow/flow.go`` (A = first sender, ``updateRTT``).

RTT: ``Metric.RTT`` is in NANOSECONDS, as on Skydive's wire, measured on packet timestamps in
ns (``feed(..., now_ns=)``; when a front end has only milliseconds, ``now_ms * 1_000_000``).
Times everywhere else (Start, Last, TCPMetric) stay milliseconds. As Skydive v0.28's
``updateRTT``, one probe time per flow (``Flow.rtt_probe``, -1 = none pending):

* ICMPv4/ICMPv6 echo request: the probe is set if none is pending; echo reply: if one is
  pending, RTT = now_ns - probe and the probe is cleared (RTT is the latest echo pair's);
* TCP: ``if SYN and no probe: probe = now_ns``, ``elif probe and (SYN+ACK or RST): RTT =
  now_ns - probe, probe cleared`` (in that order: a SYN/ACK seen first starts a probe).

RTT 0 means not measured. ``LastUpdateMetric.RTT`` is the flow's RTT at the update.

Acceleration: when the C extension :mod:`pyskydive.flow._fastflow` is built, a table (unless
made with ``accelerate=False`` or with ``PYSKYDIVE_PURE=1`` in the environment) owns a C
``FastTable`` that decodes and accounts the common frames given to :meth:`FlowTable.feed_frame`
(and the batch front ends of :mod:`pyskydive.flow.fast`) in C. Python still creates every flow
(``_fast_new``) and handles every other frame (``_fast_slow`` → :meth:`feed`); the C counters
are copied into the Flow records before ``tick``/``flows`` read them and around a Python
``_account`` of a flow C owns (``pull_one``/``push_one``), so results are the pure path's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

from pyskydive.flow.keys import LayerKeyMode, flow_uuid, l3_tracking_id, tracking_id
from pyskydive.flow.model import FinishType, Flow, FlowLayer, ICMPLayer, Metric, TCPMetric
from pyskydive.protocols._packet_fields import (
    _DST_PORT,
    _ETH_DST,
    _ETH_SRC,
    _ICMP_CODE,
    _ICMP_ID,
    _ICMP_TYPE,
    _IP_DST,
    _IP_PROTO,
    _IP_SRC,
    _IP_VERSION,
    _LAYERS,
    _SRC_PORT,
    _TEMPLATE,
    _VLANS,
)
from pyskydive.protocols.layers import _ipv4_text, _ipv6_text
from pyskydive.protocols.packet import Packet, decode

try:
    from pyskydive.flow import _fastflow  # type: ignore[attr-defined]
except ImportError:  # built without a compiler: the pure path does everything
    _fastflow = None
_COMPILED = _fastflow is not None

__all__ = ["FlowTable", "TableStats", "TickResult"]

_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10
_TRANSPORTS = {6: "TCP", 17: "UDP", 132: "SCTP"}
_UDP_TUNNELS = frozenset(("VXLAN", "Geneve"))
# echo request / reply types, by IP protocol (ICMPv4 = 1, ICMPv6 = 58)
_ECHO = {1: (8, 0), 58: (128, 129)}
_NO_ECHO = (-1, -1)
# Skydive's ICMPType enum names, by (ip_version, type)
_ICMP4 = {0: "ECHO", 8: "ECHO", 3: "DESTINATION_UNREACHABLE", 11: "TIME_EXCEEDED",
          12: "PARAMETER_PROBLEM", 4: "SOURCE_QUENCH", 5: "REDIRECT", 13: "TIMESTAMP",
          14: "TIMESTAMP", 15: "INFO", 16: "INFO", 17: "ADDRESS_MASK", 18: "ADDRESS_MASK",
          9: "ROUTER", 10: "ROUTER"}  # fmt: skip
_ICMP6 = {128: "ECHO", 129: "ECHO", 1: "DESTINATION_UNREACHABLE", 2: "PACKET_TOO_BIG",
          3: "TIME_EXCEEDED", 4: "PARAMETER_PROBLEM", 133: "ROUTER", 134: "ROUTER",
          135: "NEIGHBOR", 136: "NEIGHBOR", 137: "REDIRECT"}  # fmt: skip


_F = Packet._fields.index
# one C call each to gather key parts from the Packet tuple (the hot path)
_fwd_l2 = itemgetter(_F("eth_src"), _F("ip_src"), _F("src_port"))
_rev_l2 = itemgetter(_F("eth_dst"), _F("ip_dst"), _F("dst_port"))
_fwd_l3 = itemgetter(_F("ip_src"), _F("src_port"))
_rev_l3 = itemgetter(_F("ip_dst"), _F("dst_port"))
_kind = itemgetter(_F("layers"), _F("vlans"), _F("tunnel_id"), _F("ip_proto"), _F("icmp_id"))


@dataclass(slots=True)
class TableStats:
    packets: int = 0
    decode_errors: int = 0
    overflow: int = 0
    flows_created: int = 0
    flows_expired: int = 0


class TickResult(NamedTuple):
    updated: list[Flow]
    expired: list[Flow]


@dataclass(slots=True)
class _Timers:
    update_every_ms: int
    expire_after_ms: int
    fin_hold_ms: int
    short_flow_ms: int


class FlowTable:
    """Flows of one capture on one node. Pure: no I/O, no clock; ``now`` is passed in (ms)."""

    def __init__(
        self,
        node_tid: str,
        capture_id: str,
        *,
        layer_key_mode: LayerKeyMode = LayerKeyMode.L2,
        update_every_ms: int = 60_000,
        expire_after_ms: int = 600_000,
        fin_hold_ms: int = 15_000,
        short_flow_ms: int = 10_000,
        max_entries: int = 500_000,
        accelerate: bool = True,
    ) -> None:
        self.node_tid = node_tid
        self.capture_id = capture_id
        self.layer_key_mode = LayerKeyMode(layer_key_mode)
        self.timers = _Timers(update_every_ms, expire_after_ms, fin_hold_ms, short_flow_ms)
        self.max_entries = max_entries
        self.stats = TableStats()
        self._flows: dict[tuple[Any, ...], Flow] = {}
        self._l2 = self.layer_key_mode is LayerKeyMode.L2
        self._last_update: int | None = None
        self._fast: Any = None  # the C FastTable, when accelerated
        if accelerate and _fastflow is not None and os.environ.get("PYSKYDIVE_PURE") != "1":
            self._fast = _fastflow.FastTable(self, self.stats, self._l2, _FAST_CLASSES)

    @property
    def accelerated(self) -> bool:
        """True when frames given to :meth:`feed_frame` are decoded and accounted in C."""
        return self._fast is not None

    def __len__(self) -> int:
        return len(self._flows)

    def flows(self) -> list[Flow]:
        """The live flows (records, not copies)."""
        if self._fast is not None:
            self._fast.pull()
        return list(self._flows.values())

    def feed(
        self, packet: Packet, now_ms: int, length: int | None = None, now_ns: int | None = None
    ) -> None:
        """Account one decoded packet seen at ``now_ms``; ``length`` = wire length in bytes.

        ``now_ns``: the same instant in nanoseconds, for RTT (default ``now_ms * 1_000_000``).
        """
        self.stats.packets += 1
        if packet.error is not None or (packet.inner is not None and packet.errors):
            self.stats.decode_errors += 1
        ns = now_ms * 1_000_000 if now_ns is None else now_ns
        flow = self._account(packet, now_ms, ns, packet.length if length is None else length, None)
        inner = packet.inner
        while flow is not None and inner is not None:
            flow = self._account(inner, now_ms, ns, inner.length, flow)
            inner = inner.inner

    def feed_frame(
        self,
        data: bytes | bytearray | memoryview,
        now_ms: int,
        wire_len: int,
        first: str = "Ethernet",
        now_ns: int | None = None,
    ) -> None:
        """Decode one frame (first layer ``first``) and account it; in C when it can.

        ``now_ns`` as for :meth:`feed`.
        """
        ns = now_ms * 1_000_000 if now_ns is None else now_ns
        if self._fast is not None:
            self._fast.feed_frame(data, now_ms, wire_len, first, ns)
        else:
            self.feed(decode(data, first=first), now_ms, wire_len, ns)

    def _fast_slow(self, data: bytes, first: str, now: int, length: int, now_ns: int) -> None:
        """C callback: a frame the C decoder leaves to the pure one."""
        self.feed(decode(data, first=first), now, length, now_ns)

    def _fast_new(self, fields: tuple[Any, ...], now: int) -> tuple[Flow, bool] | None:
        """C callback: the flow of a frame C decoded but does not own yet (None: overflow).

        ``fields`` are the frame's decoded fields (see ``fields_tuple`` in ``_fastflow.c``);
        the frame is a plain one (no tunnel, no error). Find or create its flow as
        :meth:`_account` does, without accounting the frame: C does, and owns the flow.
        """
        p = _packet_from_fields(fields)
        if self._l2:
            fwd, rev = _fwd_l2(p), _rev_l2(p)
        else:
            fwd, rev = _fwd_l3(p), _rev_l3(p)
        key = (None, _kind(p), fwd, rev) if fwd <= rev else (None, _kind(p), rev, fwd)
        f = self._flows.get(key)
        if f is None:
            if len(self._flows) >= self.max_entries:
                self.stats.overflow += 1
                return None
            f = self._flows[key] = self._new_flow(p, now, fwd, None)
        return f, fwd == f.a_endpoint

    def _account(
        self, p: Packet, now: int, now_ns: int, length: int, parent: Flow | None
    ) -> Flow | None:
        if not p.layers:
            return None
        fwd: tuple[Any, ...]
        rev: tuple[Any, ...]
        if self._l2 or p.ip_src is None:  # no IP (ARP...): the MACs are the endpoints
            fwd = _fwd_l2(p)
            rev = _rev_l2(p)
        else:
            fwd = _fwd_l3(p)
            rev = _rev_l3(p)
        if p.tunnel is not None and p.tunnel in _UDP_TUNNELS:
            fwd = (*fwd[:-1], None)  # the UDP source port is entropy, not identity
            rev = (*rev[:-1], None)
        pid = None if parent is None else parent.uuid
        try:
            forward = fwd <= rev
        except TypeError:  # an endpoint part missing on one side only (SLL without a peer MAC)
            forward = _sortable(fwd) <= _sortable(rev)
        key = (pid, _kind(p), fwd, rev) if forward else (pid, _kind(p), rev, fwd)
        flows = self._flows
        f = flows.get(key)
        owned = False
        if f is None:
            if len(flows) >= self.max_entries:
                self.stats.overflow += 1
                return None
            f = flows[key] = self._new_flow(p, now, fwd, parent)
        elif self._fast is not None:
            owned = self._fast.pull_one(f)  # C owns it: its counters first
        m = f.metric
        ab = fwd == f.a_endpoint
        if ab:
            m.ab_packets += 1
            m.ab_bytes += length
        else:
            m.ba_packets += 1
            m.ba_bytes += length
        m.last = now
        f.last = now
        flags = p.tcp_flags
        if flags is not None and flags & (_SYN | _FIN | _RST):
            self._tcp(f, flags, ab, now, now_ns)
        elif p.icmp_type is not None:  # updateRTT (module docstring)
            request, reply = _ECHO.get(p.ip_proto or 0, _NO_ECHO)
            if p.icmp_type == request:
                if f.rtt_probe < 0:
                    f.rtt_probe = now_ns
            elif p.icmp_type == reply and f.rtt_probe >= 0:
                m.rtt = now_ns - f.rtt_probe
                f.rtt_probe = -1
        if owned:
            self._fast.push_one(f)  # and back
        return f

    @staticmethod
    def _tcp(f: Flow, flags: int, ab: bool, now: int, now_ns: int) -> None:
        tm = f.tcp_metric
        if tm is None:
            tm = f.tcp_metric = TCPMetric()
        # updateRTT, in Skydive v0.28's order (module docstring)
        if flags & _SYN and f.rtt_probe < 0:
            f.rtt_probe = now_ns
        elif f.rtt_probe >= 0 and (flags & (_SYN | _ACK) == _SYN | _ACK or flags & _RST):
            f.metric.rtt = now_ns - f.rtt_probe
            f.rtt_probe = -1
        if flags & _SYN:
            if ab and not tm.ab_syn_start:
                tm.ab_syn_start = now
            elif not ab and not tm.ba_syn_start:
                tm.ba_syn_start = now
        if flags & _FIN:
            if f.finish_type is FinishType.NOT_FINISHED:
                f.finish_type = FinishType.TCP_FIN
            if ab and not tm.ab_fin_start:
                tm.ab_fin_start = now
            elif not ab and not tm.ba_fin_start:
                tm.ba_fin_start = now
        if flags & _RST:
            f.finish_type = FinishType.TCP_RST
            if ab and not tm.ab_rst_start:
                tm.ab_rst_start = now
            elif not ab and not tm.ba_rst_start:
                tm.ba_rst_start = now

    def _new_flow(self, p: Packet, now: int, fwd: tuple[Any, ...], parent: Flow | None) -> Flow:
        self.stats.flows_created += 1
        if self._last_update is None:
            self._last_update = now
        link = network = transport = None
        icmp = None
        if p.eth_src is not None and p.eth_dst is not None:
            link = FlowLayer("ETHERNET", p.eth_src, p.eth_dst, p.vlans[0] if p.vlans else 0)
        if p.ip_src is not None and p.ip_dst is not None:
            proto = "IPV6" if p.ip_version == 6 else "IPV4"
            network = FlowLayer(proto, p.ip_src, p.ip_dst, p.tunnel_id or 0)
        tname = _TRANSPORTS.get(p.ip_proto or -1)
        if tname is not None and p.src_port is not None and p.dst_port is not None:
            transport = FlowLayer(tname, p.src_port, p.dst_port, 0)
        if p.icmp_type is not None:
            names = _ICMP6 if p.ip_version == 6 else _ICMP4
            icmp = ICMPLayer(names.get(p.icmp_type, "UNKNOWN"), p.icmp_code or 0, p.icmp_id or 0)
        layers_path = p.layers_path
        ports = (p.src_port, p.dst_port)
        if p.tunnel is not None and p.tunnel in _UDP_TUNNELS:
            ports = (None, None)
        l3 = l3_tracking_id(layers_path, (p.ip_src, p.ip_dst), p.tunnel_id, ports, p.icmp_id)
        if self._l2 or network is None:
            tid = tracking_id(layers_path, l3, (p.eth_src, p.eth_dst))
        else:
            tid = tracking_id(layers_path, l3, (None, None))
        parent_uuid = "" if parent is None else parent.uuid
        return Flow(
            uuid=flow_uuid(tid, now, self.node_tid, self.capture_id, parent_uuid),
            layers_path=layers_path,
            node_tid=self.node_tid,
            capture_id=self.capture_id,
            tracking_id=tid,
            l3_tracking_id=l3,
            start=now,
            last=now,
            metric=Metric(start=now, last=now),
            application=p.application or "",
            link=link,
            network=network,
            transport=transport,
            icmp=icmp,
            parent_uuid=parent_uuid,
            a_endpoint=fwd,
            short="ARP" in p.layers or p.application == "DNS",
        )

    def tick(self, now_ms: int) -> TickResult:
        """Expire what is due, and every ``update_every_ms`` report the flows that moved."""
        t = self.timers
        expired: list[Flow] = []
        if self._last_update is None:
            self._last_update = now_ms
        since = self._last_update
        fast = self._fast
        if fast is None:
            for key, f in list(self._flows.items()):
                idle = now_ms - f.last
                if (
                    idle > t.expire_after_ms
                    or (f.finish_type is not FinishType.NOT_FINISHED and idle > t.fin_hold_ms)
                    or (f.short and idle > t.short_flow_ms)
                ):
                    del self._flows[key]
                    if f.finish_type is FinishType.NOT_FINISHED:
                        f.finish_type = FinishType.TIMEOUT
                    _set_delta(f, since, f.last)
                    expired.append(f)
        else:  # the same test, run by C over the same dict on C's state (the due ones pulled)
            flows = self._flows
            due = fast.scan_expired(
                flows, now_ms, t.expire_after_ms, t.fin_hold_ms, t.short_flow_ms
            )
            for key in due:
                f = flows.pop(key)
                if f.finish_type is FinishType.NOT_FINISHED:
                    f.finish_type = FinishType.TIMEOUT
                _set_delta(f, since, f.last)
                expired.append(f)
        self.stats.flows_expired += len(expired)
        if fast is not None and expired:
            fast.forget(expired)
        updated: list[Flow] = []
        if now_ms - since >= t.update_every_ms:
            if fast is not None:
                fast.pull()
            for f in self._flows.values():
                u = f.updated_metric
                m = f.metric
                if m.ab_packets != u.ab_packets or m.ba_packets != u.ba_packets:
                    _set_delta(f, since, now_ms)
                    updated.append(f)
            self._last_update = now_ms
        return TickResult(updated, expired)


_L4_LAYER = {6: "TCP", 17: "UDP", 1: "ICMPv4", 58: "ICMPv6"}
_ETHERNET = ("Ethernet",)
_new_packet = tuple.__new__


def _packet_from_fields(fields: tuple[Any, ...]) -> Packet:
    """The Packet :func:`~pyskydive.protocols.packet.decode` gives for a frame C decoded.

    Only the fields the flow table reads are set; addresses are formatted by the decoder's own
    (memoised) functions, so they are the same strings. A unit test checks this against
    ``decode`` on every frame kind C takes.
    """
    dst_mac, src_mac, vlans, version, src, dst, proto, sport, dport, itype, icode, iid = fields
    v = _TEMPLATE.copy()
    if dst_mac is not None:
        v[_ETH_DST] = dst_mac.hex(":")
        v[_ETH_SRC] = src_mac.hex(":")
        layers: tuple[str, ...] = _ETHERNET + ("Dot1Q",) * len(vlans)
    else:
        layers = ()
    v[_VLANS] = vlans
    v[_IP_VERSION] = version
    if version == 4:
        v[_IP_SRC] = _ipv4_text(src)
        v[_IP_DST] = _ipv4_text(dst)
        layers += ("IPv4", _L4_LAYER[proto])
    else:
        v[_IP_SRC] = _ipv6_text(src)
        v[_IP_DST] = _ipv6_text(dst)
        layers += ("IPv6", _L4_LAYER[proto])
    v[_LAYERS] = layers
    v[_IP_PROTO] = proto
    v[_SRC_PORT] = sport
    v[_DST_PORT] = dport
    v[_ICMP_TYPE] = itype
    v[_ICMP_CODE] = icode
    v[_ICMP_ID] = iid
    p: Packet = _new_packet(Packet, v)
    return p


# What the C table builds and compares: FinishType members by C code, the TCPMetric class.
_FAST_CLASSES = (
    (FinishType.NOT_FINISHED, FinishType.TIMEOUT, FinishType.TCP_FIN, FinishType.TCP_RST),
    TCPMetric,
)


def _sortable(endpoint: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    """``endpoint`` with None ordered before any value: comparable whatever is missing."""
    return tuple((v is not None, v if v is not None else 0) for v in endpoint)


def _set_delta(f: Flow, start: int, last: int) -> None:
    m, u = f.metric, f.updated_metric
    f.last_update_metric = Metric(
        m.ab_packets - u.ab_packets,
        m.ab_bytes - u.ab_bytes,
        m.ba_packets - u.ba_packets,
        m.ba_bytes - u.ba_bytes,
        max(start, f.start),
        last,
        m.rtt,
    )
    f.updated_metric = m.copy()
