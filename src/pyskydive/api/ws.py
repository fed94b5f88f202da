"""WebSocket endpoints: the graph stream for subscribers, and the agents' topology link.

Handshake options come as headers or as the same names in lower case in the query string
(browsers cannot set headers): ``X-Host-ID``, ``X-Client-Type``, ``X-Persistence-Policy``,
``X-Update-Policy``. A bad message is answered with an ``Error`` message carrying the reason;
the connection, the graph and the other clients carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from pyskydive.analyzer.hub import AgentConflict, AgentSession, Hub
from pyskydive.api.broadcast import Broadcaster, Subscriber
from pyskydive.api.filtered import GraphFilter
from pyskydive.errors import MessageError, QueryError
from pyskydive.graph import Graph, now_ms
from pyskydive.graph import messages as wire
from pyskydive.gremlin import evaluate

__all__ = [
    "agent_endpoint",
    "error_text",
    "handshake_option",
    "new_subscriber",
    "pump_to",
    "receive_text",
    "remote_of",
    "subscriber_endpoint",
    "sync_reply",
]

log = logging.getLogger(__name__)

#: Seconds a subscriber's Gremlin filter may take per evaluation.
FILTER_TIMEOUT = 5.0


def handshake_option(ws: WebSocket, name: str, default: str = "") -> str:
    value = ws.headers.get(name)
    if value is None:
        value = ws.query_params.get(name.lower())
    return default if value is None else value


def remote_of(ws: WebSocket) -> str:
    client = ws.client
    return f"{client.host}:{client.port}" if client else "unknown"


def error_text(reason: str, of_type: str | None = None, uuid: str | None = None) -> str:
    obj = {"Error": reason}
    if of_type:
        obj["Type"] = of_type
    return wire.encode(wire.envelope("Error", obj, uuid=uuid, status=400))


async def receive_text(ws: WebSocket) -> str:
    """Next message as text (binary frames are decoded as UTF-8); raises on disconnect."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
    return str(text)


async def pump_to(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        text = await sub.queue.get()
        if text is None:
            await ws.close(code=1013, reason="subscriber too slow")
            return
        await ws.send_text(text)


def _filter_of(msg: wire.Message) -> str | None:
    obj = msg.obj if isinstance(msg.obj, dict) else {}
    value = obj.get("GremlinFilter")
    if value is not None and not isinstance(value, str):
        raise MessageError("SyncRequest GremlinFilter must be a string")
    return value or None


def _make_view(query: str, graph: Graph, sub: Subscriber) -> GraphFilter:
    """A filtered view, checked by a first evaluation (MessageError with the reason)."""
    view = GraphFilter(query, graph, _evaluate_filter, sub.push)
    try:
        view.snapshot()
    except QueryError as exc:
        raise MessageError(f"GremlinFilter: {exc}") from exc
    return view


def _evaluate_filter(query: str, graph: Graph) -> object:
    return evaluate(query, graph, timeout=FILTER_TIMEOUT)


def new_subscriber(ws: WebSocket, graph: Graph, client_type: str) -> Subscriber:
    """A subscriber from the handshake options (``MessageError`` for a bad filter)."""
    sub = Subscriber(
        remote_of(ws),
        partial=handshake_option(ws, "X-Update-Policy", "full").lower() == "partial",
        client_type=handshake_option(ws, "X-Client-Type", client_type),
        connected_at=now_ms(),
    )
    header_filter = handshake_option(ws, "X-Gremlin-Filter")
    if header_filter:
        sub.view = _make_view(header_filter, graph, sub)
    return sub


def sync_reply(sub: Subscriber, graph: Graph, msg: wire.Message) -> str:
    """The ``SyncReply`` text answering ``msg``; a ``GremlinFilter`` in it becomes the view."""
    if msg.obj is not None and not isinstance(msg.obj, dict):
        raise MessageError("SyncRequest Obj must be an object")
    query = _filter_of(msg)
    if query is not None:
        sub.view = _make_view(query, graph, sub)
    body = sub.view.snapshot() if sub.view is not None else graph.to_wire()
    return wire.encode(wire.envelope(wire.SYNC_REPLY, body, uuid=msg.uuid, status=200))


async def subscriber_endpoint(ws: WebSocket, graph: Graph, broadcaster: Broadcaster) -> None:
    """``/ws/subscriber``: SyncRequest → SyncReply, then every graph event, in order.

    With a Gremlin filter (``X-Gremlin-Filter`` header or ``SyncRequest.GremlinFilter``) the
    stream is the filter's view instead: see :mod:`pyskydive.api.filtered`."""
    await ws.accept()
    try:
        sub = new_subscriber(ws, graph, "unknown")
    except MessageError as exc:
        await ws.send_text(error_text(str(exc)))
        await ws.close(code=1008, reason="bad X-Gremlin-Filter")
        return
    broadcaster.add(sub)
    pump = asyncio.create_task(pump_to(ws, sub))
    try:
        while True:
            text = await receive_text(ws)
            try:
                msg = wire.parse(text)
                if msg.namespace != wire.GRAPH_NS or msg.type != wire.SYNC_REQUEST:
                    raise MessageError(
                        f"unexpected message {msg.namespace}/{msg.type} (a subscriber may "
                        "send Graph/SyncRequest)"
                    )
                sub.push(sync_reply(sub, graph, msg))
            except MessageError as exc:
                sub.push(error_text(str(exc)))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        broadcaster.discard(sub)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump


async def agent_endpoint(ws: WebSocket, hub: Hub) -> None:
    """``/ws/agent/topology``: an agent's Sync and incremental messages, merged by origin."""
    host_id = handshake_option(ws, "X-Host-ID")
    if not host_id:
        await ws.send_denial_response(
            JSONResponse({"Error": "X-Host-ID header is required"}, status_code=400)
        )
        return
    policy = handshake_option(ws, "X-Persistence-Policy", "DeleteOnDisconnect")
    session = AgentSession(
        host_id=host_id,
        remote=remote_of(ws),
        client_type=handshake_option(ws, "X-Client-Type", "skydive-agent"),
        connected_at=now_ms(),
        delete_on_disconnect=policy != "Persistent",
    )
    try:
        hub.register(session)
    except AgentConflict as exc:
        log.warning("refused agent from %s: %s", session.remote, exc)
        await ws.send_denial_response(JSONResponse({"Error": str(exc)}, status_code=409))
        return
    outbox: asyncio.Queue[str] = asyncio.Queue()
    writer: asyncio.Task[None] | None = None
    try:
        await ws.accept()
        writer = asyncio.create_task(_drain(ws, outbox), name=f"agent-writer:{host_id}")
        session.send = outbox.put_nowait  # analyzer → agent (on-demand captures)
        while True:
            text = await receive_text(ws)
            msg: wire.Message | None = None
            try:
                msg = wire.parse(text)
                hub.apply(session, msg)
            except MessageError as exc:
                reason = str(exc)
            except Exception as exc:  # a bug, not bad input: keep the agent connected
                log.exception("agent %s: cannot apply %s", host_id, msg.type if msg else "?")
                reason = f"internal error: {exc}"
            else:
                continue
            session.errors += 1
            if session.errors <= 10 or session.errors % 1000 == 0:
                log.warning("agent %s: bad message: %s", host_id, reason)
            outbox.put_nowait(
                error_text(reason, msg.type if msg else None, msg.uuid if msg else None)
            )
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        session.send = None
        hub.unregister(session)
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer


async def _drain(ws: WebSocket, outbox: asyncio.Queue[str]) -> None:
    """Write queued frames to ``ws`` in order (one writer: frames never interleave)."""
    while True:
        await ws.send_text(await outbox.get())
