"""``sflow`` captures: an sFlow v5 collector on a UDP port, feeding one flow table.

Theory of operation
-------------------
:class:`SflowCapture` binds a UDP socket on ``agent.flow.sflow.bind_address``, on the capture's
``Port`` or else on the first free port of ``agent.flow.sflow.{port_min,port_max}``, and shows
where it listens in the capture's metadata as ``SFlowSocket: "ADDR:PORT"`` (Skydive's key). An
sFlow agent (a switch, Open vSwitch, hsflowd) is then pointed at that address.

Every datagram goes to :func:`pyskydive.flow.fast.feed_sflow` on the event loop: each sampled
packet header is accounted in the table with the sample's ``frame_length`` as its wire length and
the arrival time as ``now`` (sampling is not scaled up: a flow counts the packets that were
sampled, as in Skydive). The manager calls :meth:`FlowCapture.flush` about once a second on the
loop, so the table has a single owner. A datagram that does not decode is counted
(:attr:`SflowCapture.malformed`, added to ``decode_errors`` in :meth:`SflowCapture.stats`) and
logged on one line, at most once per :data:`LOG_EVERY_S` seconds with the number skipped; the
collector keeps running.

Counter samples become the capture node's ``SFlow`` metadata, laid out as Skydive v0.28
(``sflow/sflow.go``) does::

    SFlow: {IfMetrics: {"<ifIndex>": {IfInOctets, IfInUcastPkts, ..., IfOutErrors}},
            Metric: {IfInOctets..., OvsDpNHit..., OvsAppFdOpen..., Vlan..., Eth..., Last},
            LastUpdateMetric: {the same keys: change since the previous update, Start, Last}}

:class:`SflowCounters` is the pure core: it keeps the last value of each counter (a counter sent
as 0 or all-ones, "unknown" in sFlow, keeps its previous value, as Skydive does), and
:meth:`SflowCounters.publish` builds the metadata; ``Metric`` sums the interfaces' counters.
Unlike Skydive v0.28, the OVS datapath and application blocks are taken as their latest value
(Skydive adds every sample to the running total, which grows without bound). Zero-valued keys
are left out, like Go's ``omitempty``. The metadata is written at most once per ``flush`` (about
a second) when something changed, and removed when the capture stops.

The capture's ``BPFFilter`` is applied, as in Skydive, to each sampled header: compiled for
Ethernet at :meth:`SflowCapture.start` (a bad filter is a :class:`ProbeError` with libpcap's
reason) and run in userspace by libpcap's interpreter (:class:`~pyskydive.protocols.bpf.Matcher`,
the ``accept`` hook of :func:`~pyskydive.flow.fast.feed_sflow`; a sampled IPv4/IPv6 header is
matched behind a zero Ethernet header). A header it rejects is not accounted; it is counted in
:attr:`SflowCapture.filtered`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar

from pyskydive.errors import ProbeError
from pyskydive.flow.fast import Accept, feed_sflow
from pyskydive.graph import now_ms
from pyskydive.probes.flow.base import (
    CaptureEnv,
    CaptureSpec,
    CaptureStats,
    CaptureTarget,
    FlowCapture,
    FlowSink,
    PortPool,
)
from pyskydive.protocols.bpf import DLT_EN10MB, BPFError, Matcher, compile_filter
from pyskydive.protocols.sflow import (
    AppResources,
    CounterSample,
    EthernetCounters,
    GenericInterfaceCounters,
    OvsDpStats,
    VlanCounters,
)

__all__ = ["LOG_EVERY_S", "RateLimitedLog", "SflowCapture", "SflowCounters", "bind_on_pool"]

log = logging.getLogger(__name__)

#: Receive buffer asked for the collector socket: OVS sends its samples in bursts.
RCVBUF: Final = 4 << 20
_SO_RCVBUFFORCE: Final = getattr(socket, "SO_RCVBUFFORCE", 33)

#: At most one log line per this many seconds for a stream of bad input.
LOG_EVERY_S: Final = 10.0

_U32_UNKNOWN: Final = 0xFFFFFFFF
_U64_UNKNOWN: Final = 0xFFFFFFFFFFFFFFFF

# (Skydive metadata key, record attribute, all-ones value) per counter block.
_IF_FIELDS: Final = (
    ("IfInOctets", "in_octets", _U64_UNKNOWN),
    ("IfInUcastPkts", "in_ucast_pkts", _U32_UNKNOWN),
    ("IfInMulticastPkts", "in_multicast_pkts", _U32_UNKNOWN),
    ("IfInBroadcastPkts", "in_broadcast_pkts", _U32_UNKNOWN),
    ("IfInDiscards", "in_discards", _U32_UNKNOWN),
    ("IfInErrors", "in_errors", _U32_UNKNOWN),
    ("IfInUnknownProtos", "in_unknown_protos", _U32_UNKNOWN),
    ("IfOutOctets", "out_octets", _U64_UNKNOWN),
    ("IfOutUcastPkts", "out_ucast_pkts", _U32_UNKNOWN),
    ("IfOutMulticastPkts", "out_multicast_pkts", _U32_UNKNOWN),
    ("IfOutBroadcastPkts", "out_broadcast_pkts", _U32_UNKNOWN),
    ("IfOutDiscards", "out_discards", _U32_UNKNOWN),
    ("IfOutErrors", "out_errors", _U32_UNKNOWN),
)
_OVSDP_FIELDS: Final = (
    ("OvsDpNHit", "n_hit", _U32_UNKNOWN),
    ("OvsDpNMissed", "n_missed", _U32_UNKNOWN),
    ("OvsDpNLost", "n_lost", _U32_UNKNOWN),
    ("OvsDpNMaskHit", "n_mask_hit", _U32_UNKNOWN),
    ("OvsDpNFlows", "n_flows", _U32_UNKNOWN),
    ("OvsDpNMasks", "n_masks", _U32_UNKNOWN),
)
_APP_FIELDS: Final = (
    ("OvsAppFdOpen", "fd_open", _U32_UNKNOWN),
    ("OvsAppFdMax", "fd_max", _U32_UNKNOWN),
    ("OvsAppConnOpen", "conn_open", _U32_UNKNOWN),
    ("OvsAppConnMax", "conn_max", _U32_UNKNOWN),
    ("OvsAppMemUsed", "mem_used", _U64_UNKNOWN),
    ("OvsAppMemMax", "mem_max", _U64_UNKNOWN),
)
_VLAN_FIELDS: Final = (
    ("VlanOctets", "octets", _U64_UNKNOWN),
    ("VlanUcastPkts", "ucast_pkts", _U32_UNKNOWN),
    ("VlanMulticastPkts", "multicast_pkts", _U32_UNKNOWN),
    ("VlanBroadcastPkts", "broadcast_pkts", _U32_UNKNOWN),
    ("VlanDiscards", "discards", _U32_UNKNOWN),
)
_ETH_FIELDS: Final = (
    ("EthAlignmentErrors", "alignment_errors", _U32_UNKNOWN),
    ("EthFCSErrors", "fcs_errors", _U32_UNKNOWN),
    ("EthSingleCollisionFrames", "single_collision_frames", _U32_UNKNOWN),
    ("EthMultipleCollisionFrames", "multiple_collision_frames", _U32_UNKNOWN),
    ("EthSQETestErrors", "sqe_test_errors", _U32_UNKNOWN),
    ("EthDeferredTransmissions", "deferred_transmissions", _U32_UNKNOWN),
    ("EthLateCollisions", "late_collisions", _U32_UNKNOWN),
    ("EthExcessiveCollisions", "excessive_collisions", _U32_UNKNOWN),
    ("EthInternalMacReceiveErrors", "internal_mac_receive_errors", _U32_UNKNOWN),
    ("EthInternalMacTransmitErrors", "internal_mac_transmit_errors", _U32_UNKNOWN),
    ("EthCarrierSenseErrors", "carrier_sense_errors", _U32_UNKNOWN),
    ("EthFrameTooLongs", "frame_too_longs", _U32_UNKNOWN),
    ("EthSymbolErrors", "symbol_errors", _U32_UNKNOWN),
)
_BLOCKS: Final[dict[type, tuple[tuple[str, str, int], ...]]] = {
    OvsDpStats: _OVSDP_FIELDS,
    AppResources: _APP_FIELDS,
    VlanCounters: _VLAN_FIELDS,
    EthernetCounters: _ETH_FIELDS,
}
_IF_KEYS: Final = tuple(key for key, _, _ in _IF_FIELDS)


def _merge(into: dict[str, int], record: object, fields: Iterable[tuple[str, str, int]]) -> bool:
    """Copy the known counters of ``record`` into ``into``; whether anything changed."""
    changed = False
    for key, attr, unknown in fields:
        value = getattr(record, attr)
        if value and value != unknown and into.get(key) != value:
            into[key] = value
            changed = True
    return changed


def _nonzero(metric: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in metric.items() if v}


class SflowCounters:
    """Pure core: counter samples in, the node's ``SFlow`` metadata out (module docstring)."""

    def __init__(self) -> None:
        self.if_metrics: dict[int, dict[str, int]] = {}
        self.other: dict[str, int] = {}  # OVS datapath, application, VLAN, Ethernet blocks
        self._published: dict[str, int] = {}  # Metric (without Start/Last) last published
        self._last: int = 0
        self.dirty = False

    def update(self, samples: Iterable[CounterSample]) -> None:
        """Take the counter records of ``samples`` (one datagram's)."""
        for sample in samples:
            for rec in sample.records:
                if isinstance(rec, GenericInterfaceCounters):
                    ifm = self.if_metrics.setdefault(rec.if_index, {})
                    self.dirty |= _merge(ifm, rec, _IF_FIELDS)
                else:
                    fields = _BLOCKS.get(type(rec))
                    if fields is not None:
                        self.dirty |= _merge(self.other, rec, fields)

    def metric(self) -> dict[str, int]:
        """The current totals: interface counters summed over interfaces, then the blocks."""
        total = dict.fromkeys(_IF_KEYS, 0)
        for ifm in self.if_metrics.values():
            for key, value in ifm.items():
                total[key] += value
        total.update(self.other)
        return _nonzero(total)

    def publish(self, now: int) -> dict[str, Any] | None:
        """The ``SFlow`` metadata when counters changed since the last call, else None."""
        if not self.dirty:
            return None
        self.dirty = False
        metric = self.metric()
        if not metric:
            return None
        prev, self._published = self._published, metric
        delta = _nonzero({k: v - prev.get(k, 0) for k, v in metric.items()})
        out: dict[str, Any] = {
            "IfMetrics": {str(i): dict(m) for i, m in sorted(self.if_metrics.items()) if m},
            "Metric": {**metric, "Last": now},
        }
        if delta:  # Start: the previous update (none on the first: left out, as omitempty)
            start = {"Start": self._last} if self._last else {}
            out["LastUpdateMetric"] = {**delta, **start, "Last": now}
        self._last = now
        return out


class RateLimitedLog:
    """One warning line per ``every`` seconds for a repeated problem, with the count skipped."""

    def __init__(
        self, what: str, every: float = LOG_EVERY_S, logger: logging.Logger | None = None
    ) -> None:
        self.what = what
        self.every = every
        self.log = logger or log
        self._next = 0.0
        self._skipped = 0

    def __call__(self, detail: str) -> None:
        t = time.monotonic()
        if t < self._next:
            self._skipped += 1
            return
        more = f" ({self._skipped} more since the last report)" if self._skipped else ""
        self.log.warning("%s: %s%s", self.what, detail, more)
        self._skipped = 0
        self._next = t + self.every


_T = TypeVar("_T")


async def bind_on_pool(
    pool: PortPool, wanted: int, host: str, what: str, open_: Callable[[int], Awaitable[_T]]
) -> tuple[_T, int]:
    """Open ``open_(port)`` on ``wanted`` or the first free port of ``pool``, and hold it.

    :class:`ProbeError` naming ``what`` when the wanted port is in use, the range is exhausted
    or the address cannot be bound.
    """
    for port in pool.take(wanted):
        try:
            opened = await open_(port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                if wanted:
                    raise ProbeError(f"{what}: {host} port {port} is in use") from exc
                continue
            reason = exc.strerror or str(exc)
            raise ProbeError(f"{what}: cannot listen on {host}:{port}: {reason}") from exc
        pool.hold(port)
        return opened, port
    raise ProbeError(f"{what}: no free port in {pool.low}-{pool.high} on {host}")


def _udp_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket with a receive buffer for bursts of datagrams."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        try:  # past net.core.rmem_max: needs CAP_NET_ADMIN
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP errors on an unconnected socket
        log.debug("sFlow collector socket: %s", exc)


class SflowCapture(FlowCapture):
    """An sFlow collector feeding this capture's table (module docstring)."""

    #: Label of this collector in error messages.
    what = "sflow collector"

    def __init__(
        self, spec: CaptureSpec, target: CaptureTarget, env: CaptureEnv, sink: FlowSink
    ) -> None:
        super().__init__(spec, target, env, sink)
        self.counters = SflowCounters()
        self.datagrams = 0
        self.malformed = 0
        self.filtered = 0  # sampled headers the BPFFilter rejected
        self._accept: Accept | None = None
        self._bad = RateLimitedLog(f"{self.what} of capture {spec.id}: malformed datagram")
        self._transport: asyncio.DatagramTransport | None = None
        self._host = env.config.agent.flow.sflow.bind_address
        self._port = 0

    @property
    def address(self) -> str:
        """``ADDR:PORT`` the collector listens on (after :meth:`start`)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    async def start(self) -> None:
        try:
            program = compile_filter(self.spec.bpf_filter, DLT_EN10MB)
        except BPFError as exc:
            raise ProbeError(exc.reason) from exc
        self._accept = Matcher(program) if program else None
        loop = self.env.loop

        async def open_(port: int) -> asyncio.DatagramTransport:
            sock = _udp_socket(self._host, port)
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Collector(self.on_datagram), sock=sock
                )
            except BaseException:
                sock.close()
                raise
            return transport

        self._transport, self._port = await bind_on_pool(
            self.env.sflow_ports, self.spec.port, self._host, self.what, open_
        )
        self.extra = {"SFlowSocket": self.address}
        log.info("capture %s: %s listening on %s", self.spec.id, self.what, self.address)

    def on_datagram(self, data: bytes, addr: Any = None) -> None:
        """Account one datagram (on the loop): flows into the table, counters kept."""
        self.datagrams += 1
        fed = feed_sflow(self.table, data, now_ms(), self._accept)
        self.filtered += fed.filtered
        if fed.error is not None:
            self.malformed += 1
            self._bad(f"from {addr[0] if addr else '?'}: {fed.error}")
            return
        if fed.counters:
            self.counters.update(fed.counters)

    def stats(self) -> CaptureStats:
        s = super().stats()
        s.decode_errors += self.malformed
        return s

    def flush(self, now: int | None = None, *, final: bool = False) -> None:
        super().flush(now, final=final)
        if self._transport is not None:
            self._publish_counters(now_ms() if now is None else now)

    def _publish_counters(self, now: int) -> None:
        sflow = self.counters.publish(now)
        if sflow is None:
            return
        node = self.env.graph.get_node(self.target.node_id)
        if node is not None:
            self.env.graph.update_node(node, {"SFlow": sflow})

    def _drop_counters(self) -> None:
        node = self.env.graph.get_node(self.target.node_id)
        if node is not None and "SFlow" in node.metadata:
            self.env.graph.update_node(node, delete=("SFlow",))

    async def stop(self) -> None:
        transport, self._transport = self._transport, None
        if transport is None:
            return
        transport.close()
        self.env.sflow_ports.give(self._port)
        self.flush(final=True)
        self._drop_counters()
        log.info("capture %s: %s on %s stopped", self.spec.id, self.what, self.address)
