"""WebSocket endpoints: the graph stream for subscribers, and the agents' topology link.

Handshake options come as headers or as the same names in lower case in the query string
(browsers cannot set headers): ``X-Host-ID``, ``X-Client-Type``, ``X-Persistence-Policy``,
``X-Update-Policy``. A bad message is answered with an ``Error`` message carrying the reason;
the connection, the graph and the other clients carry on.

A ``SyncRequest`` whose Obj has a non-zero ``Time`` (Unix ms, as Skydive; a string in one of
the ``G.At()`` time forms is accepted too) is a one-off look at the past: the reply is the
graph as it was then, through the request's ``GremlinFilter`` if any, read from the topology
history in a worker thread; the subscriber's live stream and view are left as they were.
Without a history it is answered with an ``Error`` saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from pyskydive.analyzer.hub import AgentConflict, AgentSession, Hub
from pyskydive.api.broadcast import Broadcaster, Subscriber
from pyskydive.api.filtered import GraphFilter, select
from pyskydive.errors import MessageError, QueryError, StorageError
from pyskydive.graph import Graph, graph_from_wire, now_ms
from pyskydive.graph import messages as wire
from pyskydive.gremlin import HistorySource, evaluate
from pyskydive.gremlin.errors import QuerySyntaxError
from pyskydive.gremlin.timeforms import parse_time

__all__ = [
    "agent_endpoint",
    "error_text",
    "handshake_option",
    "new_subscriber",
    "past_sync_body",
    "pump_to",
    "receive_text",
    "remote_of",
    "subscriber_endpoint",
    "sync_reply",
    "sync_time",
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


def sync_time(msg: wire.Message, now: int) -> int | None:
    """The ``Time`` (Unix ms) a ``SyncRequest`` asks for; ``None`` for the live graph."""
    obj = msg.obj if isinstance(msg.obj, dict) else {}
    value = obj.get("Time")
    if value is None or (value == 0 and not isinstance(value, bool)):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return parse_time(value, now, position=0, step="Time")
        except QuerySyntaxError as exc:
            raise MessageError(f"SyncRequest {exc.reason}") from exc
    raise MessageError("SyncRequest Time must be Unix milliseconds (an integer)")


def past_sync_body(
    history: HistorySource, t: int, query: str | None, host: str
) -> dict[str, list[dict[str, Any]]]:
    """The ``SyncReply`` body for the graph as it was at ``t``, filtered by ``query``.

    Blocks on the history: call it from a worker thread. Only the rebuilt past graph is
    touched, never the live one. ``MessageError`` with the reason on failure."""
    try:
        nodes, edges = history.graph_at(t)
    except StorageError as exc:
        raise MessageError(f"SyncRequest Time: topology history: {exc}") from exc
    past = graph_from_wire(nodes, edges, host)
    if query is None:
        return past.to_wire()
    try:
        selected_nodes, selected_edges = select(_evaluate_filter(query, past), past)
    except QueryError as exc:
        raise MessageError(f"GremlinFilter: {exc}") from exc
    return {"Nodes": list(selected_nodes.values()), "Edges": list(selected_edges.values())}


def sync_reply(sub: Subscriber, graph: Graph, msg: wire.Message) -> str:
    """The ``SyncReply`` text answering ``msg``; a ``GremlinFilter`` in it becomes the view.

    A request for the past (``Time``) is refused here: it needs a topology history (see
    :func:`past_sync_body`)."""
    if msg.obj is not None and not isinstance(msg.obj, dict):
        raise MessageError("SyncRequest Obj must be an object")
    if sync_time(msg, now_ms()) is not None:
        raise MessageError("SyncRequest Time: time travel needs topology history (storage)")
    query = _filter_of(msg)
    if query is not None:
        sub.view = _make_view(query, graph, sub)
    body = sub.view.snapshot() if sub.view is not None else graph.to_wire()
    return wire.encode(wire.envelope(wire.SYNC_REPLY, body, uuid=msg.uuid, status=200))


async def _past_reply(
    history: HistorySource | None, graph: Graph, msg: wire.Message, t: int
) -> str:
    if history is None:
        raise MessageError("SyncRequest Time: time travel needs topology history (storage)")
    query = _filter_of(msg)
    body = await asyncio.to_thread(past_sync_body, history, t, query, graph.host)
    return wire.encode(wire.envelope(wire.SYNC_REPLY, body, uuid=msg.uuid, status=200))


async def subscriber_endpoint(
    ws: WebSocket, graph: Graph, broadcaster: Broadcaster, history: HistorySource | None = None
) -> None:
    """``/ws/subscriber``: SyncRequest → SyncReply, then every graph event, in order.

    With a Gremlin filter (``X-Gremlin-Filter`` header or ``SyncRequest.GremlinFilter``) the
    stream is the filter's view instead: see :mod:`pyskydive.api.filtered`. A SyncRequest
    with ``Time`` is answered from ``history`` (see the module docstring)."""
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
                if msg.obj is not None and not isinstance(msg.obj, dict):
                    raise MessageError("SyncRequest Obj must be an object")
                t = sync_time(msg, now_ms())
                if t is None:
                    sub.push(sync_reply(sub, graph, msg))
                else:
                    sub.push(await _past_reply(history, graph, msg, t))
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
