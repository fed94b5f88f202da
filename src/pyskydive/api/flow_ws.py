"""``/ws/subscriber/flow``: the analyzer's flow stream (DESIGN.md §2.3, §2.5).

Wire, as Skydive v0.28's flow subscriber endpoint (``flow/server/flow_subscriber_endpoint.go``):
each batch of flows the :class:`~pyskydive.analyzer.flows.FlowStore` receives (one
``POST /api/pcap``, one agent message) goes out as one text frame::

    {"Namespace": "flow", "Type": "store", "Obj": [flow, ...]}

The client picks namespaces with ``X-Websocket-Namespace`` (repeated, or comma separated; or the
``x-websocket-namespace`` query parameter): ``flow`` (every flow), ``flow/<CaptureID>`` (the
flows of that capture only, in their own message of that namespace) and ``stats`` (accepted;
nothing is sent on it yet, the analyzer has no flow table statistics). Default: ``flow`` and
``stats``. Messages the client sends are ignored, as in Skydive.

Extensions (not in Skydive):

* ``X-Gremlin-Filter``: a query over flows, such as ``G.Flows().Has('Network', '10.0.0.1')``,
  evaluated per batch over just the flows of that batch (node steps such as ``G.V()...Flows()``
  see the live graph). It must give flows: anything else, or a bad query, is refused at the
  handshake with a ``{"Namespace": "flow", "Type": "Error"}`` message and close code 1008.
* Back-pressure: each subscriber has a queue bounded in batches and in flows; when it is full
  the oldest batches are dropped, so the store is never blocked, and before the next batch the
  subscriber
  gets ``{"Namespace": "flow", "Type": "dropped", "Obj": {"Batches": n, "Flows": m}}``
  (the counts since the previous notice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from pyskydive.analyzer.flow_steps import FlowList, build_flow_registry
from pyskydive.analyzer.flows import FlowStore
from pyskydive.api.ws import handshake_option, receive_text, remote_of
from pyskydive.errors import QueryError
from pyskydive.graph import Graph
from pyskydive.graph import messages as wire
from pyskydive.gremlin import parse, run

__all__ = [
    "DROPPED",
    "FLOW_NS",
    "STATS_NS",
    "STORE",
    "FlowSubscriber",
    "flow_subscriber_endpoint",
    "make_flow_filter",
]

log = logging.getLogger(__name__)

FLOW_NS = "flow"
STATS_NS = "stats"
STORE = "store"
DROPPED = "dropped"
#: Batches a subscriber may have waiting before the oldest is dropped.
QUEUE_BATCHES = 1024
#: Flows a subscriber may have waiting (the newest batch is always kept, however large).
QUEUE_FLOWS = 200_000
#: Seconds a subscriber's Gremlin filter may take per batch.
FILTER_TIMEOUT = 5.0

Batch = list[dict[str, Any]]
#: A compiled ``X-Gremlin-Filter``: the flows of a batch it keeps.
FlowFilter = Callable[[Batch], Batch]


def make_flow_filter(query: str, graph: Graph) -> FlowFilter:
    """The filter ``query`` as a function of a batch; ``QueryError`` if it does not give flows."""
    parsed = parse(query)

    def apply(batch: Batch) -> Batch:
        store = FlowStore(max_flows=max(len(batch), 1))
        store.put_many(batch)
        value = run(parsed, graph, registry=build_flow_registry(store), timeout=FILTER_TIMEOUT)
        if not isinstance(value, FlowList):
            raise QueryError(f"the filter must give flows, not {getattr(value, 'kind', value)}")
        return [f.to_wire() for f in value.items]

    apply([])  # parses, checks the result kind
    return apply


class FlowSubscriber:
    """One client of the flow stream: its namespaces, filter and bounded queue of batches.

    ``offer`` is the store's listener (any thread; never blocks); ``next_messages`` waits for
    the next batch and gives the texts to send for it, in order."""

    def __init__(
        self,
        remote: str,
        namespaces: list[str],
        flow_filter: FlowFilter | None = None,
        *,
        limit: int = QUEUE_BATCHES,
        max_flows: int = QUEUE_FLOWS,
    ) -> None:
        self.remote = remote
        self.namespaces = frozenset(namespaces)
        self.flow_filter = flow_filter
        self.limit = limit
        self.max_flows = max_flows
        self._queued_flows = 0
        self.dropped_batches = 0
        self.dropped_flows = 0
        self._unreported = (0, 0)
        self._queue: deque[Batch] = deque()
        self._lock = threading.Lock()
        self._wakeup = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    @property
    def wants_flows(self) -> bool:
        return any(ns == FLOW_NS or ns.startswith(FLOW_NS + "/") for ns in self.namespaces)

    def offer(self, batch: Batch) -> None:
        """Queue ``batch``, dropping the oldest batches when the queue is full."""
        if not batch or not self.wants_flows:
            return
        with self._lock:
            self._queue.append(batch)
            self._queued_flows += len(batch)
            while len(self._queue) > 1 and (
                len(self._queue) > self.limit or self._queued_flows > self.max_flows
            ):
                lost = self._queue.popleft()
                self._queued_flows -= len(lost)
                self.dropped_batches += 1
                self.dropped_flows += len(lost)
                batches, flows = self._unreported
                self._unreported = (batches + 1, flows + len(lost))
        if threading.get_ident() == self._thread:
            self._wakeup.set()
        else:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def next_messages(self) -> list[str]:
        """Wait for a batch; the texts it gives (possibly none, after filtering)."""
        while True:
            with self._lock:
                batch = self._queue.popleft() if self._queue else None
                self._queued_flows -= len(batch) if batch is not None else 0
                unreported, self._unreported = self._unreported, (0, 0)
                if batch is None:
                    self._wakeup.clear()
            texts = self._dropped_notice(*unreported)
            if batch is not None:
                try:
                    return texts + self.messages(batch)
                except QueryError as exc:
                    return [*texts, _error_text(f"X-Gremlin-Filter: {exc}")]
            if texts:
                return texts
            await self._wakeup.wait()

    def messages(self, batch: Batch) -> list[str]:
        """The texts for one batch (``QueryError`` if the filter fails on it)."""
        flows = self.flow_filter(batch) if self.flow_filter is not None else batch
        if not flows:
            return []
        texts: list[str] = []
        if FLOW_NS in self.namespaces:
            texts.append(wire.encode(wire.envelope(STORE, flows, namespace=FLOW_NS)))
        by_capture: dict[str, Batch] = {}
        for f in flows:
            by_capture.setdefault(f"{FLOW_NS}/{f.get('CaptureID', '')}", []).append(f)
        for ns, some in by_capture.items():
            if ns in self.namespaces:
                texts.append(wire.encode(wire.envelope(STORE, some, namespace=ns)))
        return texts

    def _dropped_notice(self, batches: int, flows: int) -> list[str]:
        if not batches:
            return []
        obj = {"Batches": batches, "Flows": flows}
        return [wire.encode(wire.envelope(DROPPED, obj, namespace=FLOW_NS))]

    def status(self) -> dict[str, Any]:
        return {
            "Remote": self.remote,
            "Namespaces": sorted(self.namespaces),
            "DroppedBatches": self.dropped_batches,
            "DroppedFlows": self.dropped_flows,
        }


def _namespaces(ws: WebSocket) -> list[str]:
    values = ws.headers.getlist("X-Websocket-Namespace")
    if not values:
        query = ws.query_params.get("x-websocket-namespace")
        values = [query] if query else []
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or [FLOW_NS, STATS_NS]


def _error_text(reason: str) -> str:
    return wire.encode(wire.envelope("Error", {"Error": reason}, namespace=FLOW_NS, status=400))


async def _pump(ws: WebSocket, sub: FlowSubscriber) -> None:
    while True:
        for text in await sub.next_messages():
            await ws.send_text(text)


async def flow_subscriber_endpoint(
    ws: WebSocket, store: FlowStore, graph: Graph, *, limit: int = QUEUE_BATCHES
) -> None:
    """``/ws/subscriber/flow``: every batch of flows stored from now on (see module doc)."""
    await ws.accept()
    flow_filter: FlowFilter | None = None
    query = handshake_option(ws, "X-Gremlin-Filter")
    if query:
        try:
            flow_filter = make_flow_filter(query, graph)
        except QueryError as exc:
            await ws.send_text(_error_text(f"X-Gremlin-Filter: {exc}"))
            await ws.close(code=1008, reason="bad X-Gremlin-Filter")
            return
    sub = FlowSubscriber(remote_of(ws), _namespaces(ws), flow_filter, limit=limit)
    store.add_listener(sub.offer)
    pump = asyncio.create_task(_pump(ws, sub))
    log.info("flow subscriber %s on %s", sub.remote, ", ".join(sorted(sub.namespaces)))
    try:
        while True:
            receive = asyncio.ensure_future(receive_text(ws))
            done, _ = await asyncio.wait({receive, pump}, return_when=asyncio.FIRST_COMPLETED)
            if pump in done:  # the socket failed under the pump
                receive.cancel()
                pump.result()
                return
            receive.result()  # ignored, as in Skydive; raises on disconnect
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        store.remove_listener(sub.offer)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
