"""The analyzer's embedded store: API resources that must survive a restart.

A persistent map ``kind -> {id: resource}`` (kinds: ``capture``, ``alert``, ``noderule``,
``edgerule``, ``node``, ``edge``) kept in one JSON file, ``<data_dir>/resources.json``.

Why one JSON file rather than sqlite: the data is small (hundreds of resources, not flows),
always read whole at start-up and written rarely, and a JSON file can be read, backed up and
repaired by hand. Every write is atomic and durable: the new content goes to a temporary file
in the same directory, which is fsync'ed and then ``os.replace``'d over the old one (and the
directory fsync'ed), so a crash leaves either the old or the new file, never a torn one. The
directory is created on the first write only, so an analyzer that never stores anything leaves
no trace. A file that cannot be read or parsed is a :class:`~pyskydive.errors.StorageError`
naming the file, reported as one line at start-up.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

from pyskydive.errors import StorageError

__all__ = ["FILE_NAME", "ResourceStore"]

FILE_NAME = "resources.json"


class ResourceStore:
    """``kind -> {id: resource dict}``, persisted on every change."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / FILE_NAME
        self._data: dict[str, dict[str, dict[str, Any]]] = self._load()

    def _load(self) -> dict[str, dict[str, dict[str, Any]]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StorageError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise StorageError(f"{self.path} is corrupt (not JSON: {exc})") from exc
        if not isinstance(data, dict) or not all(
            isinstance(kind, dict) and all(isinstance(r, dict) for r in kind.values())
            for kind in data.values()
        ):
            raise StorageError(f"{self.path} is corrupt (expected {{kind: {{id: object}}}})")
        return data

    # -- reading ---------------------------------------------------------------------------

    def list(self, kind: str) -> dict[str, dict[str, Any]]:
        """A copy of every resource of ``kind``, by id."""
        return copy.deepcopy(self._data.get(kind, {}))

    def get(self, kind: str, resource_id: str) -> dict[str, Any] | None:
        resource = self._data.get(kind, {}).get(resource_id)
        return None if resource is None else copy.deepcopy(resource)

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, resource_id = key
        return resource_id in self._data.get(kind, {})

    # -- writing ---------------------------------------------------------------------------

    def put(self, kind: str, resource_id: str, resource: dict[str, Any]) -> None:
        """Insert or replace a resource and persist (a copy is stored)."""
        previous = self._data.get(kind, {}).get(resource_id)
        self._data.setdefault(kind, {})[resource_id] = copy.deepcopy(resource)
        try:
            self._flush()
        except StorageError:
            if previous is None:
                self._data[kind].pop(resource_id, None)
            else:
                self._data[kind][resource_id] = previous
            raise

    def delete(self, kind: str, resource_id: str) -> bool:
        """Remove a resource and persist; False if there was none."""
        resources = self._data.get(kind, {})
        if resource_id not in resources:
            return False
        previous = resources.pop(resource_id)
        try:
            self._flush()
        except StorageError:
            resources[resource_id] = previous
            raise
        return True

    def _flush(self) -> None:
        data = {kind: res for kind, res in self._data.items() if res}
        payload = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        tmp = ""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".resources.", suffix=".tmp", dir=self.dir)
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = ""
            dir_fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
