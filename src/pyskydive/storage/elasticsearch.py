"""The Elasticsearch storage backend: topology history, flows and API resources in a cluster.

Theory of operation
-------------------
This module composes the parts and translates Elasticsearch's errors into one-line
:class:`~pyskydive.errors.StorageError` (the other modules let the client's errors through)::

    elasticsearch_layout     aliases, templates, mapping, set-up checks, rollover
    elasticsearch_docs       documents and _bulk lines, answers sorted (no I/O)
    elasticsearch_writer     the queues and the writer threads
    elasticsearch_bulk       one _bulk request sent until written (retries)
    elasticsearch_topology   revisions to ops (closures, close_live)
    elasticsearch_read       queries
    elasticsearch_resources  the API resources cache and its merge of polls (no I/O)

Five aliases ``<prefix>flow``, ``metric``, ``topology_live``, ``topology_archive`` and
``resources`` over versioned indices, the first three rolling over.

Writes never block the caller, as in the embedded store: :meth:`write_flows` and
:meth:`record` append to bounded in-memory queues (``queue_size`` flows,
``revision_queue_size`` revisions; beyond that the *oldest* are dropped and counted in
``status().dropped``); ``put``/``delete`` of API resources change an in-memory cache at once
and queue the write. Threads do the rest:

* ``es-writer`` takes flows by batches of ``bulk_max_docs`` documents (a flow makes two: its
  latest state and a history row), at the latest ``bulk_maxdelay`` seconds after the first
  one was queued, serialises them with orjson into one NDJSON body and hands it to one of
  ``concurrency`` sender threads, so that the next body is built while Elasticsearch works
  on the previous ones. Flows can go out of order: their documents are versioned by
  ``Last``.
* ``es-ordered`` writes revisions and resource changes in the order they were queued, one
  request at a time (a closure must land after the revision it closes; an empty element on a
  closure takes the stored one, read back from the live index).
* ``es-resources`` polls the resources index every ``resource_poll_interval`` seconds; a
  change made by another analyzer on the same cluster and prefix (and not one of ours still
  being written) updates the cache and calls :attr:`on_resources_changed`.

A request is retried, with a backoff from ``retry_interval`` up to 30 s, until it is
written: when the cluster is unreachable or answers 429/5xx its items stay in memory (they
count in ``status().queued``; ``connected`` is False and ``last_error`` says why), and new
items queue behind it within the bounds. In a ``_bulk`` answer, the items refused with 429
or 5xx are sent again alone; those refused for their content (a mapping conflict) are
counted in ``status().extra["rejected"]`` and logged in one line, and the rest of the batch
is kept (a topology revision whose element the mapping refuses is stored unindexed instead).
Every write goes with ``require_alias``: if our alias were deleted, nothing would be written
to an index Elasticsearch creates with a guessed mapping; the layout is set up again.

Set-up (templates, aliases, first indices) happens at construction if the cluster answers,
otherwise on first contact (a warning is logged; the store buffers meanwhile). An index or
template of our prefix with an incompatible mapping, or not ours, is a StorageError naming
it, raised by the constructor, or reported in ``status()`` (and nothing written) when it is
found later. Retention: an alias that rolls over is checked every ``rollover_interval``
seconds (``index_entries_limit`` documents, ``index_age_limit`` seconds), and rolled-over
indices beyond ``indices_to_keep`` are deleted; :meth:`rollover` does it now.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from pyskydive.errors import StorageError
from pyskydive.storage import elasticsearch_docs as _docs
from pyskydive.storage import elasticsearch_read as _read
from pyskydive.storage.base import FlowQuery, Revision, StorageStatus
from pyskydive.storage.elasticsearch_bulk import BulkSender, one_line, serializers
from pyskydive.storage.elasticsearch_layout import Layout, ensure_layout, rollover
from pyskydive.storage.elasticsearch_resources import ResourceCache
from pyskydive.storage.elasticsearch_topology import CloseLive
from pyskydive.storage.elasticsearch_writer import Writer

__all__ = ["ElasticsearchStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Graph = tuple[list[dict[str, Any]], list[dict[str, Any]]]


class ElasticsearchStore:
    """Topology history, flows and API resources in Elasticsearch (see the module
    docstring). Use as a context manager, or call :meth:`close`.

    ``hosts``: cluster URLs; ``index_prefix``: of every alias, index and template;
    ``username``/``password``: basic auth; ``ca_certs``, ``ssl_insecure``: TLS checks;
    ``index_entries_limit``/``index_age_limit`` (documents, seconds; 0: none): when an index
    rolls over, checked every ``rollover_interval`` s; ``indices_to_keep``: rolled-over
    indices kept per alias (0: all); ``bulk_maxdelay``: seconds a write may wait to be
    batched; ``bulk_max_docs``: documents per ``_bulk``; ``concurrency``: flow requests in
    flight; ``total_fields_limit``: ``index.mapping.total_fields.limit``; ``queue_size``,
    ``revision_queue_size``: bounds of the write queues; ``retry_interval``: first backoff;
    ``request_timeout``: seconds; ``resource_poll_interval``: seconds between polls of the
    resources index (0: none, for a store that keeps flows only).
    """

    def __init__(
        self,
        hosts: Sequence[str] | str = ("http://127.0.0.1:9200",),
        *,
        index_prefix: str = "skydive_",
        username: str | None = None,
        password: str | None = None,
        ca_certs: str | None = None,
        ssl_insecure: bool = False,
        index_entries_limit: int = 0,
        index_age_limit: int = 0,
        indices_to_keep: int = 0,
        bulk_maxdelay: float = 1.0,
        bulk_max_docs: int = 10_000,
        total_fields_limit: int = 1000,
        queue_size: int = 500_000,
        revision_queue_size: int = 500_000,
        retry_interval: float = 1.0,
        request_timeout: float = 60.0,
        resource_poll_interval: float = 2.0,
        rollover_interval: float = 60.0,
        concurrency: int = 2,
    ) -> None:
        if queue_size < 1 or revision_queue_size < 1 or bulk_max_docs < 2 or concurrency < 1:
            raise ValueError("queue sizes, bulk_max_docs and concurrency must be positive")
        try:  # here, not at the top: the embedded default must work without the client
            import elasticsearch
        except ImportError as exc:
            raise StorageError(
                "the elasticsearch storage driver needs the Python package elasticsearch==9.5.1"
            ) from exc

        self.hosts = [hosts] if isinstance(hosts, str) else list(hosts)
        # what logs, errors and the status show: no credentials from a URL's user:password@
        self._shown = ", ".join(re.sub(r"//[^/@]*@", "//", h) for h in self.hosts)
        self.layout = Layout(index_prefix)
        self.index_entries_limit = index_entries_limit
        self.index_age_limit = index_age_limit
        self.indices_to_keep = indices_to_keep
        self.total_fields_limit = total_fields_limit
        self.resource_poll_interval = resource_poll_interval
        self.rollover_interval = rollover_interval
        #: Called (from the poll thread) when another analyzer changed the resources.
        self.on_resources_changed: Callable[[], None] | None = None
        self._origin = uuid.uuid4().hex

        options: dict[str, Any] = {
            "request_timeout": request_timeout,
            "max_retries": 0,  # BulkSender retries, with its backoff and accounting
            "retry_on_timeout": False,
            "serializers": serializers(),
        }
        if username is not None:
            options["basic_auth"] = (username, password or "")
        if any(h.startswith("https:") for h in self.hosts):
            options["verify_certs"] = not ssl_insecure
            options["ssl_show_warn"] = not ssl_insecure
            if ca_certs:
                options["ca_certs"] = ca_certs
        try:
            self._client = elasticsearch.Elasticsearch(self.hosts, **options)
        except (ValueError, TypeError) as exc:
            raise StorageError(f"Elasticsearch {self._shown}: {one_line(exc)}") from exc
        self._bulk = BulkSender(
            self._client,
            retry_interval,
            on_failure=self._failed,
            on_success=self._connected,
            on_rejected=self._count_rejected,
            on_missing_alias=self._setup_again,
        )
        self._errors = self._bulk.errors

        self._lock = threading.Lock()  # guards the connection state and counters below
        self._setup_lock = threading.Lock()
        self._ready = False
        self._fatal = ""  # why the layout cannot be written to, found after start
        self._connected_now = False
        self._last_error = ""
        self._rejected = 0
        self._closed = False
        self._next_rollover = time.monotonic() + rollover_interval
        self._resources = ResourceCache()

        probe = self._client.options(request_timeout=min(5.0, request_timeout))
        try:
            self._setup(probe)
            if resource_poll_interval > 0:
                self._poll_resources(probe, notify=False)
        except StorageError:
            self._client.close()
            raise
        except self._errors as exc:
            log.warning(
                "Elasticsearch %s unreachable at start (%s): buffering, will retry",
                self._shown,
                one_line(exc),
            )
            self._last_error = one_line(exc)

        self._writer = Writer(
            self._client,
            self.layout,
            self._bulk,
            ensure_ready=self._ensure_ready,
            before_flows=self._maybe_rollover,
            resources_written=self._resources.written,
            on_failure=self._failed,
            queue_size=queue_size,
            revision_queue_size=revision_queue_size,
            batch_flows=bulk_max_docs // 2,  # a flow update makes two documents
            batch_revisions=bulk_max_docs // 2,  # a closure makes two ops
            bulk_maxdelay=bulk_maxdelay,
            concurrency=concurrency,
        )
        self._writer.ready = self._ready
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        if resource_poll_interval > 0:  # 0: this store does not serve the API resources
            self._poller = threading.Thread(target=self._run_poll, name="es-resources", daemon=True)
            self._poller.start()

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> ElasticsearchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is queued (for up to ``timeout`` seconds), then close. False if it
        could not be written in time: what was left is counted as dropped."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        deadline = time.monotonic() + timeout
        drained = self._writer.close(timeout)
        if not drained:
            log.error("Elasticsearch store: close timed out, queued writes dropped")
        self._stop.set()
        if self._poller is not None:
            self._poller.join(5.0)
        if drained and self._ready:  # searchable by whoever opens the indices next
            self._refresh(min(5.0, max(1.0, deadline - time.monotonic())), retry=False)
        self._client.close()
        return drained

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is written and searchable; False on
        timeout (the cluster is down or slow)."""
        deadline = time.monotonic() + timeout
        if not self._writer.drain(timeout):
            return False
        return self._refresh(max(1.0, deadline - time.monotonic()))

    def _refresh(self, timeout: float, *, retry: bool = True) -> bool:
        """Make what was written searchable (retried while shards recover)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                resp = self._client.options(request_timeout=timeout).indices.refresh(
                    index=",".join(self.layout.aliases()), ignore_unavailable=True
                )
                if not resp["_shards"].get("failed"):
                    return True
            except self._errors as exc:
                log.debug("refresh failed: %s", one_line(exc))
            if not retry or time.monotonic() + 0.2 > deadline:
                return False
            time.sleep(0.2)

    def status(self) -> StorageStatus:
        counts = self._writer.counts()
        with self._lock:
            return StorageStatus(
                backend="elasticsearch",
                connected=self._connected_now and not self._fatal,
                queued=counts["queued"],
                dropped=counts["dropped_flows"] + counts["dropped_revisions"],
                written=counts["written"],
                last_error=self._fatal or self._last_error,
                extra={
                    "hosts": self._shown.split(", "),
                    "indices": self.layout.aliases(),
                    "dropped_flows": counts["dropped_flows"],
                    "dropped_revisions": counts["dropped_revisions"],
                    "rejected": self._rejected,
                    "requests_in_flight": counts["requests_in_flight"],
                },
            )

    # -- set-up, connection state, errors -------------------------------------------------

    def _setup(self, client: Any = None) -> None:
        """Create/check the layout once (StorageError if incompatible)."""
        with self._setup_lock:
            if self._ready:
                return
            ensure_layout(client or self._client, self.layout, self.total_fields_limit)
            self._ready = True
            with self._lock:
                self._connected_now = True
                self._last_error = ""
        writer: Writer | None = getattr(self, "_writer", None)
        if writer is not None:
            writer.ready = True
            writer.wake()

    def _ensure_ready(self) -> bool:
        """Set up on first contact; False (status updated) while it cannot be done."""
        if self._ready:
            return True
        if self._fatal:
            return False
        try:
            self._setup()
        except StorageError as exc:
            self._fatal = str(exc)
            log.error("Elasticsearch store stopped writing: %s", exc)
            return False
        except self._errors as exc:
            self._failed(exc)
            return False
        log.info("Elasticsearch %s: indices ready (prefix %s)", self._shown, self.layout.prefix)
        return True

    def _setup_again(self) -> bool:
        """An alias of ours disappeared: check and create the layout again."""
        with self._setup_lock:
            self._ready = False
        return self._ensure_ready()

    def _failed(self, exc: BaseException) -> None:
        message = f"Elasticsearch {self._shown}: {one_line(exc)}"
        with self._lock:
            if self._connected_now or message != self._last_error:
                log.warning("%s (will retry)", message)
            self._connected_now = False
            self._last_error = message

    def _connected(self) -> None:
        with self._lock:
            if not self._connected_now:
                log.info("Elasticsearch %s: writing again", self._shown)
                self._connected_now = True

    def _count_rejected(self, n: int, reason: str) -> None:
        log.error("Elasticsearch refused %d items: %s", n, reason)
        with self._lock:
            self._rejected += n
            self._last_error = f"refused {n} items: {reason}"

    def _reads(self, query: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StorageError("Elasticsearch store: closed")
        if not self._ensure_ready():
            raise StorageError(self._fatal or self._last_error or "Elasticsearch: not ready")
        try:
            return query(self._client, self.layout, *args)
        except self._errors as exc:
            raise StorageError(f"Elasticsearch {self._shown}: {one_line(exc)}") from exc

    # -- writing (never blocks) -----------------------------------------------------------

    def write_flows(self, flows: Iterable[Mapping[str, Any]]) -> None:
        self._writer.write_flows(flows)

    def record(self, revisions: Iterable[Revision]) -> None:
        self._writer.record(revisions)

    def close_live(self, t: int) -> None:
        """End at ``t`` every revision current when this is applied (in order)."""
        self._writer.record([CloseLive(t)])

    def rollover(self) -> list[str]:
        """Roll over now the aliases whose index reached a limit, and apply
        ``indices_to_keep``; returns the indices created (blocking)."""
        if not self._ensure_ready():
            raise StorageError(self._fatal or self._last_error)
        try:
            return rollover(
                self._client,
                self.layout,
                max_docs=self.index_entries_limit,
                max_age_s=self.index_age_limit,
                indices_to_keep=self.indices_to_keep,
            )
        except self._errors as exc:
            raise StorageError(
                f"Elasticsearch rollover of {self.layout.prefix}*: {one_line(exc)}"
            ) from exc

    def _maybe_rollover(self) -> None:
        """Before a flow batch: every ``rollover_interval`` seconds, if a limit is set."""
        if not (self.index_entries_limit or self.index_age_limit or self.indices_to_keep):
            return
        if time.monotonic() < self._next_rollover:
            return
        self._next_rollover = time.monotonic() + self.rollover_interval
        try:
            self.rollover()
        except StorageError as exc:
            log.warning("%s", exc)

    # -- reading (blocking; from any thread) --------------------------------------------

    def graph_at(self, t: int) -> Graph:
        return self._reads(_read.graph_at, t)

    def graph_during(self, start: int, end: int) -> Graph:
        return self._reads(_read.graph_during, start, end)

    def live(self) -> Graph:
        return self._reads(_read.live)

    def revisions(
        self, kind: Literal["node", "edge"], ids: Iterable[str], start: int, end: int
    ) -> dict[str, list[dict[str, Any]]]:
        return self._reads(_read.revisions, kind, list(ids), start, end)

    def query_flows(self, query: FlowQuery) -> list[dict[str, Any]]:
        q = query
        return self._reads(_read.query_flows, q.start, q.end, q.node_tids, q.tracking_ids, q.limit)

    def metrics(
        self, uuids: Iterable[str], start: int, end: int
    ) -> dict[str, list[dict[str, Any]]]:
        return self._reads(_read.query_metrics, list(uuids), start, end)

    # -- API resources: an in-memory cache, written through, polled ------------------------

    def list(self, kind: str) -> dict[str, dict[str, Any]]:
        return self._resources.list(kind)

    def get(self, kind: str, resource_id: str) -> dict[str, Any] | None:
        return self._resources.get(kind, resource_id)

    def put(self, kind: str, resource_id: str, resource: dict[str, Any]) -> None:
        index = self.layout.alias("resources")
        now = int(time.time() * 1000)
        try:
            op = _docs.resource_put_op(index, kind, resource_id, resource, now, self._origin)
        except TypeError as exc:  # orjson.JSONEncodeError
            raise StorageError(f"resource {kind}/{resource_id}: not JSON ({exc})") from exc
        self._resources.put(kind, resource_id, resource)
        self._queue_resource((kind, resource_id), op)

    def delete(self, kind: str, resource_id: str) -> bool:
        if not self._resources.delete(kind, resource_id):
            return False
        op = _docs.resource_delete_op(self.layout.alias("resources"), kind, resource_id)
        self._queue_resource((kind, resource_id), op)
        return True

    def _queue_resource(self, key: tuple[str, str], op: _docs.Op) -> None:
        try:
            self._writer.resource(key, op)
        except StorageError:
            self._resources.written([key])
            raise

    def _run_poll(self) -> None:
        while not self._stop.wait(self.resource_poll_interval):
            if not self._ensure_ready():
                continue
            try:
                self._poll_resources(self._client, notify=True)
            except self._errors as exc:
                log.debug("resource poll failed: %s", one_line(exc))
            except Exception:
                log.exception("resource poll failed")

    def _poll_resources(self, client: Any, *, notify: bool) -> None:
        """Take in the changes another analyzer made to the resources index."""
        token = self._resources.start_poll()
        changed = self._resources.merge(token, _read.resources(client, self.layout))
        callback = self.on_resources_changed
        if changed and notify and callback is not None:
            try:
                callback()
            except Exception:
                log.exception("on_resources_changed failed")
