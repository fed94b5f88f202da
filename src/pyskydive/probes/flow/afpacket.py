"""``afpacket`` captures: a kernel interface through an AF_PACKET TPACKET_V3 ring.

Theory of operation
-------------------
:meth:`AfpacketCapture.start` compiles the capture's BPFFilter with libpcap's compiler
(:mod:`pyskydive.protocols.bpf`, for Ethernet frames), then creates the ring socket INSIDE the
interface's network namespace (on the agent's netns worker thread: a socket stays in the
namespace it was created in) bound to the interface's ifindex, with the filter attached so the
kernel drops what it rejects before copying it. A reader thread of its own then polls the ring
(:class:`~pyskydive.probes.flow.ring.TpacketRing`: whole blocks of packets per wake-up, fed to
the flow table by the compiled fast path when it is built) and ticks the table about once a
second, handing updated and expired flows to the sink; the table never leaves that thread.

Counters: ``PacketsReceived`` is what reached the flow table, ``PacketsDropped`` what the
kernel could not put in the ring (PACKET_STATISTICS) plus packets of flows refused for lack of
table room.

``stop()`` asks the thread to finish (it notices within one poll timeout), joins it, ships the
flows still in the table and closes the socket. If the interface disappears the ring reports an
error; the thread logs it and ends, and the capture's state shows the error until the agent's
capture manager stops it (the node's deletion does that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import ClassVar

from pyskydive.errors import ProbeError
from pyskydive.probes.flow.base import CaptureStats, FlowCapture
from pyskydive.probes.flow.ring import TpacketRing
from pyskydive.protocols.bpf import DLT_EN10MB, BPFError, compile_filter

__all__ = ["AfpacketCapture"]

log = logging.getLogger(__name__)

POLL_MS = 100
TICK_S = 1.0


class AfpacketCapture(FlowCapture):
    owns_ticks: ClassVar[bool] = True

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._ring: TpacketRing | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._received = 0
        self._dropped = 0

    async def start(self) -> None:
        t = self.target
        if t.if_index <= 0:
            raise ProbeError(f"{t.name or t.node_id} has no ifindex: not a kernel interface")
        try:
            program = compile_filter(self.spec.bpf_filter, DLT_EN10MB)
        except BPFError as exc:
            raise ProbeError(exc.reason) from exc
        snaplen = self.spec.header_size or 65535

        def open_ring() -> TpacketRing:
            return TpacketRing(t.if_index, bpf=program or None, snaplen=snaplen)

        try:
            self._ring = await self.env.runner.run(t.netns, open_ring)
        except OSError as exc:
            raise ProbeError(f"cannot capture on {t.name}: {exc.strerror or exc}") from exc
        self._thread = threading.Thread(target=self._loop, name=f"afpacket:{t.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        ring = self._ring
        assert ring is not None
        next_tick = time.monotonic() + TICK_S
        try:
            while not self._stopping.is_set():
                ring.poll(self.table, POLL_MS)
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK_S
                    self._received, self._dropped = ring.stats()
                    self.flush()
        except (OSError, ProbeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.error = f"capture on {self.target.name} failed: {reason}"
            log.warning("%s", self.error)
        except Exception:  # a bug: the capture ends, the agent goes on
            self.error = f"capture on {self.target.name} failed (see the agent's log)"
            log.exception("afpacket capture %s", self.spec.id)

    async def stop(self) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)
        ring = self._ring
        if ring is not None:
            with contextlib.suppress(OSError):
                self._received, self._dropped = ring.stats()
        if thread is None or not thread.is_alive():
            self.flush(final=True)
            if ring is not None:
                ring.close()
        else:
            log.warning("afpacket capture %s: reader thread did not stop", self.spec.id)

    def stats(self) -> CaptureStats:
        s = super().stats()  # PacketsReceived: what reached the table
        s.packets_dropped += self._dropped
        return s
