"""The write side of the Elasticsearch store: bounded queues and the threads draining them.

:class:`Writer` holds three queues: flows (``queue_size``), revisions and ``close_live``
markers (``revision_queue_size``), resource changes (unbounded: an API writes a handful).
Over a bound, the *oldest* items are dropped and counted; a ``close_live`` marker is never
dropped. Appending never blocks beyond the queue lock.

* ``es-writer`` waits until a batch of flows is due (``batch_flows`` queued, or the oldest
  queued ``bulk_maxdelay`` seconds ago, or a flush or close asks), and at most
  ``concurrency`` requests are in flight; it takes the batch and a sender thread
  (``es-bulk-N``) serialises it (``elasticsearch_docs.flow_batch``) and sends it
  (``BulkSender.deliver``, retried until written). Flow requests may complete out of order:
  flow documents are versioned by ``Last``.
* ``es-ordered`` takes every resource change and a batch of revisions, builds their ops
  (``elasticsearch_topology``) and sends them, one request at a time, in queue order.

Items taken from a queue stay counted in ``queued`` until their request is done. The
writer knows nothing of the cluster's set-up: it asks ``ensure_ready`` (the store creates
the layout on first contact), and waits while that fails.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pyskydive.errors import StorageError
from pyskydive.storage import elasticsearch_docs as _docs
from pyskydive.storage.base import Revision
from pyskydive.storage.elasticsearch_bulk import BulkSender, one_line
from pyskydive.storage.elasticsearch_layout import Layout
from pyskydive.storage.elasticsearch_resources import Key
from pyskydive.storage.elasticsearch_topology import CloseLive, revision_ops

__all__ = ["Writer"]

log = logging.getLogger(__name__)


class Writer:
    """The queues and the writer threads of one store (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        layout: Layout,
        bulk: BulkSender,
        *,
        ensure_ready: Callable[[], bool],
        before_flows: Callable[[], None],
        resources_written: Callable[[list[Key]], None],
        on_failure: Callable[[BaseException], None],
        queue_size: int,
        revision_queue_size: int,
        batch_flows: int,
        batch_revisions: int,
        bulk_maxdelay: float,
        concurrency: int,
    ) -> None:
        self._client = client
        self._layout = layout
        self._bulk = bulk
        self._ensure_ready = ensure_ready
        self._before_flows = before_flows
        self._resources_written = resources_written
        self._on_failure = on_failure
        self.queue_size = queue_size
        self.revision_queue_size = revision_queue_size
        self.batch_flows = batch_flows
        self.batch_revisions = batch_revisions
        self.bulk_maxdelay = bulk_maxdelay
        self.concurrency = concurrency

        self.lock = threading.Condition()  # guards everything below
        self._flows: collections.deque[Mapping[str, Any]] = collections.deque()
        self._revisions: collections.deque[Revision | CloseLive] = collections.deque()
        self._res_ops: collections.deque[tuple[Key, _docs.Op]] = collections.deque()
        self._flows_since = 0.0  # when the oldest queued flow was queued (monotonic)
        self._revisions_since = 0.0
        self._in_flight_flows = 0
        self._in_flight_revisions = 0
        self._flow_requests = 0
        self._ordered_busy = False
        self._flushing = 0
        self._closing = False
        self.ready = False  # set by the store once the layout is there
        self.written = 0
        self.dropped_flows = 0
        self.dropped_revisions = 0
        self._senders = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="es-bulk"
        )
        self._threads = [
            threading.Thread(target=self._run_flows, name="es-writer", daemon=True),
            threading.Thread(target=self._run_ordered, name="es-ordered", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- state -----------------------------------------------------------------------------

    def wake(self) -> None:
        with self.lock:
            self.lock.notify_all()

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                "queued": len(self._flows)
                + len(self._revisions)
                + len(self._res_ops)
                + self._in_flight_flows
                + self._in_flight_revisions,
                "written": self.written,
                "dropped_flows": self.dropped_flows,
                "dropped_revisions": self.dropped_revisions,
                "requests_in_flight": self._flow_requests + self._ordered_busy,
            }

    def drain(self, timeout: float) -> bool:
        """Wait until every queue is empty and nothing is in flight (no batching delay
        meanwhile); False on timeout."""
        deadline = time.monotonic() + timeout
        with self.lock:
            self._flushing += 1
            self.lock.notify_all()
            try:
                while (
                    self._flows
                    or self._revisions
                    or self._res_ops
                    or self._flow_requests
                    or self._ordered_busy
                ):
                    left = deadline - time.monotonic()
                    if left <= 0 or self._bulk.abandoned:
                        return False
                    self.lock.wait(min(left, 0.1))
            finally:
                self._flushing -= 1
        return True

    def close(self, timeout: float) -> bool:
        """Write what is queued for up to ``timeout`` seconds, then stop; False if it could
        not: the rest is counted as dropped."""
        with self.lock:
            if self._closing:
                return True
            self._closing = True
            self.lock.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        drained = not any(t.is_alive() for t in self._threads)
        if not drained:
            self._bulk.abandon()
            self.wake()
            for t in self._threads:
                t.join(5.0)
        self._senders.shutdown(wait=True, cancel_futures=True)
        with self.lock:
            self.dropped_flows += len(self._flows)
            self.dropped_revisions += sum(isinstance(r, Revision) for r in self._revisions)
            self._flows.clear()
            self._revisions.clear()
            self._res_ops.clear()
        return drained

    # -- queueing (never blocks) ------------------------------------------------------------

    def write_flows(self, flows: Iterable[Mapping[str, Any]]) -> None:
        with self.lock:
            self._check_open()
            if not self._flows:
                self._flows_since = time.monotonic()
            self._flows.extend(flows)
            over = len(self._flows) - self.queue_size
            if over > 0:  # drop the oldest
                for _ in range(over):
                    self._flows.popleft()
                self.dropped_flows += over
            self.lock.notify_all()

    def record(self, items: Iterable[Revision | CloseLive]) -> None:
        with self.lock:
            self._check_open()
            if not self._revisions:
                self._revisions_since = time.monotonic()
            self._revisions.extend(items)
            over = len(self._revisions) - self.revision_queue_size
            if over > 0:  # drop the oldest revisions (never a close_live)
                kept: list[CloseLive] = []
                for _ in range(over):
                    item = self._revisions.popleft()
                    if isinstance(item, CloseLive):
                        kept.append(item)
                    else:
                        self.dropped_revisions += 1
                self._revisions.extendleft(reversed(kept))
            self.lock.notify_all()

    def resource(self, key: Key, op: _docs.Op) -> None:
        with self.lock:
            self._check_open()
            self._res_ops.append((key, op))
            self.lock.notify_all()

    def _check_open(self) -> None:
        if self._closing:
            raise StorageError("Elasticsearch store: closed")

    # -- the flow writer ------------------------------------------------------------------

    def _run_flows(self) -> None:
        inflight: set[concurrent.futures.Future[None]] = set()
        attempt = 0
        try:
            while True:
                with self.lock:
                    while not self._bulk.abandoned and (self._flows or not self._closing):
                        if self.ready and self._flows and self._flows_due():
                            break
                        if not self.ready and (self._flows or self._revisions or self._res_ops):
                            break  # set up on first contact
                        self.lock.wait(self._flows_wait())
                    else:
                        break  # abandoned, or closing with nothing left
                if not self._ensure_ready():
                    self._bulk.sleep(attempt)
                    attempt += 1
                    continue
                attempt = 0
                self._before_flows()
                while len(inflight) >= self.concurrency:
                    _, inflight = concurrent.futures.wait(
                        inflight, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                with self.lock:
                    n = min(len(self._flows), self.batch_flows)
                    if not n:
                        continue
                    batch = [self._flows.popleft() for _ in range(n)]
                    self._flows_since = time.monotonic()
                    self._in_flight_flows += n
                    self._flow_requests += 1
                future = self._senders.submit(self._send_flows, batch)
                future.add_done_callback(_log_failure)
                inflight.add(future)
            concurrent.futures.wait(inflight)
        except BaseException as exc:  # a bug: say so in the status, then let the thread die
            log.exception("Elasticsearch flow writer stopped")
            self._on_failure(RuntimeError(f"flow writer stopped: {one_line(exc)}"))
            raise

    def _flows_due(self) -> bool:
        return (
            len(self._flows) >= self.batch_flows
            or self._flushing > 0
            or self._closing
            or time.monotonic() - self._flows_since >= self.bulk_maxdelay
        )

    def _flows_wait(self) -> float:
        if self.ready and self._flows:
            return max(0.005, self._flows_since + self.bulk_maxdelay - time.monotonic())
        return 1.0

    def _send_flows(self, batch: list[Mapping[str, Any]]) -> None:
        """One flow request, in a sender thread."""
        done = False
        metric_index = self._layout.alias("metric")
        try:
            body, bad = _docs.flow_batch(batch, self._layout.alias("flow"), metric_index)
            if bad:
                self._bulk.reject(bad, "flow without a UUID string, or not JSON")
            done = self._bulk.deliver(body, None, metric_index=metric_index) if body else True
        finally:
            with self.lock:
                self._in_flight_flows -= len(batch)
                self._flow_requests -= 1
                if done:
                    self.written += len(batch)
                else:
                    self.dropped_flows += len(batch)
                self.lock.notify_all()

    # -- the ordered writer: revisions and resources --------------------------------------

    def _run_ordered(self) -> None:
        attempt = 0
        try:
            while True:
                with self.lock:
                    while not self._bulk.abandoned and (
                        self._revisions or self._res_ops or not self._closing
                    ):
                        if self.ready and (self._res_ops or self._revisions_due()):
                            break
                        self.lock.wait(self._revisions_wait())
                    else:
                        return  # abandoned, or closing with nothing left
                    items, res = self._take_ordered()
                try:
                    if not self._ensure_ready():
                        with self.lock:  # back to the head of the queues
                            self._revisions.extendleft(reversed(items))
                            self._res_ops.extendleft(reversed(res))
                        self._bulk.sleep(attempt)
                        attempt += 1
                        continue
                    attempt = 0
                    self._write_ordered(items, res)
                finally:
                    with self.lock:
                        self._ordered_busy = False
                        self._in_flight_revisions = 0
                        self.lock.notify_all()
        except BaseException as exc:
            log.exception("Elasticsearch topology writer stopped")
            self._on_failure(RuntimeError(f"topology writer stopped: {one_line(exc)}"))
            raise

    def _take_ordered(self) -> tuple[list[Revision | CloseLive], list[tuple[Key, _docs.Op]]]:
        """The next ordered batch (lock held): every resource change, and revisions up to a
        batch; a close_live marker goes alone (after what was queued before it is written,
        before what was queued after it)."""
        self._ordered_busy = True
        res = list(self._res_ops)
        self._res_ops.clear()
        items: list[Revision | CloseLive] = []
        queue = self._revisions
        if queue and isinstance(queue[0], CloseLive):
            items.append(queue.popleft())
        else:
            while queue and len(items) < self.batch_revisions:
                if isinstance(queue[0], CloseLive):
                    break
                items.append(queue.popleft())
        self._revisions_since = time.monotonic()
        self._in_flight_revisions = len(items) + len(res)
        return items, res

    def _revisions_due(self) -> bool:
        return bool(self._revisions) and (
            len(self._revisions) >= self.batch_revisions
            or self._flushing > 0
            or self._closing
            or time.monotonic() - self._revisions_since >= self.bulk_maxdelay
        )

    def _revisions_wait(self) -> float:
        if self.ready and self._revisions:
            return max(0.005, self._revisions_since + self.bulk_maxdelay - time.monotonic())
        return 1.0

    def _write_ordered(
        self, items: list[Revision | CloseLive], res: list[tuple[Key, _docs.Op]]
    ) -> None:
        n = sum(isinstance(i, Revision) for i in items)
        done = False
        try:
            attempt = 0
            while True:  # building reads the index (closures, close_live): retried too
                try:
                    built, bad = revision_ops(self._client, self._layout, items)
                    ops = [op for _, op in res] + built
                    break
                except self._bulk.errors as exc:
                    self._on_failure(exc)
                    if self._bulk.abandoned:
                        return
                    self._bulk.sleep(attempt)
                    attempt += 1
            if bad:
                self._bulk.reject(bad, "topology element not JSON")
            # resources are refreshed at once: the next poll must see them
            done = self._bulk.deliver(None, ops, refresh=bool(res)) if ops else True
        finally:
            self._resources_written([key for key, _ in res])
            with self.lock:
                if done:
                    self.written += n + len(res)
                else:
                    self.dropped_revisions += n


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    exc = future.exception() if not future.cancelled() else None
    if exc is not None:  # a bug: the batch is counted as dropped; say why
        log.error("Elasticsearch flow request failed: %s", one_line(exc), exc_info=exc)
