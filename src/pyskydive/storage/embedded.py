"""The embedded storage backend: topology history, flows and API resources in one directory.

Theory of operation
-------------------
The directory holds::

    FORMAT           "pyskydive-embedded-store 1": what this is, which layout version
    store.duckdb     DuckDB database: flows, metrics (embedded_flows), revisions
                     (embedded_topology), pyskydive_meta
    store.duckdb.wal DuckDB's write-ahead log, while open
    resources.json   API resources (analyzer.store.ResourceStore: small, atomic JSON)

DuckDB (embedded, columnar, compressed) because the figures that matter are scans and
aggregations over millions of flows and bulk appends; bench/storage.py measures them.

Writes never block the caller: :meth:`EmbeddedStore.write_flows` and :meth:`record` append
to bounded in-memory queues (one for flows, one for revisions, ``queue_size`` items each);
when a queue is full the *oldest* items are dropped and counted (``status().dropped``). One
writer thread drains them in batches, one DuckDB transaction per batch (at most ``batch_size``
flows: 250,000 by default, because DuckDB writes an append of at least one row group, 122,880
rows, straight to the database file, where a smaller one goes through its WAL too: in our
measurements that doubled the cost of a commit). A batch is staged as NDJSON in an
anonymous in-memory file (Linux ``memfd``; ``staging=`` names another file) that DuckDB
reads (see embedded_flows). If a batch fails for an I/O reason it goes back to the head of
its queue and is retried after a pause (``status().connected`` is False meanwhile); if
DuckDB rejects its content (a value of the wrong type), the batch is split in halves until
the bad items are alone: only those are lost, counted in ``status().extra["rejected"]`` and
logged. Reads run on their own DuckDB cursor in the calling thread and see what the writer
has committed. One process opens a directory at a time (DuckDB locks the database file
against other processes; a second open in this process is refused too).

Retention (both optional): ``max_age_ms`` deletes flows whose ``Last``, history rows whose
``Last`` and topology revisions whose ``valid_to`` is older than that (current revisions are
always kept); ``max_flows`` keeps only that many flows (the most recent by ``Last``) and
their history. The writer applies it every ``retention_interval`` seconds, and when asked
with :meth:`EmbeddedStore.apply_retention`.

A directory that is neither empty, nor ours (no ``FORMAT`` file), nor of this layout
version, or a database DuckDB cannot open, is a :class:`~pyskydive.errors.StorageError`
naming the path, at open: nothing is written to it (embedded_format).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from pyskydive.analyzer.store import ResourceStore
from pyskydive.errors import StorageError
from pyskydive.storage import embedded_flows as _flows
from pyskydive.storage import embedded_topology as _topo
from pyskydive.storage.base import FlowQuery, Revision, StorageStatus
from pyskydive.storage.embedded_format import (
    DB_FILE,
    FORMAT_FILE,
    FORMAT_MAGIC,
    FORMAT_VERSION,
    check_dir,
    one_line,
    open_database,
)

__all__ = ["DB_FILE", "FORMAT_FILE", "FORMAT_MAGIC", "FORMAT_VERSION", "EmbeddedStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")
# A batch that fails for these is retried later; for the others, its content is bad.
_RETRIED = (duckdb.IOException, duckdb.TransactionException, OSError)
_REJECTED = (duckdb.Error, KeyError, TypeError, ValueError)

# Directories open in this process: DuckDB locks the database against other processes, but
# not against a second connection from this one.
_open_paths: set[Path] = set()
_open_paths_lock = threading.Lock()
Graph = tuple[list[dict[str, Any]], list[dict[str, Any]]]


class EmbeddedStore:
    """Topology history, flows and API resources in the directory ``path`` (see the module
    docstring). Use as a context manager, or call :meth:`close`.

    ``queue_size``: bound of each write queue (items); ``batch_size``: flows per transaction;
    ``max_age_ms``/``max_flows``: retention (None: keep everything), applied every
    ``retention_interval`` seconds; ``retry_interval``: pause after an I/O error;
    ``staging``: the file batches are staged in (default: an in-memory file).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        queue_size: int = 500_000,
        batch_size: int = 250_000,
        max_age_ms: int | None = None,
        max_flows: int | None = None,
        retention_interval: float = 60.0,
        retry_interval: float = 1.0,
        staging: str | os.PathLike[str] | None = None,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        self.path = Path(path)
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.max_age_ms = max_age_ms
        self.max_flows = max_flows
        self.retention_interval = retention_interval
        self.retry_interval = retry_interval
        check_dir(self.path)
        self._key = self.path.resolve()
        with _open_paths_lock:
            if self._key in _open_paths:
                raise StorageError(f"{self.path}: already open in this process")
            _open_paths.add(self._key)
        try:
            self._resources = ResourceStore(self.path)
            self._db_path = self.path / DB_FILE
            self._con = open_database(self._db_path)
        except BaseException:
            with _open_paths_lock:
                _open_paths.discard(self._key)
            raise
        # Readers take their cursors from their own root connection, under a lock, never
        # from the writer's: a DuckDB connection object is not thread-safe.
        self._read_root = self._con.cursor()
        self._read_lock = threading.Lock()
        # The batches' NDJSON goes to an anonymous in-memory file (Linux memfd: no disk
        # writeback, freed with the process); DuckDB reads it through /proc/self/fd.
        self._memfd: int | None = None
        if staging is not None:
            self._staging = Path(staging)
        elif hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            self._memfd = os.memfd_create("pyskydive-staging", os.MFD_CLOEXEC)
            self._staging = Path(f"/proc/self/fd/{self._memfd}")
        else:
            self._staging = self.path / ".staging.ndjson"

        self._lock = threading.Condition()
        self._flows: collections.deque[Mapping[str, Any]] = collections.deque()
        self._revisions: collections.deque[Revision] = collections.deque()
        self._in_flight = 0
        self._busy = False  # the writer is working on what it took
        self._retention_now: int | None = None
        self._closing = False
        self._closed = False
        self._next_retention = time.monotonic() + retention_interval
        self._status = StorageStatus(backend="embedded")
        self._dropped_flows = 0
        self._dropped_revisions = 0
        self._rejected = 0
        self._writer = threading.Thread(target=self._run, name="embedded-store", daemon=True)
        self._writer.start()

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is queued (for up to ``timeout`` seconds), then close. False if the
        queue could not be drained in time: what was left is counted as dropped."""
        with self._lock:
            if self._closing:
                return True
            self._closing = True
            self._lock.notify_all()
        self._writer.join(timeout)
        drained = not self._writer.is_alive()
        if not drained:
            with self._lock:  # the writer drops the rest after its current batch, and closes
                self._closed = True
                self._lock.notify_all()
            log.error("embedded store %s: close timed out, queued writes dropped", self.path)
        return drained

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is written (for tests); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._flows or self._revisions or self._busy or self._retention_now is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._writer.is_alive():
                    return False
                self._lock.wait(min(left, 0.1))
        return True

    def status(self) -> StorageStatus:
        with self._lock:
            s = self._status
            return StorageStatus(
                backend=s.backend,
                connected=s.connected,
                queued=len(self._flows) + len(self._revisions) + self._in_flight,
                dropped=self._dropped_flows + self._dropped_revisions,
                written=s.written,
                last_error=s.last_error,
                extra={
                    "path": str(self.path),
                    "dropped_flows": self._dropped_flows,
                    "dropped_revisions": self._dropped_revisions,
                    "rejected": self._rejected,
                },
            )

    # -- writing (never blocks) -----------------------------------------------------------

    def _enqueue(self, queue: collections.deque[T], items: Iterable[T]) -> None:
        with self._lock:
            if self._closing:
                raise StorageError(f"{self.path}: the store is closed")
            queue.extend(items)
            self._trim()
            self._lock.notify_all()

    def write_flows(self, flows: Iterable[Mapping[str, Any]]) -> None:
        self._enqueue(self._flows, flows)

    def record(self, revisions: Iterable[Revision]) -> None:
        self._enqueue(self._revisions, revisions)

    def apply_retention(self, now: int | None = None) -> None:
        """Ask the writer to apply the retention options as of ``now`` (ms; default: the
        clock) as soon as it is free; :meth:`flush` waits for it."""
        with self._lock:
            self._retention_now = int(time.time() * 1000) if now is None else now
            self._lock.notify_all()

    # -- the writer thread -----------------------------------------------------------------

    def _take(self) -> tuple[list[Mapping[str, Any]], list[Revision], int | None]:
        """Wait for work; take one batch of each queue (under the lock)."""
        with self._lock:
            while True:
                if (self.max_age_ms or self.max_flows) and time.monotonic() >= self._next_retention:
                    self._next_retention = time.monotonic() + self.retention_interval
                    self._retention_now = int(time.time() * 1000)
                if self._flows or self._revisions or self._retention_now is not None:
                    break
                if self._closing:
                    return [], [], None
                self._lock.wait(max(0.0, min(1.0, self._next_retention - time.monotonic())))
            if len(self._flows) <= self.batch_size:  # at C speed: callers wait on this lock
                flows = list(self._flows)
                self._flows.clear()
            else:
                flows = [self._flows.popleft() for _ in range(self.batch_size)]
            revisions = list(self._revisions)
            self._revisions.clear()
            retention, self._retention_now = self._retention_now, None
            self._in_flight = len(flows) + len(revisions)
            self._busy = True
            return flows, revisions, retention

    def _run(self) -> None:
        try:
            while True:
                flows, revisions, retention = self._take()
                if not (flows or revisions or retention is not None):
                    break  # closing and drained
                with self._lock:
                    if self._closed:
                        self._dropped_flows += len(self._flows) + len(flows)
                        self._dropped_revisions += len(self._revisions) + len(revisions)
                        self._flows.clear()
                        self._revisions.clear()
                        break
                bad = [f for f in flows if not isinstance(f.get("UUID"), str)]
                if bad:  # cheaper than finding them by bisection
                    flows = [f for f in flows if isinstance(f.get("UUID"), str)]
                    self._reject(ValueError("flow without a UUID string"), bad, [])
                self._write(flows, revisions, retention)
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()
        except BaseException as exc:  # a bug: say so in the status, then let the thread die
            log.exception("embedded store writer stopped")
            with self._lock:
                self._status.connected = False
                self._status.last_error = f"writer stopped: {one_line(exc)}"
            raise
        finally:
            with self._lock:
                self._in_flight = 0
                self._busy = False
                self._lock.notify_all()
            with self._read_lock:
                self._read_root.close()
            self._con.close()
            if self._memfd is not None:
                os.close(self._memfd)
            with _open_paths_lock:
                _open_paths.discard(self._key)

    def _write(
        self, flows: list[Mapping[str, Any]], revisions: list[Revision], retention: int | None
    ) -> None:
        try:
            self._commit(flows, revisions, retention)
        except _RETRIED as exc:
            self._failed(exc, flows, revisions)
            return
        except _REJECTED as exc:
            self._rollback()
            if flows and revisions:  # find the bad items: bisect
                self._write(flows, [], None)
                self._write([], revisions, retention)
            elif len(flows) > 1:
                self._write(flows[: len(flows) // 2], [], retention)
                self._write(flows[len(flows) // 2 :], [], None)
            elif len(revisions) > 1:
                self._write([], revisions[: len(revisions) // 2], retention)
                self._write([], revisions[len(revisions) // 2 :], None)
            else:
                self._reject(exc, flows, revisions)
            return
        with self._lock:
            self._status.written += len(flows) + len(revisions)
            self._status.connected = True
            self._in_flight = max(0, self._in_flight - len(flows) - len(revisions))
            self._lock.notify_all()

    def _commit(
        self, flows: list[Mapping[str, Any]], revisions: list[Revision], retention: int | None
    ) -> None:
        con = self._con
        con.execute("BEGIN TRANSACTION")
        _flows.write_flow_batch(con, flows, self._staging)
        _topo.write_revision_batch(con, revisions, self._staging)
        if retention is not None:
            self._retain(retention)
        con.execute("COMMIT")

    def _rollback(self) -> None:
        with contextlib.suppress(duckdb.Error):  # none left if the error aborted it
            self._con.execute("ROLLBACK")

    def _reject(
        self, exc: BaseException, flows: list[Mapping[str, Any]], revisions: list[Revision]
    ) -> None:
        message = f"{self._db_path}: {one_line(exc)}"
        log.error(
            "embedded store rejected %d flows, %d revisions: %s",
            len(flows),
            len(revisions),
            message,
        )
        with self._lock:
            self._status.last_error = message
            self._rejected += len(flows) + len(revisions)
            self._in_flight = max(0, self._in_flight - len(flows) - len(revisions))
            self._lock.notify_all()

    def _retain(self, now: int) -> None:
        cutoff = None if self.max_age_ms is None else now - self.max_age_ms
        _flows.delete_old_flows(self._con, cutoff=cutoff, max_flows=self.max_flows)
        if cutoff is not None:
            _topo.delete_old_revisions(self._con, cutoff)

    def _failed(
        self, exc: BaseException, flows: list[Mapping[str, Any]], revisions: list[Revision]
    ) -> None:
        """An I/O error: put the batch back at the head of the queues and pause."""
        self._rollback()
        message = f"{self._db_path}: {one_line(exc)}"
        log.warning("embedded store write failed, will retry: %s", message)
        with self._lock:
            self._status.last_error = message
            self._status.connected = False
            self._in_flight = 0
            self._flows.extendleft(reversed(flows))
            self._revisions.extendleft(reversed(revisions))
            self._trim()
            self._lock.notify_all()
            if not self._closed:
                self._lock.wait(self.retry_interval)

    def _trim(self) -> None:
        """Drop the oldest items of a queue over its bound, counting them (lock held)."""
        over = len(self._flows) - self.queue_size
        for _ in range(max(0, over)):
            self._flows.popleft()
        self._dropped_flows += max(0, over)
        over = len(self._revisions) - self.queue_size
        for _ in range(max(0, over)):
            self._revisions.popleft()
        self._dropped_revisions += max(0, over)

    # -- reading (blocking; from any thread) --------------------------------------------

    def _read(self, query: Any, *args: Any) -> Any:
        if self._closing:
            raise StorageError(f"{self.path}: the store is closed")
        try:
            with self._read_lock:
                cur = self._read_root.cursor()
            with cur:
                return query(cur, *args)
        except duckdb.Error as exc:
            raise StorageError(f"{self._db_path}: {one_line(exc)}") from exc

    def graph_at(self, t: int) -> Graph:
        result: Graph = self._read(_topo.graph_at, t)
        return result

    def graph_during(self, start: int, end: int) -> Graph:
        result: Graph = self._read(_topo.graph_during, start, end)
        return result

    def live(self) -> Graph:
        result: Graph = self._read(_topo.live)
        return result

    def query_flows(self, query: FlowQuery) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._read(
            _flows.query_flows,
            query.start,
            query.end,
            query.node_tids,
            query.tracking_ids,
            query.limit,
        )
        return result

    def metrics(
        self, uuids: Iterable[str], start: int, end: int
    ) -> dict[str, list[dict[str, Any]]]:
        result: dict[str, list[dict[str, Any]]] = self._read(
            _flows.query_metrics, list(uuids), start, end
        )
        return result

    def sql(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read-only SQL query on the store (aggregations such as top talkers)."""
        result: list[tuple[Any, ...]] = self._read(
            lambda cur: cur.execute(query, params or []).fetchall()
        )
        return result

    # -- API resources (synchronous, as analyzer.store.ResourceStore) ----------------------

    def list(self, kind: str) -> dict[str, dict[str, Any]]:
        return self._resources.list(kind)

    def get(self, kind: str, resource_id: str) -> dict[str, Any] | None:
        return self._resources.get(kind, resource_id)

    def put(self, kind: str, resource_id: str, resource: dict[str, Any]) -> None:
        self._resources.put(kind, resource_id, resource)

    def delete(self, kind: str, resource_id: str) -> bool:
        return self._resources.delete(kind, resource_id)
