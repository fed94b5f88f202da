"""``/ws/publisher`` and ``/ws/pubsub``: external tools that push graph messages.

A publisher sends ``Graph`` messages (``NodeAdded``, ``NodeUpdated``, ``NodeDeleted``,
``EdgeAdded``, ``EdgeUpdated``, ``EdgeDeleted``, ``*PartiallyUpdated``, or a ``Sync``) which
are checked and applied exactly as an agent's are (:meth:`Hub.apply`), under the origin
``publisher.<X-Host-ID>`` (or ``publisher.<remote address:port>`` without the header). A
publisher only touches its own elements. ``X-Persistence-Policy: Persistent`` keeps them after
the publisher disconnects; ``DeleteOnDisconnect`` (the default) removes them.

``/ws/pubsub`` is a publisher and a subscriber on one connection: it also receives every graph
event and may send ``SyncRequest`` (answered with ``SyncReply``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from pyskydive.analyzer.hub import AgentConflict, AgentSession, Hub
from pyskydive.api.broadcast import Broadcaster, Subscriber
from pyskydive.api.ws import (
    error_text,
    handshake_option,
    new_subscriber,
    pump_to,
    receive_text,
    remote_of,
    sync_reply,
)
from pyskydive.errors import MessageError
from pyskydive.graph import messages as wire
from pyskydive.graph import now_ms

__all__ = ["publisher_endpoint"]

log = logging.getLogger(__name__)

POLICIES = ("Persistent", "DeleteOnDisconnect")


async def publisher_endpoint(
    ws: WebSocket, hub: Hub, broadcaster: Broadcaster | None = None
) -> None:
    """Serve one publisher; with a ``broadcaster``, also a subscriber (``/ws/pubsub``)."""
    remote = remote_of(ws)
    policy = handshake_option(ws, "X-Persistence-Policy", "DeleteOnDisconnect")
    if policy not in POLICIES:
        await ws.send_denial_response(
            JSONResponse(
                {"Error": f"X-Persistence-Policy must be one of {', '.join(POLICIES)}"},
                status_code=400,
            )
        )
        return
    session = AgentSession(
        host_id=handshake_option(ws, "X-Host-ID") or remote,
        remote=remote,
        client_type=handshake_option(ws, "X-Client-Type", "publisher"),
        connected_at=now_ms(),
        delete_on_disconnect=policy != "Persistent",
        service="publisher",
    )
    try:
        hub.register(session)
    except AgentConflict as exc:
        log.warning("refused publisher from %s: %s", remote, exc)
        await ws.send_denial_response(JSONResponse({"Error": str(exc)}, status_code=409))
        return
    sub: Subscriber | None = None
    pump: asyncio.Task[None] | None = None
    try:
        await ws.accept()
        if broadcaster is not None:
            try:
                sub = new_subscriber(ws, hub.graph, session.client_type)
            except MessageError as exc:
                await ws.send_text(error_text(str(exc)))
                await ws.close(code=1008, reason="bad X-Gremlin-Filter")
                return
            broadcaster.add(sub)
            pump = asyncio.create_task(pump_to(ws, sub))
        while True:
            text = await receive_text(ws)
            msg: wire.Message | None = None
            try:
                msg = wire.parse(text)
                if msg.type == wire.SYNC_REQUEST and msg.namespace == wire.GRAPH_NS:
                    if sub is None:
                        raise MessageError("a publisher cannot send SyncRequest (use /ws/pubsub)")
                    sub.push(sync_reply(sub, hub.graph, msg))
                    continue
                hub.apply(session, msg)
                continue
            except MessageError as exc:
                reason = str(exc)
            except Exception as exc:  # a bug, not bad input: keep the publisher connected
                log.exception("publisher %s: cannot apply %s", session.host_id, msg)
                reason = f"internal error: {exc}"
            session.errors += 1
            error = error_text(reason, msg.type if msg else None, msg.uuid if msg else None)
            if sub is not None:
                sub.push(error)
            else:
                await ws.send_text(error)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.unregister(session)
        if sub is not None and broadcaster is not None:
            broadcaster.discard(sub)
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
