"""The agent's link to each analyzer: one ``Sync``, then every graph change, forever.

Theory of operation
-------------------
The forwarder listens to the agent's graph. For each analyzer it keeps a connection task that
dials ``ws://ANALYZER/ws/agent/topology`` with the agent's host ID. On connect it queues, in the
same loop iteration (so nothing can slip in between), a ``Sync`` of the whole graph, and from
then on every change as the matching message. When the connection drops it discards its queue
and dials again with exponential backoff (0.1 s up to 5 s); the next ``Sync`` makes the
analyzer's copy exact again, whatever was missed. A refusal (409: the host ID is taken; 401:
the credentials of ``agent.auth.cluster`` are wrong) is logged with the analyzer's reason and
retried at the slow pace. With TLS configured the link is ``wss://``, verified against
``tls.ca_cert``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from pyskydive.graph import Edge, Graph, Node, Op, now_ms
from pyskydive.graph import messages as wire

__all__ = ["AnalyzerLink", "Forwarder", "MessageHandler", "dial"]

log = logging.getLogger(__name__)

#: Called with (analyzer address, message) for messages outside the Graph namespace.
MessageHandler = Callable[[str, wire.Message], None]

BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0


class AnalyzerLink:
    """The connection to one analyzer."""

    def __init__(
        self,
        address: str,
        host_id: str,
        graph: Graph,
        *,
        credentials: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_message: MessageHandler | None = None,
    ) -> None:
        self.address = address
        self.on_message = on_message  # analyzer → agent messages (on-demand captures)
        self.credentials = credentials  # agent.auth.cluster.{username,password}
        self.ssl_context = ssl_context  # wss:// when TLS is configured
        self.host_id = host_id
        self.graph = graph
        self.queue: asyncio.Queue[str] | None = None
        self.connected_at: int | None = None
        self.last_error = ""
        self.connects = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"analyzer-link:{self.address}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def push(self, text: str) -> None:
        if self.queue is not None:
            self.queue.put_nowait(text)

    def status(self) -> dict[str, Any]:
        return {
            "Connected": self.queue is not None,
            "ConnectTime": self.connected_at,
            "Connects": self.connects,
            "LastError": self.last_error,
        }

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        while True:
            try:
                async with dial(
                    self.address,
                    "/ws/agent/topology",
                    self.host_id,
                    credentials=self.credentials,
                    ssl_context=self.ssl_context,
                    persistence="DeleteOnDisconnect",
                ) as ws:
                    delay = BACKOFF_MIN
                    await self._serve(ws)
                self._disconnected("connection closed by the analyzer")
            except asyncio.CancelledError:
                raise
            except InvalidStatus as exc:
                reason = _refusal_reason(exc)
                self._disconnected(f"refused ({exc.response.status_code}): {reason}")
                delay = BACKOFF_MAX
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                self._disconnected(str(exc) or type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _disconnected(self, reason: str) -> None:
        was_connected = self.queue is not None
        self.queue = None
        self.connected_at = None
        if was_connected or reason != self.last_error:
            log.warning("analyzer %s: %s", self.address, reason)
        self.last_error = reason

    async def _serve(self, ws: ClientConnection) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        queue.put_nowait(wire.encode(wire.envelope(wire.SYNC, self.graph.to_wire())))
        self.queue = queue  # from here on every graph change is queued after the Sync
        self.connected_at = now_ms()
        self.connects += 1
        self.last_error = ""
        log.info("connected to analyzer %s", self.address)
        reader = asyncio.create_task(self._read(ws))
        try:
            while True:
                text = await queue.get()
                if reader.done():
                    break
                await ws.send(text)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.queue = None

    async def _read(self, ws: ClientConnection) -> None:
        async for text in ws:
            try:
                msg = wire.parse(text)
            except Exception:
                continue
            if msg.type == "Error":
                log.warning("analyzer %s rejected a message: %s", self.address, msg.obj)
            elif msg.namespace != wire.GRAPH_NS and self.on_message is not None:
                self.on_message(self.address, msg)
        if self.queue is not None:
            self.queue.put_nowait("")  # wake the writer so it notices the close


def dial(
    address: str,
    path: str,
    host_id: str,
    *,
    credentials: tuple[str, str] | None,
    ssl_context: ssl.SSLContext | None,
    persistence: str | None = None,
) -> connect:
    """The agent's WebSocket to an analyzer endpoint (``async with dial(...) as ws``).

    Host ID and client type in the handshake, the cluster credentials as HTTP Basic, ``wss://``
    when TLS is configured; pings every 5 s.
    """
    scheme = "wss" if ssl_context is not None else "ws"
    headers = {"X-Host-ID": host_id, "X-Client-Type": "skydive-agent"}
    if persistence is not None:
        headers["X-Persistence-Policy"] = persistence
    if credentials is not None:
        pair = ":".join(credentials).encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    return connect(
        f"{scheme}://{address}{path}",
        additional_headers=headers,
        # > the analyzer's longest brute-force delay (5 s, api/auth.py), so a refused agent
        # reads the refusal's reason rather than a timeout
        open_timeout=15,
        ping_interval=5,
        ping_timeout=10,
        max_size=None,
        compression=None,
        ssl=ssl_context,
    )


def _refusal_reason(exc: InvalidStatus) -> str:
    body = exc.response.body or b""
    try:
        data = orjson.loads(body)
        if isinstance(data, dict) and "Error" in data:
            return str(data["Error"])
    except orjson.JSONDecodeError:
        pass
    return body.decode(errors="replace").strip() or "no reason given"


class Forwarder:
    """Graph listener feeding every :class:`AnalyzerLink`."""

    def __init__(
        self,
        graph: Graph,
        host_id: str,
        analyzers: list[str],
        *,
        credentials: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_message: MessageHandler | None = None,
    ) -> None:
        self.graph = graph
        self.links = [
            AnalyzerLink(
                a,
                host_id,
                graph,
                credentials=credentials,
                ssl_context=ssl_context,
                on_message=on_message,
            )
            for a in analyzers
        ]

    async def __aenter__(self) -> Forwarder:
        self.graph.add_listener(self)
        for link in self.links:
            link.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.graph.remove_listener(self)
        for link in self.links:
            await link.stop()

    def status(self) -> dict[str, Any]:
        return {link.address: link.status() for link in self.links}

    def _send(self, type_: str, obj: dict[str, Any]) -> None:
        text: str | None = None
        for link in self.links:
            if link.queue is not None:
                if text is None:
                    text = wire.encode(wire.envelope(type_, obj))
                link.push(text)

    def on_node_added(self, node: Node) -> None:
        self._send(wire.NODE_ADDED, node.to_wire())

    def on_node_updated(self, node: Node, ops: list[Op]) -> None:
        self._send(wire.NODE_PARTIALLY_UPDATED, wire.ops_to_obj(node, ops))

    def on_node_deleted(self, node: Node) -> None:
        self._send(wire.NODE_DELETED, node.to_wire())

    def on_edge_added(self, edge: Edge) -> None:
        self._send(wire.EDGE_ADDED, edge.to_wire())

    def on_edge_updated(self, edge: Edge, ops: list[Op]) -> None:
        self._send(wire.EDGE_PARTIALLY_UPDATED, wire.ops_to_obj(edge, ops))

    def on_edge_deleted(self, edge: Edge) -> None:
        self._send(wire.EDGE_DELETED, edge.to_wire())
