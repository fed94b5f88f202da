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
to bounded in-memory queues (``queue_size`` flows, ``revision_queue_size`` revisions); when
a queue is full the *oldest* items are dropped and counted (``status().dropped``). Flows go
through two threads, a pipeline: the *stager* takes a batch off the queue (at most
``batch_size`` flows, and what is queued while it works joins the batch) and stages it --
as Arrow columns built in C when the extension is built (``compiled``), else as NDJSON
(``orjson``) -- under the GIL, in slices of a few milliseconds, while the *writer* has DuckDB
write the batch before it (DuckDB releases the GIL: the two overlap on two cores). With
nothing to stage, the stager also drops the batches written (freeing 250,000 flows' dicts
takes ~0.2 s of the GIL, which the writer would otherwise pay between two batches). Batches
of 250,000 by default, because DuckDB writes an append of at least one row group, 122,880
rows, straight to the database file, where a smaller one goes through its WAL too: in our
measurements that doubled the cost of a commit. The writer has DuckDB scan the Arrow batch,
or writes the NDJSON to an anonymous in-memory file (Linux ``memfd``; ``staging=`` names
another file) that DuckDB reads (see embedded_flows), and the revisions queued, one DuckDB
transaction per batch. At most two flow batches are out of the queue (the one written, the
one staged). If a batch
fails for an I/O reason it goes back to the head of the queue (the staged one behind it,
updates of a flow keep their order) and is retried after a pause (``status().connected`` is
False meanwhile); if DuckDB rejects its content (a value of the wrong type), the batch is
split in halves until the bad items are alone: only those are lost, counted in
``status().extra["rejected"]`` and logged. Reads run on their own DuckDB cursor in the
calling thread and see what the writer has committed. One process opens a directory at a
time (DuckDB locks the database file against other processes; a second open in this process
is refused too).

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
import dataclasses
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

#: What the revision queue holds: revisions, and close_live marks in their place.
_RevisionItem = Revision | _topo.CloseLive

T = TypeVar("T")
# A batch that fails for these is retried later; for the others, its content is bad.
_RETRIED = (duckdb.IOException, duckdb.TransactionException, OSError)
_REJECTED = (duckdb.Error, KeyError, TypeError, ValueError)

# Directories open in this process: DuckDB locks the database against other processes, but
# not against a second connection from this one.
_open_paths: set[Path] = set()
_open_paths_lock = threading.Lock()
Graph = tuple[list[dict[str, Any]], list[dict[str, Any]]]
# Flow batches taken off the queue ahead of the one the writer is writing: one, staged
# meanwhile (so at most two batches are out of the queue).
_PIPELINE = 1
# Flows dropped at a time by the stager (a few ms of the GIL).
_FREE_SLICE = 2048


@dataclasses.dataclass(eq=False)  # compared by identity
class _Batch:
    """Flows taken off the queue; ``staged`` once ``ready``: their Arrow batch, or their
    NDJSON in parts (None: staging failed, the writer stages it again and bisects)."""

    flows: list[Mapping[str, Any]]
    staged: _flows.Staged = None
    ready: bool = False


class EmbeddedStore:
    """Topology history, flows and API resources in the directory ``path`` (see the module
    docstring). Use as a context manager, or call :meth:`close`.

    ``queue_size``: bound of the flow queue; ``revision_queue_size``: of the revision queue
    (default: ``queue_size``); ``batch_size``: flows per transaction;
    ``max_age_ms``/``max_flows``: retention (None: keep everything), applied every
    ``retention_interval`` seconds; ``retry_interval``: pause after an I/O error;
    ``staging``: the file batches are staged in (default: an in-memory file);
    ``compiled``: stage flow batches as Arrow columns in C (default: when the extension is
    built, unless ``PYSKYDIVE_PURE=1``), else as NDJSON.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        queue_size: int = 500_000,
        revision_queue_size: int | None = None,
        batch_size: int = 250_000,
        max_age_ms: int | None = None,
        max_flows: int | None = None,
        retention_interval: float = 60.0,
        retry_interval: float = 1.0,
        staging: str | os.PathLike[str] | None = None,
        compiled: bool | None = None,
    ) -> None:
        if revision_queue_size is None:
            revision_queue_size = queue_size
        if min(queue_size, revision_queue_size, batch_size) < 1:
            raise ValueError("queue_size, revision_queue_size and batch_size must be at least 1")
        self.path = Path(path)
        self.queue_size = queue_size
        self.revision_queue_size = revision_queue_size
        self.batch_size = batch_size
        self.max_age_ms = max_age_ms
        self.max_flows = max_flows
        self.retention_interval = retention_interval
        self.retry_interval = retry_interval
        if compiled is None:
            compiled = _flows.COMPILED and os.environ.get("PYSKYDIVE_PURE") != "1"
        elif compiled and not _flows.COMPILED:
            raise ValueError("the C extension pyskydive.storage._flowarrow is not built")
        self.compiled = compiled
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
        self._revisions: collections.deque[_RevisionItem] = collections.deque()
        # Flow batches taken off the queue, in order: the stager serializes them, the
        # writer takes the first one once it is staged (at most _PIPELINE of them).
        self._pending: collections.deque[_Batch] = collections.deque()
        self._written: list[_Batch] = []  # written: the stager drops them (_stage_run)
        self._in_flight = 0  # items taken from the queues, not yet written, rejected or put back
        self._busy = False  # the writer is working on what it took
        self._stop_stager = False
        self._retention_now: int | None = None
        self._closing = False
        self._closed = False
        self._next_retention = time.monotonic() + retention_interval
        self._status = StorageStatus(backend="embedded")
        self._dropped_flows = 0
        self._dropped_revisions = 0
        self._rejected = 0
        self._stager = threading.Thread(
            target=self._stage_run, name="embedded-store-stager", daemon=True
        )
        self._writer = threading.Thread(target=self._run, name="embedded-store", daemon=True)
        self._stager.start()
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
            while (
                self._flows
                or self._pending
                or self._revisions
                or self._busy
                or self._retention_now is not None
            ):
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
                    # how flow batches reach DuckDB: "arrow" (the C extension) or "ndjson"
                    "staging": "arrow" if self.compiled else "ndjson",
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

    def close_live(self, t: int) -> None:
        """End at ``t`` every revision current when this is written (after what was recorded
        before this call, before what is recorded after it)."""
        self._enqueue(self._revisions, [_topo.CloseLive(t)])

    def apply_retention(self, now: int | None = None) -> None:
        """Ask the writer to apply the retention options as of ``now`` (ms; default: the
        clock) as soon as it is free; :meth:`flush` waits for it."""
        with self._lock:
            self._retention_now = int(time.time() * 1000) if now is None else now
            self._lock.notify_all()

    # -- the stager thread: flow batches to NDJSON, while the writer is in DuckDB ----------

    def _stage_run(self) -> None:
        """Take flow batches off the queue in order and serialize them (Python work, under
        the GIL) while the writer thread waits on DuckDB (which releases it). With nothing
        to stage, drop the batches written: the flows' dicts are often freed with them
        (~1 µs a flow of the GIL), better here than on the writer's path; in slices, so that
        the writer gets the GIL back between them."""
        try:
            while True:
                written: list[_Batch] = []
                with self._lock:
                    while (
                        not self._stop_stager
                        and not self._written
                        and not (self._flows and len(self._pending) < _PIPELINE)
                    ):
                        self._lock.wait()
                    if self._stop_stager:
                        return
                    batch = None
                    if self._flows and len(self._pending) < _PIPELINE:
                        batch = _Batch([])
                        self._pending.append(batch)
                    else:
                        written, self._written = self._written, []
                if batch is not None:
                    self._stage(batch)
                    batch = None
                for old in written:
                    while old.flows:
                        del old.flows[-_FREE_SLICE:]
                del written
        except BaseException as exc:  # a bug: say so in the status, then let the thread die
            log.exception("embedded store stager stopped")
            with self._lock:
                self._status.connected = False
                self._status.last_error = f"stager stopped: {one_line(exc)}"
            raise

    def _stage(self, batch: _Batch) -> None:
        """Fill ``batch`` from the queue, staging each part as it is taken (in C as Arrow
        columns, or as NDJSON), until the queue is empty or the batch full (flows queued
        meanwhile join it: fewer, larger transactions); then mark it ready for the writer."""
        good: list[Mapping[str, Any]] = []
        bad: list[Mapping[str, Any]] = []
        arrow = _flows.new_arrow_batch() if self.compiled else None
        parts: list[bytes] | None = []
        while True:
            with self._lock:
                if batch not in self._pending:  # put back in the queue meanwhile (I/O error)
                    return
                room = self.batch_size - len(batch.flows)
                if not self._flows or room <= 0:
                    staged = arrow if arrow is not None else parts
                    batch.flows, batch.staged, batch.ready = good, staged, True
                    self._lock.notify_all()
                    break
                if len(self._flows) <= room:  # at C speed: callers wait on this lock
                    flows = list(self._flows)
                    self._flows.clear()
                else:
                    flows = [self._flows.popleft() for _ in range(room)]
                batch.flows.extend(flows)
                self._in_flight += len(flows)
            ok = [f for f in flows if isinstance(f.get("UUID"), str)]
            if len(ok) != len(flows):  # cheaper than finding them by bisection
                bad.extend(f for f in flows if not isinstance(f.get("UUID"), str))
            good.extend(ok)
            if arrow is not None:
                try:
                    if _flows.stage_arrow(arrow, ok):
                        continue
                except Exception:  # MemoryError...: the NDJSON path, which says what failed
                    log.debug("embedded store: Arrow staging failed", exc_info=True)
                # C declined a flow (a value it cannot convert exactly): the whole batch
                # goes as NDJSON, where DuckDB casts or rejects it as it always did
                arrow, ok = None, good
            if parts is not None and ok:
                try:
                    parts.append(_flows.stage_flows(ok))
                except Exception:  # not lost: the writer stages the batch again, and bisects
                    parts = None
        if bad:
            self._reject(ValueError("flow without a UUID string"), bad, [])

    # -- the writer thread -----------------------------------------------------------------

    def _take(self) -> tuple[_Batch | None, list[_RevisionItem], int | None, bool]:
        """Wait for work; take the next staged flow batch, the revisions queued and the
        retention to apply (under the lock). The last item is False when closed and drained."""
        with self._lock:
            while not self._closed:  # closed: _run drops what is left
                if (self.max_age_ms or self.max_flows) and time.monotonic() >= self._next_retention:
                    self._next_retention = time.monotonic() + self.retention_interval
                    self._retention_now = int(time.time() * 1000)
                ready = bool(self._pending) and self._pending[0].ready
                if ready or self._revisions or self._retention_now is not None:
                    break
                if self._closing and not (self._flows or self._pending):
                    return None, [], None, False
                self._lock.wait(max(0.0, min(1.0, self._next_retention - time.monotonic())))
            ready = not self._closed and bool(self._pending) and self._pending[0].ready
            batch = self._pending.popleft() if ready else None
            revisions = list(self._revisions)
            self._revisions.clear()
            retention, self._retention_now = self._retention_now, None
            self._in_flight += len(revisions)
            self._busy = True
            self._lock.notify_all()  # the stager may take the next batch
            return batch, revisions, retention, True

    def _run(self) -> None:
        try:
            while True:
                batch, revisions, retention, more = self._take()
                if not more:
                    break  # closing and drained
                with self._lock:
                    if self._closed:
                        pending = sum(len(b.flows) for b in self._pending)
                        self._dropped_flows += len(self._flows) + pending
                        self._dropped_flows += len(batch.flows) if batch else 0
                        self._dropped_revisions += len(self._revisions) + len(revisions)
                        self._flows.clear()
                        self._pending.clear()
                        self._revisions.clear()
                        break
                flows = batch.flows if batch else []
                self._write(flows, revisions, retention, batch.staged if batch else None)
                with self._lock:
                    self._busy = False
                    if batch is not None:  # the stager drops it (see _stage_run)
                        self._written.append(batch)
                    self._lock.notify_all()
                batch = None  # the stager frees it; so must this thread
                flows, revisions = [], []
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
                self._pending.clear()
                self._stop_stager = True
                self._lock.notify_all()
            self._stager.join()
            with self._read_lock:
                self._read_root.close()
            self._con.close()
            if self._memfd is not None:
                os.close(self._memfd)
            with _open_paths_lock:
                _open_paths.discard(self._key)

    def _write(
        self,
        flows: list[Mapping[str, Any]],
        revisions: list[_RevisionItem],
        retention: int | None,
        staged: _flows.Staged = None,
    ) -> None:
        """Write in one transaction; ``staged``: the flows staged, if the stager did it."""
        try:
            self._commit(flows, revisions, retention, staged)
        except _RETRIED as exc:
            self._failed(exc, flows, revisions)
            return
        except _REJECTED as exc:
            self._rollback()
            if flows and revisions:  # find the bad items: bisect
                self._write(flows, [], None, staged)
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
        self,
        flows: list[Mapping[str, Any]],
        revisions: list[_RevisionItem],
        retention: int | None,
        staged: _flows.Staged,
    ) -> None:
        con = self._con
        con.execute("BEGIN TRANSACTION")
        _flows.write_flow_batch(con, flows, self._staging, staged)
        _topo.write_revision_batch(con, revisions, self._staging)
        if retention is not None:
            self._retain(retention)
        con.execute("COMMIT")

    def _rollback(self) -> None:
        with contextlib.suppress(duckdb.Error):  # none left if the error aborted it
            self._con.execute("ROLLBACK")

    def _reject(
        self, exc: BaseException, flows: list[Mapping[str, Any]], revisions: list[_RevisionItem]
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
        self, exc: BaseException, flows: list[Mapping[str, Any]], revisions: list[_RevisionItem]
    ) -> None:
        """An I/O error: put the batch back at the head of the queues, the flow batches
        taken after it behind it (their order matters: a later update of a flow wins), and
        pause."""
        self._rollback()
        message = f"{self._db_path}: {one_line(exc)}"
        log.warning("embedded store write failed, will retry: %s", message)
        with self._lock:
            self._status.last_error = message
            self._status.connected = False
            self._in_flight = 0
            for batch in reversed(self._pending):
                self._flows.extendleft(reversed(batch.flows))
            self._pending.clear()
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
        over = len(self._revisions) - self.revision_queue_size
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

    def revisions(
        self, kind: str, ids: Iterable[str], start: int, end: int
    ) -> dict[str, list[dict[str, Any]]]:
        """Each element's revisions overlapping ``[start, end]``, oldest first."""
        result: dict[str, list[dict[str, Any]]] = self._read(
            _topo.revisions, kind, list(ids), start, end
        )
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
