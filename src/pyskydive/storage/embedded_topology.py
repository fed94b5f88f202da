"""Topology history in the embedded store: one DuckDB table of revisions.

``revisions(kind, id, valid_from, valid_to, element)``: one row per revision of a node or an
edge, ``element`` its wire dict as JSON text, ``valid_to`` NULL while it is the current one.
A revision is identified by ``(kind, id, valid_from)``: recording one that is already stored
replaces it; that is how a closure (the same revision with its ``valid_to`` set) lands. A
closure whose element is empty keeps the stored element.

:class:`CloseLive` in a batch ends, at its ``t``, every revision current at that point of
the batch (the analyzer's start: what was live when it stopped is archived).

Writes are staged through an NDJSON file like the flows (see ``embedded_flows``), because
DuckDB's ``executemany`` is too slow for a burst of thousands of revisions at start-up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson

from pyskydive.storage.base import Revision, element_json

__all__ = [
    "CloseLive",
    "create_topology_table",
    "delete_old_revisions",
    "graph_at",
    "graph_during",
    "live",
    "revisions",
    "write_revision_batch",
]

Graph = tuple[list[dict[str, Any]], list[dict[str, Any]]]

_SPEC = (
    "{'kind': 'VARCHAR', 'id': 'VARCHAR', 'valid_from': 'BIGINT', 'valid_to': 'BIGINT', "
    "'element': 'VARCHAR'}"
)


def create_topology_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE TABLE IF NOT EXISTS revisions (kind VARCHAR, id VARCHAR, "
        "valid_from BIGINT, valid_to BIGINT, element VARCHAR)"
    )


@dataclass(frozen=True, slots=True)
class CloseLive:
    """In a revision queue: end every current revision at ``t``."""

    t: int


def write_revision_batch(
    con: duckdb.DuckDBPyConnection,
    revisions: Sequence[Revision | CloseLive],
    staging: Path,
) -> None:
    """Insert or replace revisions, and apply :class:`CloseLive` marks where they stand in
    the sequence (in the caller's transaction)."""
    segment: list[Revision] = []
    for item in revisions:
        if isinstance(item, CloseLive):
            _write_revisions(con, segment, staging)
            segment = []
            _close_live(con, item.t)
        else:
            segment.append(item)
    _write_revisions(con, segment, staging)


def _close_live(con: duckdb.DuckDBPyConnection, t: int) -> None:
    con.execute(
        "UPDATE revisions SET valid_to = $t, "
        "element = json_merge_patch(element, json_object('DeletedAt', $t))::VARCHAR "
        "WHERE valid_to IS NULL AND valid_from <= $t",
        {"t": t},
    )


def _write_revisions(
    con: duckdb.DuckDBPyConnection, revisions: Sequence[Revision], staging: Path
) -> None:
    if not revisions:
        return
    latest: dict[tuple[str, str, int], Revision] = {}
    for r in revisions:  # the later record of a revision wins; an empty element keeps its own
        key = (r.kind, r.id, r.valid_from)
        before = latest.get(key)
        if before is not None and not r.element:
            r = Revision(r.kind, r.id, before.element, r.valid_from, r.valid_to)
        latest[key] = r
    min_from = min(r.valid_from for r in latest.values())
    lines = [
        orjson.dumps(
            {
                "kind": r.kind,
                "id": r.id,
                "valid_from": r.valid_from,
                "valid_to": r.valid_to,
                "element": element_json(r.element).decode(),
            }
        )
        for r in latest.values()
    ]
    quoted = str(staging).replace("'", "''")
    source = f"read_json('{quoted}', format='newline_delimited', columns={_SPEC})"
    try:
        with open(staging, "wb") as f:
            f.write(b"\n".join(lines) + b"\n")
        con.execute(f"CREATE OR REPLACE TEMP TABLE revision_stage AS SELECT * FROM {source}")
        con.execute(
            "UPDATE revisions AS r SET valid_to = s.valid_to, element = CASE "
            "WHEN s.element = '{}' THEN r.element ELSE s.element END FROM revision_stage AS s "
            f"WHERE r.valid_from >= {int(min_from)} AND r.kind = s.kind AND r.id = s.id "
            "AND r.valid_from = s.valid_from"
        )
        con.execute(
            "INSERT INTO revisions SELECT s.* FROM revision_stage AS s ANTI JOIN "
            f"(SELECT * FROM revisions WHERE valid_from >= {int(min_from)}) AS r "
            "ON r.kind = s.kind AND r.id = s.id AND r.valid_from = s.valid_from"
        )
        con.execute("DROP TABLE revision_stage")
    finally:
        with contextlib.suppress(OSError), open(staging, "wb"):
            pass  # empty it: free the memory or the disk it holds


def _graph(con: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> Graph:
    # The latest revision of each element among those selected (there is one unless the
    # recorded intervals overlap).
    rows = con.execute(
        f"SELECT kind, element FROM revisions WHERE {where} "
        "QUALIFY row_number() OVER (PARTITION BY kind, id ORDER BY valid_from DESC) = 1 "
        "ORDER BY kind, id",
        params,
    ).fetchall()
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for kind, element in rows:
        (nodes if kind == "node" else edges).append(orjson.loads(element))
    return nodes, edges


def graph_at(con: duckdb.DuckDBPyConnection, t: int) -> Graph:
    """Elements whose revision interval ``[valid_from, valid_to)`` contains ``t``."""
    return _graph(con, "valid_from <= ? AND (valid_to IS NULL OR valid_to > ?)", [t, t])


def graph_during(con: duckdb.DuckDBPyConnection, start: int, end: int) -> Graph:
    """Elements with a revision overlapping ``[start, end]``, each in its latest one there."""
    return _graph(con, "valid_from <= ? AND (valid_to IS NULL OR valid_to > ?)", [end, start])


def live(con: duckdb.DuckDBPyConnection) -> Graph:
    return _graph(con, "valid_to IS NULL", [])


def revisions(
    con: duckdb.DuckDBPyConnection, kind: str, ids: Iterable[str], start: int, end: int
) -> dict[str, list[dict[str, Any]]]:
    """Each element's revisions overlapping ``[start, end]``, oldest first (``[]`` if none)."""
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if not out:
        return out
    rows = con.execute(
        "SELECT id, element FROM revisions WHERE kind = ? AND list_contains(?, id) "
        "AND valid_from <= ? AND (valid_to IS NULL OR valid_to > ?) ORDER BY id, valid_from",
        [kind, sorted(out), end, start],
    ).fetchall()
    for element_id, element in rows:
        out[element_id].append(orjson.loads(element))
    return out


def delete_old_revisions(con: duckdb.DuckDBPyConnection, cutoff: int) -> None:
    """Retention: revisions that ended before ``cutoff`` (current ones are always kept)."""
    con.execute("DELETE FROM revisions WHERE valid_to IS NOT NULL AND valid_to < ?", [cutoff])
