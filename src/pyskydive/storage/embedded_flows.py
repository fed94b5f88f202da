"""Flows in the embedded store: the DuckDB tables, the batch writer and the queries.

Two tables:

* ``flows``: the latest state of each flow, one row per UUID, one column per top-level key
  of Skydive's flow JSON (DESIGN §2.5), the sections (``Metric``, ``Network``...) as STRUCTs.
  A columnar layout rather than a JSON blob: it took half the disk of the JSON text in our
  measurements, and aggregations (top talkers by ``Network.A``/``Network.B``) read only the
  columns they need. Top-level keys not in the schema are kept as JSON text in ``Extra`` and
  merged back on read, so nothing is lost; the sections follow the Skydive v0.28 schema.
* ``metrics``: the metric history, one row per update (the ``LastUpdateMetric`` delta, or the
  ``Metric`` of a flow that has none, such as those of ``/api/pcap``, with
  its ``Start``/``Last``), appended.

How a batch reaches DuckDB: DuckDB's ``executemany`` goes row by row, and turning dicts
into columns in Python costs more than the whole budget (10 µs a flow for 100,000/s; DuckDB's
Python ``appender`` took ~50 µs a flow here). Two stagings, with the same result:

* **Arrow** (:func:`stage_arrow`, when the optional C extension ``_flowarrow`` is built, the
  default): C copies each field of the dicts into Arrow columns (``FlowBatch``, ~3 µs a flow)
  that DuckDB scans through the Arrow C data interface, parsing nothing. C vouches only for
  values it converts exactly (ints, strings, dicts or None where the schema says so); for a
  batch holding anything else it declines, and the batch is staged as JSON instead, so a
  malformed flow is cast or rejected exactly as before. It also marks the latest update of
  each UUID in the batch (``_latest``).
* **NDJSON** (:func:`stage_flows`, the fallback): ``orjson`` dumps a flow in ~2.5 µs and
  DuckDB's JSON reader parses newline-delimited JSON in C++ (~2.2 µs a flow; a JSON array was
  3x slower to read, the text as a query parameter 5x slower). :func:`write_flow_batch`
  reads the file ONCE, into a temporary table (three reads, one per statement, and a
  deduplication in Python both cost 10-20 % more per batch here); the latest update of a
  UUID is the last row of it (the table keeps the file's order).

The store runs the staging on its own thread (see embedded); :func:`write_flow_batch` then
runs three statements from the staged batch: history rows (every update, in a batch or not),
deletion of the stored rows of the batch's UUIDs, insertion of the latest update of each UUID.
No pandas/pyarrow needed.

Why no PRIMARY KEY on UUID: DuckDB's ``INSERT OR REPLACE`` over an ART index halved the ingest
rate in our measurements and costs memory per row. Instead a batch first deletes the previous
rows of its UUIDs (restricted to ``Start >= min(Start of the batch)``: a flow's Start never
changes, and zone maps on Start skip the row groups before it, as long as the batch holds no
long-lived flow), then appends. At worst that is a scan of the UUID column: 0.3-0.6 s for a
250,000-flow batch against 5,000,000 stored flows here; 0.05-0.1 s in the benchmark.

All functions here take a connection and run inside the caller's transaction: the writer
thread of :class:`~pyskydive.storage.embedded.EmbeddedStore` is the only one that writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import orjson

try:
    from pyskydive.storage._flowarrow import FlowBatch
except ImportError:  # the optional C extension did not build: NDJSON staging only
    FlowBatch = None  # type: ignore[assignment,misc]

__all__ = [
    "COMPILED",
    "FLOW_COLUMNS",
    "FLOW_SCHEMA",
    "Staged",
    "create_flow_tables",
    "delete_old_flows",
    "query_flows",
    "query_metrics",
    "stage_arrow",
    "stage_flows",
    "write_flow_batch",
]

#: A column's type: "BIGINT", "VARCHAR", or a STRUCT's fields.
Kind = str | tuple[tuple[str, "Kind"], ...]

_METRIC_FIELDS = ("ABPackets", "ABBytes", "BAPackets", "BABytes", "Start", "Last", "RTT")
_METRIC: Kind = tuple((name, "BIGINT") for name in _METRIC_FIELDS)
_L2L3: Kind = (("Protocol", "VARCHAR"), ("A", "VARCHAR"), ("B", "VARCHAR"), ("ID", "BIGINT"))
_L4: Kind = (("Protocol", "VARCHAR"), ("A", "BIGINT"), ("B", "BIGINT"), ("ID", "BIGINT"))
_TCP_FIELDS = ("ABSynStart", "BASynStart", "ABFinStart", "BAFinStart", "ABRstStart", "BARstStart")

#: Top-level flow keys and their types, in table order (the sections as in Skydive v0.28).
FLOW_SCHEMA: tuple[tuple[str, Kind], ...] = (
    ("UUID", "VARCHAR"),
    ("LayersPath", "VARCHAR"),
    ("Application", "VARCHAR"),
    ("TrackingID", "VARCHAR"),
    ("L3TrackingID", "VARCHAR"),
    ("ParentUUID", "VARCHAR"),
    ("NodeTID", "VARCHAR"),
    ("CaptureID", "VARCHAR"),
    ("Start", "BIGINT"),
    ("Last", "BIGINT"),
    ("FinishType", "VARCHAR"),
    ("Metric", _METRIC),
    ("LastUpdateMetric", _METRIC),
    ("Link", _L2L3),
    ("Network", _L2L3),
    ("Transport", _L4),
    ("ICMP", (("Type", "VARCHAR"), ("Code", "BIGINT"), ("ID", "BIGINT"))),
    ("TCPMetric", tuple((name, "BIGINT") for name in _TCP_FIELDS)),
    ("Extra", "VARCHAR"),  # JSON text of the keys not in this schema, or NULL
)


def _sql_type(kind: Kind) -> str:
    if isinstance(kind, str):
        return kind
    return "STRUCT(" + ", ".join(f"{name} {_sql_type(k)}" for name, k in kind) + ")"


#: Top-level flow keys and their DuckDB column types, in table order.
FLOW_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (name, _sql_type(kind)) for name, kind in FLOW_SCHEMA
)
_KEYS = tuple(name for name, _ in FLOW_COLUMNS)
_KNOWN = frozenset(_KEYS) - {"Extra"}
_COLUMN_SPEC = "{" + ", ".join(f"'{name}': '{typ}'" for name, typ in FLOW_COLUMNS) + "}"
# The C batch's columns: the table's, Extra made from the unknown keys, and _latest.
_ARROW_SPEC = (
    *((name, "EXTRA" if name == "Extra" else kind) for name, kind in FLOW_SCHEMA),
    ("_latest", "LATEST"),
)
# Flows per C call: the stager holds the GIL for one call (~3 µs a flow), not for a batch.
_ARROW_SLICE = 1024


def create_flow_tables(con: duckdb.DuckDBPyConnection) -> None:
    columns = ", ".join(f'"{name}" {typ}' for name, typ in FLOW_COLUMNS)
    con.execute(f"CREATE TABLE IF NOT EXISTS flows ({columns})")
    con.execute(
        "CREATE TABLE IF NOT EXISTS metrics (UUID VARCHAR, Start BIGINT, Last BIGINT, "
        "ABPackets BIGINT, ABBytes BIGINT, BAPackets BIGINT, BABytes BIGINT, RTT BIGINT)"
    )


#: Whether the Arrow staging (the C extension) is available.
COMPILED = FlowBatch is not None

#: A staged batch: a ``FlowBatch``, or NDJSON parts of consecutive flows (None: not staged).
Staged = FlowBatch | list[bytes] | None


def _extra(flow: Mapping[str, Any]) -> str:
    """The JSON text of the flow's keys that are not in the schema."""
    return orjson.dumps({k: v for k, v in flow.items() if k not in _KNOWN}).decode()


def _with_extra(flow: Mapping[str, Any]) -> Mapping[str, Any]:
    if _KNOWN.issuperset(flow):
        return flow if type(flow) is dict else dict(flow)
    known = {k: v for k, v in flow.items() if k in _KNOWN}
    known["Extra"] = _extra(flow)
    return known


def stage_flows(flows: Sequence[Mapping[str, Any]]) -> bytes:
    """A batch as newline-delimited JSON, keys not in the schema moved to ``Extra`` (no
    I/O: the store runs it on its own thread while DuckDB writes the previous batch)."""
    rows: Iterable[Mapping[str, Any]] = flows
    if set().union(*flows) - _KNOWN or not all(type(f) is dict for f in flows):
        rows = [_with_extra(f) for f in flows]
    return b"\n".join(map(orjson.dumps, rows))


def new_arrow_batch() -> FlowBatch | None:
    """An empty C batch to fill with :func:`stage_arrow`; None if the extension is not
    built."""
    return None if FlowBatch is None else FlowBatch(_ARROW_SPEC, _extra, "UUID")


def stage_arrow(batch: FlowBatch, flows: Sequence[Mapping[str, Any]]) -> bool:
    """Append ``flows`` (each with a UUID string) to ``batch``: False if C declined one of
    them (the batch is then unusable: stage its flows with :func:`stage_flows`)."""
    slices = range(0, len(flows), _ARROW_SLICE)
    return all(batch.append(flows[i : i + _ARROW_SLICE]) for i in slices)


def _read_json(path: Path, spec: str) -> str:
    quoted = str(path).replace("'", "''")
    return f"read_json('{quoted}', format='newline_delimited', columns={spec})"


def write_flow_batch(
    con: duckdb.DuckDBPyConnection,
    flows: Sequence[Mapping[str, Any]],
    staging: Path,
    staged: Staged = None,
) -> None:
    """Write one batch of flow updates (in the caller's transaction): the latest state of
    each UUID replaces the stored one, every ``LastUpdateMetric`` becomes a history row.
    ``staged``: ``flows`` staged already, as a ``FlowBatch`` or as :func:`stage_flows` of
    consecutive parts of them (None: staged here, as NDJSON)."""
    if not flows:
        return
    if staged is not None and not isinstance(staged, list):  # a FlowBatch
        con.register("flow_batch", staged)
        try:
            _apply_batch(con, "flow_batch", "_latest", "* EXCLUDE (_latest)")
        finally:
            con.unregister("flow_batch")
        return
    parts = [stage_flows(flows)] if staged is None else staged
    try:
        with open(staging, "wb") as f:
            for i, part in enumerate(parts):
                if i:
                    f.write(b"\n")
                f.write(part)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE flow_stage AS "
            f"SELECT * FROM {_read_json(staging, _COLUMN_SPEC)}"
        )
    finally:
        with contextlib.suppress(OSError), open(staging, "wb"):
            pass  # empty it: free the memory or the disk it holds
    # The staged rows keep the file's order (preserve_insertion_order, DuckDB's default):
    # the last line of a UUID is its latest update.
    latest = "rowid IN (SELECT max(rowid) FROM flow_stage GROUP BY UUID)"
    _apply_batch(con, "flow_stage", latest, "*")
    con.execute("DROP TABLE flow_stage")


def _apply_batch(con: duckdb.DuckDBPyConnection, source: str, latest: str, columns: str) -> None:
    """The three statements of a batch staged as the table (or scan) ``source``, in which
    ``latest`` selects the last update of each UUID and ``columns`` are the flow columns."""
    con.execute(
        "INSERT INTO metrics SELECT UUID, M.Start, M.Last, M.ABPackets, M.ABBytes, "
        "M.BAPackets, M.BABytes, M.RTT FROM (SELECT UUID, "
        f"coalesce(LastUpdateMetric, Metric) AS M FROM {source}) WHERE M IS NOT NULL"
    )
    row = con.execute(f"SELECT min(coalesce(Start, 0)) FROM {source}").fetchone()
    min_start = int(row[0]) if row is not None and row[0] is not None else 0
    # A literal bound (as a constant filter, DuckDB checks it against the row groups' zone
    # maps and skips those before it).
    con.execute(
        f"DELETE FROM flows WHERE Start >= {min_start} AND UUID IN (SELECT UUID FROM {source})"
    )
    con.execute(f"INSERT INTO flows SELECT {columns} FROM {source} WHERE {latest}")


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return value


def _to_wire(row: tuple[Any, ...]) -> dict[str, Any]:
    flow = {k: _strip_none(v) for k, v in zip(_KEYS, row, strict=True) if v is not None}
    extra = flow.pop("Extra", None)
    if extra is not None:
        flow.update(orjson.loads(extra))
    return flow


def query_flows(
    con: duckdb.DuckDBPyConnection,
    start: int,
    end: int,
    node_tids: Iterable[str] | None = None,
    tracking_ids: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Latest state of the flows alive at some point of ``[start, end]``, oldest first."""
    sql = "SELECT * FROM flows WHERE Start <= ? AND Last >= ?"
    params: list[Any] = [end, start]
    if node_tids is not None:
        sql += " AND list_contains(?, NodeTID)"
        params.append(sorted(node_tids))
    if tracking_ids is not None:
        sql += " AND list_contains(?, TrackingID)"
        params.append(sorted(tracking_ids))
    sql += " ORDER BY Start, UUID"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(max(0, limit))
    return [_to_wire(row) for row in con.execute(sql, params).fetchall()]


def query_metrics(
    con: duckdb.DuckDBPyConnection, uuids: Iterable[str], start: int, end: int
) -> dict[str, list[dict[str, Any]]]:
    """Each flow's metric history rows overlapping ``[start, end]``, in time order."""
    wanted = sorted(set(uuids))
    out: dict[str, list[dict[str, Any]]] = {u: [] for u in wanted}
    if not wanted:
        return out
    rows = con.execute(
        "SELECT UUID, ABPackets, ABBytes, BAPackets, BABytes, Start, Last, RTT FROM metrics "
        "WHERE list_contains(?, UUID) AND Start <= ? AND Last >= ? ORDER BY UUID, Start, Last",
        [wanted, end, start],
    ).fetchall()
    for row in rows:
        metric = zip(_METRIC_FIELDS, row[1:], strict=True)
        out[row[0]].append({k: v for k, v in metric if v is not None})
    return out


def delete_old_flows(
    con: duckdb.DuckDBPyConnection, *, cutoff: int | None, max_flows: int | None
) -> None:
    """Retention (in the caller's transaction): flows whose ``Last`` is before ``cutoff``
    and history rows ending before it; then only the ``max_flows`` most recent flows (by
    ``Last``) and the history of the flows kept."""
    if cutoff is not None:
        con.execute("DELETE FROM flows WHERE Last < ?", [cutoff])
        con.execute("DELETE FROM metrics WHERE Last < ?", [cutoff])
    if max_flows is not None:
        row = con.execute("SELECT count(*) FROM flows").fetchone()
        if row is not None and row[0] > max_flows:
            con.execute(
                "DELETE FROM flows WHERE rowid IN (SELECT rowid FROM flows "
                "ORDER BY Last DESC, UUID OFFSET ?)",
                [max_flows],
            )
            con.execute("DELETE FROM metrics WHERE UUID NOT IN (SELECT UUID FROM flows)")
