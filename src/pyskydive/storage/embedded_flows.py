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

Why staged NDJSON files: DuckDB's ``executemany`` goes row by row, and turning dicts into
columns in Python costs more than the whole budget (10 µs a flow for 100,000/s; DuckDB's
Python ``appender`` took ~50 µs a flow here); ``orjson`` dumps a flow in ~4 µs and DuckDB's
JSON reader parses newline-delimited JSON in C++, in parallel, straight into the typed
columns (a JSON array was 3x slower to read; passing the text as a query parameter was 5x
slower). :func:`stage_flows` is the Python half (the store runs it on its own thread, see
embedded); :func:`write_flow_batch` reads the file ONCE, into a temporary table, and runs
the three statements from it: history rows (every update, in a batch or not), deletion of
the stored rows of the batch's UUIDs, insertion of the latest update of each UUID (the
batch keeps the file's order: the last line of a UUID wins). Reading the file once per
statement instead (three parses) and deduplicating in Python (one dict over the batch, the
history of superseded updates staged again) cost 10-20 % more per batch here. No
pandas/pyarrow needed.

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

__all__ = [
    "FLOW_COLUMNS",
    "create_flow_tables",
    "delete_old_flows",
    "query_flows",
    "query_metrics",
    "stage_flows",
    "write_flow_batch",
]

_METRIC = (
    "STRUCT(ABPackets BIGINT, ABBytes BIGINT, BAPackets BIGINT, BABytes BIGINT, "
    "Start BIGINT, Last BIGINT, RTT BIGINT)"
)
_L2L3 = "STRUCT(Protocol VARCHAR, A VARCHAR, B VARCHAR, ID BIGINT)"
_L4 = "STRUCT(Protocol VARCHAR, A BIGINT, B BIGINT, ID BIGINT)"

#: Top-level flow keys and their column types, in table order.
FLOW_COLUMNS: tuple[tuple[str, str], ...] = (
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
    ("ICMP", "STRUCT(Type VARCHAR, Code BIGINT, ID BIGINT)"),
    (
        "TCPMetric",
        "STRUCT(ABSynStart BIGINT, BASynStart BIGINT, ABFinStart BIGINT, "
        "BAFinStart BIGINT, ABRstStart BIGINT, BARstStart BIGINT)",
    ),
    ("Extra", "VARCHAR"),  # JSON text of the keys not in this schema, or NULL
)
_KEYS = tuple(name for name, _ in FLOW_COLUMNS)
_KNOWN = frozenset(_KEYS) - {"Extra"}
_COLUMN_SPEC = "{" + ", ".join(f"'{name}': '{typ}'" for name, typ in FLOW_COLUMNS) + "}"
_METRIC_FIELDS = ("ABPackets", "ABBytes", "BAPackets", "BABytes", "Start", "Last", "RTT")


def create_flow_tables(con: duckdb.DuckDBPyConnection) -> None:
    columns = ", ".join(f'"{name}" {typ}' for name, typ in FLOW_COLUMNS)
    con.execute(f"CREATE TABLE IF NOT EXISTS flows ({columns})")
    con.execute(
        "CREATE TABLE IF NOT EXISTS metrics (UUID VARCHAR, Start BIGINT, Last BIGINT, "
        "ABPackets BIGINT, ABBytes BIGINT, BAPackets BIGINT, BABytes BIGINT, RTT BIGINT)"
    )


def _with_extra(flow: Mapping[str, Any]) -> Mapping[str, Any]:
    if _KNOWN.issuperset(flow):
        return flow if type(flow) is dict else dict(flow)
    known = {k: v for k, v in flow.items() if k in _KNOWN}
    known["Extra"] = orjson.dumps({k: v for k, v in flow.items() if k not in _KNOWN}).decode()
    return known


def stage_flows(flows: Sequence[Mapping[str, Any]]) -> bytes:
    """A batch as newline-delimited JSON, keys not in the schema moved to ``Extra`` (no
    I/O: the store runs it on its own thread while DuckDB writes the previous batch)."""
    rows: Iterable[Mapping[str, Any]] = flows
    if set().union(*flows) - _KNOWN or not all(type(f) is dict for f in flows):
        rows = [_with_extra(f) for f in flows]
    return b"\n".join(map(orjson.dumps, rows))


def _read_json(path: Path, spec: str) -> str:
    quoted = str(path).replace("'", "''")
    return f"read_json('{quoted}', format='newline_delimited', columns={spec})"


def write_flow_batch(
    con: duckdb.DuckDBPyConnection,
    flows: Sequence[Mapping[str, Any]],
    staging: Path,
    staged: Sequence[bytes] | None = None,
) -> None:
    """Write one batch of flow updates (in the caller's transaction): the latest state of
    each UUID replaces the stored one, every ``LastUpdateMetric`` becomes a history row.
    ``staged``: :func:`stage_flows` of consecutive parts of ``flows``, if the caller has
    them already."""
    if not flows:
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
    con.execute(
        "INSERT INTO metrics SELECT UUID, M.Start, M.Last, M.ABPackets, M.ABBytes, "
        "M.BAPackets, M.BABytes, M.RTT FROM (SELECT UUID, "
        "coalesce(LastUpdateMetric, Metric) AS M FROM flow_stage) WHERE M IS NOT NULL"
    )
    row = con.execute("SELECT min(coalesce(Start, 0)) FROM flow_stage").fetchone()
    min_start = int(row[0]) if row is not None and row[0] is not None else 0
    # A literal bound (as a constant filter, DuckDB checks it against the row groups' zone
    # maps and skips those before it).
    con.execute(
        f"DELETE FROM flows WHERE Start >= {min_start} AND UUID IN (SELECT UUID FROM flow_stage)"
    )
    # The staged rows keep the file's order (preserve_insertion_order, DuckDB's default):
    # the last line of a UUID is its latest update.
    con.execute(
        "INSERT INTO flows SELECT * FROM flow_stage "
        "WHERE rowid IN (SELECT max(rowid) FROM flow_stage GROUP BY UUID)"
    )
    con.execute("DROP TABLE flow_stage")


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
