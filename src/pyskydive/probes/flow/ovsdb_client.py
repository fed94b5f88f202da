"""A small asyncio OVSDB client that runs ``transact`` requests (RFC 7047 §4.1.3).

Theory of operation
-------------------
The ``ovssflow`` capture needs to write two rows and later clear a column; it does not need the
topology probe's monitor. :class:`OvsdbClient` opens its own connection (``unix:PATH`` or
``tcp:HOST:PORT``, parsed by :func:`~pyskydive.probes.topology.ovsdb.parse_address`), and a
reader task feeds the bytes to :class:`~pyskydive.protocols.ovsdb.StreamDecoder`: responses
resolve the future of the request with the same ``id``, ``echo`` requests are answered at once
(§4.1.11), notifications are ignored. When the connection ends every pending request fails.

Errors, all :class:`~pyskydive.errors.ProbeError` with one line:

* the server cannot be reached, or the connection ends before the answer;
* the JSON-RPC answer carries an ``error``;
* one operation of the transaction failed: OVSDB then answers with one result per operation
  and an ``{"error", "details"}`` object at the failed one (§4.1.3); the message is
  ``"<error>: <details>"`` as the server wrote it (a failed ``commit`` of ovs-vswitchd's
  constraints, for example).

:meth:`OvsdbClient.transact` returns the list of per-operation results otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from pyskydive.errors import ProbeError, ProtocolError
from pyskydive.probes.topology.ovsdb import parse_address
from pyskydive.protocols.ovsdb import (
    Request,
    Response,
    StreamDecoder,
    classify,
    echo_reply,
    encode,
)

__all__ = ["OvsdbClient", "transact_error"]

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 16
DEFAULT_TIMEOUT = 10.0


def transact_error(results: Any) -> str | None:
    """The first failed operation's ``"error: details"`` in a ``transact`` result, or None."""
    if not isinstance(results, list):
        return f"unexpected transact result {results!r}"
    for res in results:
        if isinstance(res, Mapping) and res.get("error"):
            details = res.get("details")
            return f"{res['error']}: {details}" if details else str(res["error"])
    return None


class OvsdbClient:
    """One JSON-RPC connection to ovsdb-server; use ``async with OvsdbClient(addr) as c``."""

    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = parse_address(address)
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._closed_reason = "not connected"

    async def connect(self) -> None:
        addr = self.address
        try:
            async with asyncio.timeout(self.timeout):
                if addr.path is not None:
                    reader, writer = await asyncio.open_unix_connection(addr.path)
                else:
                    reader, writer = await asyncio.open_connection(addr.host, addr.port)
        except (OSError, TimeoutError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
            raise ProbeError(f"OVSDB at {addr}: cannot connect: {reason}") from exc
        self._writer = writer
        self._closed_reason = ""
        self._reader_task = asyncio.create_task(self._read(reader, writer))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = StreamDecoder()
        reason = "connection closed"
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                if not data:
                    break
                for raw in decoder.feed(data):
                    msg = classify(raw)
                    if isinstance(msg, Response):
                        fut = self._pending.pop(msg.id, None) if isinstance(msg.id, int) else None
                        if fut is not None and not fut.done():
                            fut.set_result(msg)
                    elif isinstance(msg, Request) and msg.method == "echo":
                        writer.write(echo_reply(msg))
        except ProtocolError as exc:
            reason = f"bad message from the server: {exc}"
        except OSError as exc:
            reason = exc.strerror or str(exc)
        finally:
            self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        self._closed_reason = reason
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ProbeError(f"OVSDB at {self.address}: {reason}"))

    async def call(self, method: str, params: Sequence[Any]) -> Any:
        """One JSON-RPC request; its ``result`` (ProbeError on an ``error`` or a lost link)."""
        writer = self._writer
        if writer is None or self._closed_reason:
            raise ProbeError(f"OVSDB at {self.address}: {self._closed_reason or 'not connected'}")
        request_id = next(self._ids)
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        try:
            writer.write(encode({"method": method, "params": list(params), "id": request_id}))
            async with asyncio.timeout(self.timeout):
                await writer.drain()
                response = await fut
        except TimeoutError as exc:
            raise ProbeError(f"OVSDB at {self.address}: no answer to {method}") from exc
        except OSError as exc:
            raise ProbeError(f"OVSDB at {self.address}: {exc.strerror or exc}") from exc
        finally:
            self._pending.pop(request_id, None)
        if response.error is not None:
            raise ProbeError(f"OVSDB at {self.address}: {method} failed: {response.error}")
        return response.result

    async def transact(
        self, operations: Sequence[Mapping[str, Any]], database: str = "Open_vSwitch"
    ) -> list[Any]:
        """Run ``operations`` in one transaction; ProbeError with OVSDB's reason if it fails."""
        results = await self.call("transact", [database, *operations])
        error = transact_error(results)
        if error is not None:
            raise ProbeError(f"OVSDB transaction failed: {error}")
        return list(results)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all("connection closed")

    async def __aenter__(self) -> OvsdbClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
