"""Run an ASGI app with uvicorn inside our own event loop, as an async context manager.

The process owns signal handling (SIGINT/SIGTERM end the whole service cleanly), so uvicorn's
own signal capture is turned off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Generator
from types import TracebackType
from typing import Any

import uvicorn

from pyskydive.errors import SkydiveError

__all__ = ["HTTPServer"]

log = logging.getLogger(__name__)


class _DenialNoise(logging.Filter):
    """uvicorn's sans-I/O WebSocket protocol logs an error after a deliberate HTTP denial
    (``send_denial_response``, our 400/409 to agents); the client got its answer, so drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing handshake" not in record.getMessage()


_DENIAL_NOISE = _DenialNoise()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HTTPServer:
    """``async with HTTPServer(app, host, port, name=...)`` serves until the block exits."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        name: str,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        logging.getLogger("uvicorn.error").addFilter(_DENIAL_NOISE)  # a set: added once
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            ws_ping_interval=5.0,
            ws_ping_timeout=10.0,
            ws_max_size=256 * 1024 * 1024,
            lifespan="off",
            timeout_graceful_shutdown=2,
            # TLS (api/tls.py): our own context, built and checked at start-up.
            ssl_context_factory=(lambda _cfg, _default: ssl_context) if ssl_context else None,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.address: tuple[str, int] = (host, port)

    def _bind(self) -> socket.socket:
        host, port = self.address
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, sockaddr = infos[0]
            # Keep getaddrinfo's proto (IPPROTO_TCP): asyncio sets TCP_NODELAY only on such
            # sockets, and without it every response waits ~40 ms for a delayed ACK (uvicorn
            # writes the head and the body separately).
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
                sock.listen(512)
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            raise SkydiveError(
                f"{self.name}: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        sock.setblocking(False)
        return sock

    async def __aenter__(self) -> HTTPServer:
        sock = self._bind()
        self.address = sock.getsockname()[:2]
        self._task = asyncio.create_task(
            self._server.serve(sockets=[sock]), name=f"http:{self.name}"
        )
        while not self._server.started:
            if self._task.done():
                exc = self._task.exception()
                reason = str(exc) if exc else "server exited during start-up"
                raise SkydiveError(
                    f"{self.name}: cannot listen on {self.address[0]}:{self.address[1]}: {reason}"
                )
            await asyncio.sleep(0.01)
        scheme = "https" if self._server.config.ssl else "http"
        log.info("%s listening on %s://%s:%d", self.name, scheme, *self.address)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
