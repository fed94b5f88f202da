"""Open the storage backends the analyzer's config names (DESIGN.md §2.6).

``analyzer.topology.backend`` and ``analyzer.flow.backend`` name ``storage.<name>`` entries
("embedded", the embedded store in ``analyzer.data_dir``, always exists). When both name the
same entry, one store serves both; API resources go to the topology backend's store. A backend
that cannot be opened (a foreign or corrupt directory, an Elasticsearch index with an
incompatible mapping) is a :class:`~pyskydive.errors.StorageError` naming the path or index;
an Elasticsearch cluster that is down at start is not an error: the store buffers and retries.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pyskydive.config import Config
from pyskydive.config.model import StorageBackendConfig
from pyskydive.errors import StorageError
from pyskydive.storage.base import FlowQuery, Revision, StorageStatus

__all__ = ["Storage", "Store", "open_storage", "status_wire"]

log = logging.getLogger(__name__)

Wire = list[dict[str, Any]]


class Store(Protocol):
    """What the analyzer uses of a backend: topology history, flows, resources, upkeep."""

    def record(self, revisions: Iterable[Revision]) -> None: ...

    def close_live(self, t: int) -> None: ...

    def graph_at(self, t: int) -> tuple[Wire, Wire]: ...

    def graph_during(self, start: int, end: int) -> tuple[Wire, Wire]: ...

    def live(self) -> tuple[Wire, Wire]: ...

    def revisions(
        self, kind: Literal["node", "edge"], ids: Iterable[str], start: int, end: int
    ) -> dict[str, Wire]: ...

    def write_flows(self, flows: Iterable[Mapping[str, Any]]) -> None: ...

    def query_flows(self, query: FlowQuery) -> Wire: ...

    def metrics(self, uuids: Iterable[str], start: int, end: int) -> dict[str, Wire]: ...

    def list(self, kind: str) -> dict[str, dict[str, Any]]: ...

    def get(self, kind: str, resource_id: str) -> dict[str, Any] | None: ...

    def put(self, kind: str, resource_id: str, resource: dict[str, Any]) -> None: ...

    def delete(self, kind: str, resource_id: str) -> bool: ...

    def status(self) -> StorageStatus: ...

    def flush(self, timeout: float = ...) -> bool: ...

    def close(self, timeout: float = ...) -> bool: ...


@dataclass
class Storage:
    """The analyzer's backends: ``topology`` (history and API resources) and ``flows``."""

    topology: Store
    flows: Store
    names: dict[str, str] = field(default_factory=dict)  # role -> storage entry name

    @property
    def resources(self) -> Store:
        return self.topology

    def describe(self) -> str:
        """One line for the start-up log: which backend keeps what, and where."""
        parts = []
        for role, store in (("topology", self.topology), ("flows", self.flows)):
            extra = store.status().extra
            where = extra.get("path") or ", ".join(extra.get("hosts") or ())
            if role == "flows" and extra.get("staging"):
                where += f", batches as {extra['staging']}"
            parts.append(f"{role} in {self.names.get(role.title(), '?')} ({where})")
        return "storage: " + "; ".join(parts)

    def stores(self) -> list[Store]:
        """Each distinct store once."""
        return [self.topology] if self.flows is self.topology else [self.topology, self.flows]

    def status(self) -> dict[str, Any]:
        """``/api/status``'s ``Storage`` section."""
        out: dict[str, Any] = {}
        for role, store in (("Topology", self.topology), ("Flows", self.flows)):
            out[role] = {"Name": self.names.get(role, ""), **status_wire(store.status())}
        return out

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is buffered (up to ``timeout`` seconds each), then close every store."""
        drained = True
        for store in self.stores():
            try:
                drained = store.close(timeout) and drained
            except Exception:  # one store's bug must not keep the other open
                log.exception("closing a storage backend failed")
                drained = False
        return drained


def status_wire(status: StorageStatus) -> dict[str, Any]:
    return {
        "Backend": status.backend,
        "Connected": status.connected,
        "Backlog": status.queued,
        "Dropped": status.dropped,
        "Written": status.written,
        "LastError": status.last_error,
        **{_camel(k): v for k, v in status.extra.items()},
    }


def _camel(key: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in key.split("_"))


def _open_one(
    config: Config, name: str, entry: StorageBackendConfig, *, resources: bool = True
) -> Store:
    """Open one backend; ``resources``: whether it serves the API resources too."""
    topo_buffer = config.analyzer.topology.max_buffer_size
    flow_buffer = config.analyzer.flow.max_buffer_size
    if entry.driver == "embedded":
        from pyskydive.storage.embedded import EmbeddedStore

        path = Path(entry.path or config.analyzer.data_dir).expanduser()
        return EmbeddedStore(
            path,
            queue_size=flow_buffer,
            revision_queue_size=topo_buffer,
            max_age_ms=entry.max_age * 1000 or None,
            max_flows=entry.max_flows or None,
        )
    try:
        from pyskydive.storage.elasticsearch import ElasticsearchStore
    except ImportError as exc:  # the client library is missing
        raise StorageError(f"storage.{name}: the elasticsearch driver needs {exc.name}") from exc
    return ElasticsearchStore(
        hosts=list(entry.hosts),
        index_prefix=entry.index_prefix,
        username=entry.username or None,
        password=entry.password or None,
        ca_certs=entry.ca_cert,
        ssl_insecure=entry.ssl_insecure,
        index_entries_limit=entry.index_entries_limit,
        index_age_limit=entry.index_age_limit,
        indices_to_keep=entry.indices_to_keep,
        bulk_maxdelay=entry.bulk_maxdelay,
        total_fields_limit=entry.total_fields_limit,
        queue_size=flow_buffer,
        revision_queue_size=topo_buffer,
        resource_poll_interval=2.0 if resources else 0.0,
    )


def open_storage(config: Config) -> Storage:
    """Open the backends ``config`` selects (StorageError naming what is wrong)."""
    topo_name = config.analyzer.topology.backend
    flow_name = config.analyzer.flow.backend
    topology = _open_one(config, topo_name, config.storage_backend(topo_name))
    if flow_name == topo_name:
        flows = topology
    else:
        try:
            flows = _open_one(config, flow_name, config.storage_backend(flow_name), resources=False)
        except BaseException:
            with contextlib.suppress(Exception):
                topology.close()
            raise
    return Storage(topology, flows, {"Topology": topo_name, "Flows": flow_name})
