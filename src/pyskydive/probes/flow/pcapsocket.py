"""``pcapsocket`` captures: a TCP port where a pcap stream (a file, ``tcpdump -w -``) is replayed.

Theory of operation
-------------------
:class:`PcapSocketCapture` listens on ``agent.flow.pcapsocket.bind_address``, on the capture's
``Port`` or else the first free port of ``agent.flow.pcapsocket.{min_port,max_port}``, and shows
the address in the capture's metadata as ``PCAPSocket: "ADDR:PORT"`` (Skydive's key). Each
accepted connection is one pcap stream (global header, then records), for example
``nc ADDR PORT < trace.pcap`` or ``tcpdump -w - | nc ADDR PORT``.

Each connection gets its own :class:`~pyskydive.flow.fast.PcapFlowFeeder` on a flow table of
its own (same NodeTID, CaptureID and timers as the capture's): every chunk read is fed, packets
are accounted at their own pcap timestamps, and the table is ticked with that packet time (every
second of it), so a replayed trace gives the flows it would have given live, whatever the replay
speed. The flows the feeder emits go to the sink straight away; when the peer closes,
:meth:`PcapFlowFeeder.finish` expires every flow and they are shipped. A table per connection,
not one per capture: each stream has its own clock (two traces replayed one after the other, or
at once, must not expire or back-date each other's flows). The tables are fed on the event loop,
their one owner; :meth:`PcapSocketCapture.stats` sums them.

The periodic :meth:`FlowCapture.flush` of the manager is a no-op here (packet time, not wall
time, drives this table): ticking it with the wall clock would expire a replayed trace's flows at
once.

A stream that is not pcap (bad magic, a record longer than 256 KiB, truncated at the end, an
unsupported link type) ends that connection only: one line is logged with the reason and the
stream offset, :attr:`PcapSocketCapture.bad_streams` counts it (and ``decode_errors`` in
:meth:`PcapSocketCapture.stats`), the flows already accounted are shipped, and the listener keeps
accepting.

The capture's ``BPFFilter`` is applied in userspace, to every record of the stream, by
libpcap's interpreter (:class:`~pyskydive.protocols.bpf.Matcher`, the feeder's ``accept``
hook): a record it rejects is skipped as if it had never been captured (no packet, no tick) and
counted in :attr:`PcapSocketCapture.filtered`. :meth:`PcapSocketCapture.start` compiles the
filter for Ethernet (a bad filter is a :class:`~pyskydive.errors.ProbeError` with libpcap's
reason); a stream of another link type (Linux SLL, raw IP) gets it compiled for that link type
once its global header is read (a filter that does not fit it, ``ether host ...`` on Linux
SLL, makes it a bad stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, Final

from pyskydive.errors import ProbeError, ProtocolError
from pyskydive.flow import FlowTable
from pyskydive.flow.fast import FLUSH_AFTER_MS, PcapFlowFeeder
from pyskydive.flow.table import TableStats
from pyskydive.probes.flow.base import (
    CaptureEnv,
    CaptureSpec,
    CaptureStats,
    CaptureTarget,
    FlowCapture,
    FlowSink,
)
from pyskydive.probes.flow.sflow import RateLimitedLog, bind_on_pool
from pyskydive.protocols.bpf import DLT_EN10MB, BPFError, Matcher, compile_filter
from pyskydive.protocols.pcap import PcapReader

__all__ = ["PcapSocketCapture"]

log = logging.getLogger(__name__)

_READ_SIZE: Final = 1 << 18
_GLOBAL_HEADER: Final = 24  # bytes of a pcap global header


def _drain(table: FlowTable) -> list[dict[str, Any]]:
    """Every flow of ``table``, expired after its last packet (the stream is over)."""
    last = max((f.last for f in table.flows()), default=0)
    updated, expired = table.tick(last + FLUSH_AFTER_MS)
    return [f.to_wire() for f in updated] + [f.to_wire() for f in expired]


class PcapSocketCapture(FlowCapture):
    """A TCP listener turning pcap streams into flows (module docstring)."""

    what = "pcapsocket listener"

    def __init__(
        self, spec: CaptureSpec, target: CaptureTarget, env: CaptureEnv, sink: FlowSink
    ) -> None:
        super().__init__(spec, target, env, sink)
        self.connections = 0
        self.bad_streams = 0
        self.filtered = 0  # records the BPFFilter rejected
        self._program = b""  # the BPFFilter compiled for Ethernet (b"": no filter)
        self._bad = RateLimitedLog(f"{self.what} of capture {spec.id}: bad pcap stream", 1.0, log)
        self._server: asyncio.Server | None = None
        self._host = env.config.agent.flow.pcapsocket.bind_address
        self._port = 0
        self._streams: set[asyncio.Task[Any]] = set()
        self._live: set[FlowTable] = set()  # tables of the connections being read
        self._done = TableStats()  # counters of the tables of closed connections

    @property
    def address(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    async def start(self) -> None:
        try:
            self._program = compile_filter(self.spec.bpf_filter, DLT_EN10MB)
        except BPFError as exc:
            raise ProbeError(exc.reason) from exc

        async def open_(port: int) -> asyncio.Server:
            return await asyncio.start_server(
                self._serve, self._host, port, family=socket.AF_UNSPEC, reuse_address=True
            )

        self._server, self._port = await bind_on_pool(
            self.env.pcapsocket_ports, self.spec.port, self._host, self.what, open_
        )
        self.extra = {"PCAPSocket": self.address}
        log.info("capture %s: %s on %s", self.spec.id, self.what, self.address)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        self.connections += 1
        peer = writer.get_extra_info("peername")
        table = self.env.new_table(self.spec, self.target)
        self._live.add(table)
        feeder = PcapFlowFeeder(table)
        head: bytes | None = b"" if self._program else None  # a filter waits for the link type
        try:
            while True:
                chunk = await reader.read(_READ_SIZE)
                if head is not None:  # the BPFFilter, for this stream's link type, first
                    head += chunk
                    if chunk and len(head) < _GLOBAL_HEADER:
                        continue
                    if len(head) >= _GLOBAL_HEADER:
                        feeder.accept = self._matcher(head)
                    chunk, head = head, None
                if not chunk:
                    self._ship(feeder.finish())
                    break
                before = feeder.filtered
                self._ship(feeder.feed(chunk))
                self.filtered += feeder.filtered - before
        except ProtocolError as exc:
            self.bad_streams += 1
            self._bad(f"from {peer[0] if peer else '?'}: {exc}")
        except OSError as exc:
            log.info("capture %s: pcap stream from %s: %s", self.spec.id, peer, exc)
        finally:  # a broken, cut or cancelled (stop) stream: ship what it accounted
            self._ship(_drain(table))
            self._retire(table)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            if task is not None:
                self._streams.discard(task)

    def _matcher(self, head: bytes) -> Matcher:
        """The BPFFilter for the stream that starts with ``head`` (its global header at least).

        Raises :class:`ProtocolError` for a bad global header (as the feeder would) or a filter
        libpcap cannot compile for the stream's link type (:class:`BPFError`).
        """
        probe = PcapReader()
        probe.feed(head[:_GLOBAL_HEADER])
        assert probe.header is not None
        linktype = probe.header.linktype  # the LINKTYPE_ of those we read is their DLT_ too
        if linktype == DLT_EN10MB:
            return Matcher(self._program)
        return Matcher(compile_filter(self.spec.bpf_filter, linktype))

    def _retire(self, table: FlowTable) -> None:
        if table in self._live:
            self._live.discard(table)
            for name in ("packets", "decode_errors", "overflow", "flows_created", "flows_expired"):
                setattr(self._done, name, getattr(self._done, name) + getattr(table.stats, name))

    def _ship(self, flows: list[dict[str, Any]]) -> None:
        if flows:
            self.sink(flows)

    def stats(self) -> CaptureStats:
        tables = [t.stats for t in self._live]
        return CaptureStats(
            packets_received=self._done.packets + sum(t.packets for t in tables),
            packets_dropped=self._done.overflow + sum(t.overflow for t in tables),
            decode_errors=self._done.decode_errors
            + sum(t.decode_errors for t in tables)
            + self.bad_streams,
            flows=sum(len(t) for t in self._live),
        )

    def flush(self, now: int | None = None, *, final: bool = False) -> None:
        """Packet time drives these tables (module docstring): only ``final`` ships anything."""
        if final:
            for table in list(self._live):
                self._ship(_drain(table))
                self._retire(table)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._streams):
            task.cancel()
        for task in list(self._streams):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(OSError):
            await server.wait_closed()
        self.env.pcapsocket_ports.give(self._port)
        self.flush(final=True)
        log.info("capture %s: %s on %s stopped", self.spec.id, self.what, self.address)
