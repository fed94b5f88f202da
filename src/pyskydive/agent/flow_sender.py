"""Ships the agent's capture flows to every analyzer: ``/ws/agent/flow`` or UDP.

Theory of operation
-------------------
The sender is the captures' :data:`~pyskydive.probes.flow.base.FlowSink`: call it with a list
of flow wire dicts from any thread (capture threads tick their own tables); the flows are handed
to the loop and queued per analyzer. Each analyzer has one link task:

- ``websocket`` (``flow.protocol``, the default): a WebSocket to ``/ws/agent/flow`` with the
  agent's host ID and cluster credentials, redialled with backoff (0.1 s to 5 s) when it drops.
  Flows wait in the link's queue while it is down; batches of up to :data:`WS_BATCH` flows go
  as one ``{"Namespace": "Flow", "Type": "FlowUpdate", "Obj": [...]}`` frame. A batch that could
  not be written goes back to the front of the queue (sent again after the reconnection; the
  analyzer keeps the latest version of a flow by UUID, so a repeat is harmless).
- ``udp``: datagrams to the analyzer's address, each a frame as above that fits in
  :data:`UDP_MAX` bytes. UDP loses what the network loses; that is the operator's choice.

A queue holds at most ``max_queued`` flows per analyzer; beyond that the oldest are dropped and
counted in :meth:`status` (``Dropped``), so a dead analyzer cannot exhaust the agent's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections import deque
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from pyskydive.agent.forwarder import dial

__all__ = ["UDP_MAX", "WS_BATCH", "FlowSender"]

log = logging.getLogger(__name__)

WS_BATCH = 1000
UDP_MAX = 60_000
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
DRAIN_S = 2.0


def _frame(flows: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"Namespace": "Flow", "Type": "FlowUpdate", "UUID": "", "Obj": flows})


# _frame's bytes around its flows, for frames joined from flows serialised one by one
_FRAME_HEAD, _, _FRAME_TAIL = _frame([{"X": 0}]).partition(b'{"X":0}')


class _Link:
    def __init__(self, address: str, max_queued: int) -> None:
        self.address = address
        self.queue: deque[dict[str, Any]] = deque()
        self.max_queued = max_queued
        self.ready = asyncio.Event()
        self.connected = False
        self.sent = 0
        self.dropped = 0
        self.last_error = ""
        self.task: asyncio.Task[None] | None = None

    def put(self, flows: list[dict[str, Any]]) -> None:
        self.queue.extend(flows)
        over = len(self.queue) - self.max_queued
        for _ in range(max(over, 0)):
            self.queue.popleft()
        if over > 0:
            self.dropped += over
            log.warning("analyzer %s: flow queue full, %d oldest flows dropped", self.address, over)
        self.ready.set()

    def take(self, n: int) -> list[dict[str, Any]]:
        q = self.queue
        return [q.popleft() for _ in range(min(n, len(q)))]

    def status(self) -> dict[str, Any]:
        return {
            "Connected": self.connected,
            "Queued": len(self.queue),
            "Sent": self.sent,
            "Dropped": self.dropped,
            "LastError": self.last_error,
        }


class FlowSender:
    def __init__(
        self,
        analyzers: list[str],
        host_id: str,
        *,
        protocol: str = "websocket",
        credentials: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_queued: int = 200_000,
    ) -> None:
        self.host_id = host_id
        self.protocol = protocol
        self.credentials = credentials
        self.ssl_context = ssl_context
        self.links = [_Link(a, max_queued) for a in analyzers]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    async def __aenter__(self) -> FlowSender:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        for link in self.links:
            run = self._run_udp if self.protocol == "udp" else self._run_ws
            link.task = asyncio.create_task(run(link), name=f"flow-link:{link.address}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        # the captures stopped first and queued their last flows: give connected links up to
        # DRAIN_S to write them
        deadline = asyncio.get_running_loop().time() + DRAIN_S
        for link in self.links:
            link.ready.set()
        while any(link.connected and link.queue for link in self.links):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        for link in self.links:
            if link.task is not None:
                link.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await link.task

    def __call__(self, flows: list[dict[str, Any]]) -> None:
        """The sink: queue ``flows`` for every analyzer (any thread)."""
        if not flows or self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._put(flows)
        else:
            self._loop.call_soon_threadsafe(self._put, flows)

    def _put(self, flows: list[dict[str, Any]]) -> None:
        for link in self.links:
            link.put(flows)

    def status(self) -> dict[str, Any]:
        return {link.address: link.status() for link in self.links}

    # -- websocket --------------------------------------------------------------------------

    async def _run_ws(self, link: _Link) -> None:
        delay = BACKOFF_MIN
        while True:
            try:
                async with dial(
                    link.address,
                    "/ws/agent/flow",
                    self.host_id,
                    credentials=self.credentials,
                    ssl_context=self.ssl_context,
                ) as ws:
                    delay = BACKOFF_MIN
                    link.connected, link.last_error = True, ""
                    await self._serve_ws(link, ws)
            except asyncio.CancelledError:
                raise
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                if reason != link.last_error:
                    log.warning("analyzer %s: flow link: %s", link.address, reason)
                link.last_error = reason
            finally:
                link.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _serve_ws(self, link: _Link, ws: ClientConnection) -> None:
        reader = asyncio.create_task(self._read(link, ws))
        try:
            while not reader.done():
                if not link.queue:
                    link.ready.clear()
                    waiter = asyncio.create_task(link.ready.wait())
                    await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                batch = link.take(WS_BATCH)
                try:
                    await ws.send(_frame(batch).decode())
                except BaseException:
                    link.queue.extendleft(reversed(batch))  # not written: send it again later
                    raise
                link.sent += len(batch)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    @staticmethod
    async def _read(link: _Link, ws: ClientConnection) -> None:
        async for text in ws:  # the analyzer only answers to report a bad batch
            log.warning("analyzer %s rejected flows: %s", link.address, str(text)[:300])

    # -- udp --------------------------------------------------------------------------------

    async def _run_udp(self, link: _Link) -> None:
        host, _, port = link.address.rpartition(":")
        host = host.strip("[]")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=(host, int(port))
        )
        link.connected = True
        try:
            while True:
                await link.ready.wait()
                link.ready.clear()
                while link.queue:
                    batch = link.take(WS_BATCH)
                    for datagram in _datagrams(batch):
                        transport.sendto(datagram)
                    link.sent += len(batch)
        finally:
            transport.close()
            link.connected = False


def _datagrams(flows: list[dict[str, Any]]) -> list[bytes]:
    """Frames of at most :data:`UDP_MAX` bytes (a single larger flow goes alone); each flow is
    serialised once and the frames are joined from those bytes."""
    out: list[bytes] = []
    batch: list[bytes] = []
    size = len(_FRAME_HEAD) + len(_FRAME_TAIL)
    for f in flows:
        part = orjson.dumps(f)
        if batch and size + len(part) + 1 > UDP_MAX:
            out.append(_FRAME_HEAD + b",".join(batch) + _FRAME_TAIL)
            batch, size = [], len(_FRAME_HEAD) + len(_FRAME_TAIL)
        batch.append(part)
        size += len(part) + 1
    if batch:
        out.append(_FRAME_HEAD + b",".join(batch) + _FRAME_TAIL)
    return out
