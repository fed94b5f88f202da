"""The embedded store's directory layout: the ``FORMAT`` marker and the database checks.

A directory is accepted when it holds a ``FORMAT`` file saying ``pyskydive-embedded-store 1``,
or when it is empty or missing (it is then created and marked), or when it holds only the
analyzer's ``resources.json`` (adopted). Anything else (other files, another marker, another
version, a database without our ``pyskydive_meta`` table, a file DuckDB cannot open) is a
:class:`~pyskydive.errors.StorageError` naming the path, raised before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from pyskydive.analyzer.store import FILE_NAME as RESOURCES_FILE
from pyskydive.errors import StorageError
from pyskydive.storage import embedded_flows as _flows
from pyskydive.storage import embedded_topology as _topo

__all__ = [
    "DB_FILE",
    "FORMAT_FILE",
    "FORMAT_MAGIC",
    "FORMAT_VERSION",
    "check_dir",
    "one_line",
    "open_database",
]

FORMAT_FILE = "FORMAT"
FORMAT_MAGIC = "pyskydive-embedded-store"
FORMAT_VERSION = 1
DB_FILE = "store.duckdb"


def check_dir(path: Path) -> None:
    """Make ``path`` an embedded store directory, or raise if it is something else."""
    if path.exists() and not path.is_dir():
        raise StorageError(f"{path}: not a directory")
    marker = path / FORMAT_FILE
    try:
        text = marker.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = None
    except OSError as exc:
        raise StorageError(f"{marker}: cannot read ({exc.strerror or exc})") from exc
    if text is None:
        try:
            foreign = sorted(set(os.listdir(path)) - {RESOURCES_FILE}) if path.exists() else []
        except OSError as exc:
            raise StorageError(f"{path}: cannot list ({exc.strerror or exc})") from exc
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise StorageError(
                f"{path}: not a pyskydive embedded store (no {FORMAT_FILE} file; holds {shown})"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{FORMAT_MAGIC} {FORMAT_VERSION}\n", encoding="utf-8")
        except OSError as exc:
            raise StorageError(f"{path}: cannot create the store ({exc.strerror or exc})") from exc
        return
    fields = text.split()
    if len(fields) != 2 or fields[0] != FORMAT_MAGIC:
        raise StorageError(f"{marker}: not a pyskydive embedded store marker ({text[:40]!r})")
    if fields[1] != str(FORMAT_VERSION):
        raise StorageError(
            f"{path}: embedded store format version {fields[1]}, "
            f"this pyskydive reads version {FORMAT_VERSION}"
        )


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def open_database(db_path: Path) -> duckdb.DuckDBPyConnection:
    """Open (or create) the store's DuckDB database and check it is ours, of our version."""
    try:
        # No cache of external files: the staging file is rewritten for every batch.
        con = duckdb.connect(str(db_path), config={"enable_external_file_cache": False})
    except duckdb.Error as exc:
        raise StorageError(f"{db_path}: cannot open ({one_line(exc)})") from exc
    try:
        tables = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
        if tables and "pyskydive_meta" not in tables:
            raise StorageError(f"{db_path}: not a pyskydive store database")
        con.execute("CREATE TABLE IF NOT EXISTS pyskydive_meta (key VARCHAR, value VARCHAR)")
        row = con.execute("SELECT value FROM pyskydive_meta WHERE key = 'version'").fetchone()
        if row is None:
            con.execute("INSERT INTO pyskydive_meta VALUES ('version', ?)", [FORMAT_VERSION])
        elif row[0] != str(FORMAT_VERSION):
            raise StorageError(
                f"{db_path}: database layout version {row[0]}, "
                f"this pyskydive reads version {FORMAT_VERSION}"
            )
        _flows.create_flow_tables(con)
        _topo.create_topology_table(con)
    except duckdb.Error as exc:
        con.close()
        raise StorageError(f"{db_path}: cannot open ({one_line(exc)})") from exc
    except StorageError:
        con.close()
        raise
    return con
