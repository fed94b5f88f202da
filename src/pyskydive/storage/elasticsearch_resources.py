"""The API resources of the Elasticsearch store: an in-memory cache, shared through polling.

The analyzer reads and writes its resources (captures, alerts, rules, API nodes and edges)
synchronously, from its event loop: :class:`ResourceCache` answers from memory, and every
local change is written to the ``resources`` index in the background (the store's ordered
writer). Two analyzers on one cluster and prefix share their resources by polling that
index: :meth:`ResourceCache.merge` takes a full snapshot and applies what differs.

A snapshot must not undo a local change it does not contain yet. A change is *pending* from
``put``/``delete`` until its write is acknowledged and refreshed (:meth:`written`); a poll
leaves alone every key that was pending when its search started, is pending when it ends,
or was changed locally meanwhile (generation numbers). No I/O here.
"""

from __future__ import annotations

import collections
import copy
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["Key", "PollToken", "ResourceCache"]

Key = tuple[str, str]  # (kind, id)
PollToken = tuple[int, frozenset[Key]]  # (generation, pending keys) when a poll started


class ResourceCache:
    """``kind -> {id: resource}`` with the bookkeeping of local changes being written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, dict[str, Any]]] = {}
        self._pending: collections.Counter[Key] = collections.Counter()
        self._gen = 0
        self._touched: dict[Key, int] = {}

    def list(self, kind: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._data.get(kind, {}))

    def get(self, kind: str, resource_id: str) -> dict[str, Any] | None:
        with self._lock:
            resource = self._data.get(kind, {}).get(resource_id)
            return None if resource is None else copy.deepcopy(resource)

    def put(self, kind: str, resource_id: str, resource: dict[str, Any]) -> None:
        """A local change: pending until :meth:`written` is called for it."""
        with self._lock:
            self._data.setdefault(kind, {})[resource_id] = copy.deepcopy(resource)
            self._touch((kind, resource_id))

    def delete(self, kind: str, resource_id: str) -> bool:
        """A local deletion (pending as ``put``); False if there was no such resource."""
        with self._lock:
            if resource_id not in self._data.get(kind, {}):
                return False
            del self._data[kind][resource_id]
            self._touch((kind, resource_id))
            return True

    def _touch(self, key: Key) -> None:
        self._gen += 1
        self._touched[key] = self._gen
        self._pending[key] += 1

    def written(self, keys: Iterable[Key]) -> None:
        """These local changes are written and searchable (or given up)."""
        with self._lock:
            for key in keys:
                self._pending[key] -= 1
                if self._pending[key] <= 0:
                    del self._pending[key]

    def start_poll(self) -> PollToken:
        with self._lock:
            return self._gen, frozenset(self._pending)

    def merge(self, token: PollToken, stored: dict[Key, dict[str, Any]]) -> bool:
        """Apply a snapshot of the index taken after ``token``; True if anything changed."""
        gen0, pending0 = token
        changed = False
        with self._lock:
            skip = set(pending0) | set(self._pending)
            skip |= {k for k, g in self._touched.items() if g > gen0}
            known = {(kind, i) for kind, res in self._data.items() for i in res}
            for key in known | set(stored):
                if key in skip:
                    continue
                kind, resource_id = key
                theirs = stored.get(key)
                if self._data.get(kind, {}).get(resource_id) == theirs:
                    continue
                changed = True
                if theirs is None:
                    del self._data[kind][resource_id]
                else:
                    self._data.setdefault(kind, {})[resource_id] = theirs
            for key in [k for k, g in self._touched.items() if g <= gen0 and k not in skip]:
                del self._touched[key]  # seen written by this poll
        return changed
