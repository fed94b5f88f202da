"""Flows from the agents into the analyzer's flow store: ``/ws/agent/flow`` and UDP.

Theory of operation
-------------------
Agents ship their capture flows in batches every ``flow.update`` (and when flows expire), as
JSON envelopes ``{"Namespace": "Flow", "Type": "FlowUpdate", "Obj": [flow, ...]}`` where each
flow is Skydive's flow JSON (``Flow.to_wire()``). Over WebSocket (``flow.protocol: websocket``,
the default) a batch is one text frame; over UDP (``flow.protocol: udp``) one datagram, sent to
the analyzer's listen port (the agent splits batches to fit).

:func:`ingest` validates a batch flow by flow: each must be an object with a non-empty string
``UUID``; a bad flow is skipped and counted, the others are stored at once (queryable by the
next Gremlin query), so one bad flow loses nothing else. A frame that is not an envelope at all
is answered (WebSocket) or logged (UDP) with a one-line reason.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from pyskydive.analyzer.flows import FlowStore
from pyskydive.api.ws import error_text, handshake_option, receive_text, remote_of

__all__ = [
    "FLOW_NS",
    "FLOW_UPDATE",
    "FlowIngestStats",
    "FlowUDPServer",
    "agent_flow_endpoint",
    "ingest",
]

log = logging.getLogger(__name__)

FLOW_NS = "Flow"
FLOW_UPDATE = "FlowUpdate"


@dataclass(slots=True)
class FlowIngestStats:
    batches: int = 0
    flows: int = 0
    rejected: int = 0  # bad flows and bad frames

    def status(self) -> dict[str, int]:
        return {"Batches": self.batches, "Flows": self.flows, "Rejected": self.rejected}


def ingest(data: str | bytes, store: FlowStore, stats: FlowIngestStats) -> str | None:
    """Store the flows of one frame; the reason when something in it was rejected."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        stats.rejected += 1
        return f"not JSON: {exc}"
    if not isinstance(msg, dict) or msg.get("Namespace") != FLOW_NS:
        stats.rejected += 1
        return 'expected {"Namespace": "Flow", "Type": "FlowUpdate", "Obj": [flows]}'
    flows = msg.get("Obj")
    if not isinstance(flows, list):
        stats.rejected += 1
        return "Obj must be a list of flows"
    good: list[dict[str, Any]] = []
    bad: str | None = None
    for i, f in enumerate(flows):
        if isinstance(f, dict) and isinstance(f.get("UUID"), str) and f["UUID"]:
            good.append(f)
        else:
            stats.rejected += 1
            bad = bad or f"flow {i} of the batch has no UUID (skipped)"
    stats.batches += 1
    stats.flows += store.put_many(good)
    return bad


async def agent_flow_endpoint(ws: WebSocket, store: FlowStore, stats: FlowIngestStats) -> None:
    """``/ws/agent/flow``: batches of flows from an agent."""
    host = handshake_option(ws, "X-Host-ID") or remote_of(ws)
    await ws.accept()
    log.info("agent %s: flow link open", host)
    try:
        while True:
            text = await receive_text(ws)
            reason = ingest(text, store, stats)
            if reason is not None:
                log.warning("agent %s: bad flow batch: %s", host, reason)
                await ws.send_text(error_text(reason, FLOW_UPDATE))
    except (WebSocketDisconnect, RuntimeError):
        pass
    log.info("agent %s: flow link closed", host)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, store: FlowStore, stats: FlowIngestStats) -> None:
        self.store = store
        self.stats = stats

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reason = ingest(data, self.store, self.stats)
        if reason is not None and (self.stats.rejected <= 10 or self.stats.rejected % 1000 == 0):
            log.warning("flow datagram from %s: %s", addr[0], reason)


class FlowUDPServer:
    """UDP flow receiver on the analyzer's listen address (``flow.protocol: udp``)."""

    def __init__(self, host: str, port: int, store: FlowStore, stats: FlowIngestStats) -> None:
        self.host, self.port = host, port
        self.store, self.stats = store, stats
        self._transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> FlowUDPServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self.store, self.stats), local_addr=(self.host, self.port)
        )
        self._transport = transport
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            self._transport.close()
