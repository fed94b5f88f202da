"""``POST /api/pcap``: flows built on the analyzer from an uploaded pcap (DESIGN.md §2.2, §2.5).

The body is streamed (``request.stream()``) chunk by chunk into a
:class:`~pyskydive.protocols.pcap.PcapReader`; each record is decoded (first layer from the pcap
link type) and fed to a :class:`~pyskydive.flow.FlowTable` with the packet's own timestamp
(ns → ms) as ``now``, and the table is ticked with that time after each chunk. At the end the
table is ticked far in the future so every flow is emitted. Flows carry NodeTID ``""`` and a
fresh CaptureID per upload; they reach the :class:`~pyskydive.analyzer.flows.FlowStore` only
when the whole body parsed, so a bad pcap stores nothing.

Answers: 200 ``{"Packets", "Flows", "DecodeErrors", "CaptureID"}``; 400 with the reason and the
stream offset when the body is not a pcap (or is truncated, or uses an unsupported link type);
400 for an empty body.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from pyskydive.analyzer.flows import FlowStore
from pyskydive.errors import ProtocolError
from pyskydive.flow import Flow, FlowTable
from pyskydive.protocols.packet import decode
from pyskydive.protocols.pcap import PcapReader, first_layer

__all__ = ["PcapIngest", "pcap_upload"]

# Far enough after any packet that every flow expires, whatever its timers.
_FLUSH_AFTER_MS = 10**12
# Packet time between two ticks of the table while the body streams in.
_TICK_MS = 1000


class PcapIngest:
    """Sans-I/O pcap → flows: ``feed(chunk)`` then ``finish()``; flows as wire dicts."""

    def __init__(self, capture_id: str, node_tid: str = "") -> None:
        self.capture_id = capture_id
        self.reader = PcapReader()
        self.table = FlowTable(node_tid, capture_id)
        self.flows: dict[str, dict[str, Any]] = {}
        self._first: str | None = None
        self._now: int | None = None
        self._ticked: int | None = None
        self.received = 0

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        records = self.reader.feed(chunk)
        if not records:
            return
        first = self._first
        if first is None:
            header = self.reader.header
            assert header is not None
            first = self._first = first_layer(header.linktype)
        table = self.table
        now = self._now
        for rec in records:
            now = rec.timestamp_ns // 1_000_000
            table.feed(decode(rec.data, first=first), now, rec.original_len)
        self._now = now
        # tick with the packets' time, at most once per second of it (a tick scans the table)
        if now is not None and (self._ticked is None or abs(now - self._ticked) >= _TICK_MS):
            self._ticked = now
            self._emit(*table.tick(now))

    def finish(self) -> None:
        self.reader.close()
        header = self.reader.header
        assert header is not None
        if self._first is None:
            first_layer(header.linktype)  # an unsupported link type is an error even if empty
        base = self._now if self._now is not None else 0
        self._emit(*self.table.tick(base + _FLUSH_AFTER_MS))

    def summary(self) -> dict[str, Any]:
        stats = self.table.stats
        return {
            "Packets": stats.packets,
            "Flows": len(self.flows),
            "DecodeErrors": stats.decode_errors,
            "CaptureID": self.capture_id,
        }

    def _emit(self, updated: list[Flow], expired: list[Flow]) -> None:
        for f in updated:
            self.flows[f.uuid] = f.to_wire()
        for f in expired:
            self.flows[f.uuid] = f.to_wire()


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def pcap_upload(request: Request, store: FlowStore) -> Response:
    ingest = PcapIngest(str(uuid.uuid4()))
    try:
        async for chunk in request.stream():
            if chunk:
                ingest.feed(chunk)
        if ingest.received == 0:
            return _json(400, {"Error": "the request body is empty (a pcap file is expected)"})
        ingest.finish()
    except ProtocolError as exc:
        return _json(
            400, {"Error": f"not a valid pcap: {exc}", "Reason": exc.reason, "Offset": exc.offset}
        )
    store.put_many(ingest.flows.values())
    return _json(200, ingest.summary())
