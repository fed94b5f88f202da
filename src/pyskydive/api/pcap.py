"""``POST /api/pcap``: flows built on the analyzer from an uploaded pcap (DESIGN.md §2.2, §2.5).

The body is streamed (``request.stream()``) chunk by chunk into a
:class:`~pyskydive.flow.fast.PcapFlowFeeder`: each record is decoded (first layer from the pcap
link type; in C when the extension is built) and fed to a :class:`~pyskydive.flow.FlowTable`
with the packet's own timestamp as ``now`` (ms; ns for the RTT), and the table is ticked with
that time once per second of it. At the end the table is ticked far in the future so every flow
is emitted. Flows carry NodeTID ``""`` and a
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
from pyskydive.flow import FlowTable
from pyskydive.flow.fast import PcapFlowFeeder

__all__ = ["PcapIngest", "pcap_upload"]

# Packet time between two ticks of the table while the body streams in.
_TICK_MS = 1000


class PcapIngest:
    """Sans-I/O pcap → flows: ``feed(chunk)`` then ``finish()``; flows as wire dicts."""

    def __init__(self, capture_id: str, node_tid: str = "") -> None:
        self.capture_id = capture_id
        self.table = FlowTable(node_tid, capture_id)
        self.feeder = PcapFlowFeeder(self.table, tick_every_ms=_TICK_MS)
        self.flows: dict[str, dict[str, Any]] = {}
        self.received = 0

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        self._emit(self.feeder.feed(chunk))

    def finish(self) -> None:
        self._emit(self.feeder.finish())

    def summary(self) -> dict[str, Any]:
        stats = self.table.stats
        return {
            "Packets": stats.packets,
            "Flows": len(self.flows),
            "DecodeErrors": stats.decode_errors,
            "CaptureID": self.capture_id,
        }

    def _emit(self, flows: list[dict[str, Any]]) -> None:
        for f in flows:
            self.flows[f["UUID"]] = f


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
