"""The configuration as typed, frozen sections (DESIGN.md §2.7, STYLE.md habit 8).

The file is parsed once into :class:`Config` and its sections are passed down; nothing reads
settings by string key deep in the code.  Every model forbids unknown keys, so a typo fails at
start-up.  The one free-form place is ``agent.metadata``.

The dotted key of a field is its path of attribute names (``agent.topology.netns.run_path``);
the environment override names and the documented default file
(``etc/skydive.yml.default``) are derived from these same fields, so adding a field here is
the only step needed to add a key.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pyskydive.config.address import Address
from pyskydive.config.fields import (
    AddressList,
    LogLevel,
    NonEmptyStr,
    ProbeList,
    Seconds,
    SecondsOrZero,
    StringList,
)

__all__ = [
    "AgentAuthConfig",
    "AgentClusterAuthConfig",
    "AgentConfig",
    "AgentFlowConfig",
    "AnalyzerAuthConfig",
    "AnalyzerConfig",
    "ApiAuthConfig",
    "AuthBackendConfig",
    "ClusterAuthConfig",
    "Config",
    "FlowConfig",
    "LoggingConfig",
    "NetlinkConfig",
    "NetnsConfig",
    "OvsConfig",
    "PcapSocketConfig",
    "SflowCollectorConfig",
    "StorageBackendConfig",
    "TLSConfig",
    "TopologyConfig",
]


def yaml_mapping(data: Any) -> Any:
    """An environment variable's text holding a YAML mapping, as that mapping; anything
    else as it is (validation then says what is wrong with it)."""
    if isinstance(data, str):
        try:
            parsed = yaml.safe_load(data)
        except yaml.YAMLError:
            return data
        return parsed if isinstance(parsed, dict) else data
    return data


class _Section(BaseModel):
    """Base of every section: immutable, strict about keys, lenient about scalars."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        # "agent:" with every child commented out is YAML null: read it as "all defaults".
        if data is None:
            return {}
        if isinstance(data, dict):
            for key in data:
                if not isinstance(key, str):
                    raise ValueError(f"unknown key {key!r} (keys are names)")
        return data


class NetnsConfig(_Section):
    """``agent.topology.netns``: the network-namespace probe."""

    run_path: NonEmptyStr = "/var/run/netns"


class NetlinkConfig(_Section):
    """``agent.topology.netlink``: the interface (netlink) probe."""

    metrics_update: Seconds = 30


class TopologyConfig(_Section):
    """``agent.topology``: which topology probes run, and their settings."""

    probes: ProbeList = Field(default_factory=lambda: ["netlink", "netns", "ethtool"])
    netns: NetnsConfig = Field(default_factory=NetnsConfig)
    netlink: NetlinkConfig = Field(default_factory=NetlinkConfig)


# --- authentication and TLS (DESIGN.md §2.2; Skydive v0.28 key names) ----------------------

AuthType = Literal["noauth", "basic"]
Role = Literal["admin", "guest"]

#: The backend name that always exists, whether or not ``auth`` defines it.
NOAUTH = "noauth"


class AuthBackendConfig(_Section):
    """``auth.<name>``: one named authentication backend.

    ``type: basic`` checks users against an htpasswd ``file`` (bcrypt hashes) and/or the inline
    ``users`` map; ``type: noauth`` lets everybody in as admin.  Every user of a backend has
    its ``role`` unless ``roles`` names another one for that user.
    """

    type: AuthType
    file: str | None = None
    users: dict[str, str] = Field(default_factory=dict)
    role: Role = "admin"
    roles: dict[str, Role] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        # SKYDIVE_AUTH_<NAME>='{type: basic, file: /etc/skydive/htpasswd}': a YAML mapping.
        return yaml_mapping(data)

    @field_validator("users", "roles", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        # "users:" with every entry commented out (as in Skydive's example file) is YAML null
        return {} if value is None else value

    @model_validator(mode="after")
    def _basic_needs_users(self) -> AuthBackendConfig:
        if self.type == "basic" and not self.file and not self.users:
            raise ValueError("a basic backend needs a 'file' (htpasswd) or 'users'")
        return self


class ApiAuthConfig(_Section):
    """``analyzer.auth.api`` / ``agent.auth.api``: who may use this process's API."""

    backend: NonEmptyStr = NOAUTH


class ClusterAuthConfig(_Section):
    """``analyzer.auth.cluster``: the backend agents authenticate against."""

    backend: NonEmptyStr = NOAUTH


class AgentClusterAuthConfig(_Section):
    """``agent.auth.cluster``: the credentials the agent presents to the analyzers."""

    username: str = ""
    password: str = ""


class AnalyzerAuthConfig(_Section):
    """``analyzer.auth``."""

    api: ApiAuthConfig = Field(default_factory=ApiAuthConfig)
    cluster: ClusterAuthConfig = Field(default_factory=ClusterAuthConfig)


class AgentAuthConfig(_Section):
    """``agent.auth``."""

    api: ApiAuthConfig = Field(default_factory=ApiAuthConfig)
    cluster: AgentClusterAuthConfig = Field(default_factory=AgentClusterAuthConfig)


class TLSConfig(_Section):
    """``tls``: PEM files; with ``server_cert``/``server_key`` set, both the analyzer and the
    agent serve HTTPS/WSS and the agent dials its analyzers with ``wss://``, verifying them
    against ``ca_cert`` (the system CAs when unset).  ``client_cert``/``client_key`` are
    presented by the agent; servers verify presented client certificates against ``ca_cert``.
    """

    server_cert: str | None = None
    server_key: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    ca_cert: str | None = None

    @model_validator(mode="after")
    def _pairs(self) -> TLSConfig:
        for cert, key in (("server_cert", "server_key"), ("client_cert", "client_key")):
            if bool(getattr(self, cert)) != bool(getattr(self, key)):
                raise ValueError(f"{cert} and {key} must be set together")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.server_cert and self.server_key)


class SflowCollectorConfig(_Section):
    """``agent.flow.sflow``: the UDP collectors of ``sflow`` and ``ovssflow`` captures."""

    #: Address the collectors bind to (OVS on this host sends there).
    bind_address: NonEmptyStr = "127.0.0.1"
    #: Ports given to captures that do not name one, in this range (inclusive).
    port_min: int = Field(default=6345, ge=1, le=65535)
    port_max: int = Field(default=6355, ge=1, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> SflowCollectorConfig:
        if self.port_min > self.port_max:
            raise ValueError(f"port_min {self.port_min} is above port_max {self.port_max}")
        return self


class PcapSocketConfig(_Section):
    """``agent.flow.pcapsocket``: the TCP listeners of ``pcapsocket`` captures."""

    bind_address: NonEmptyStr = "127.0.0.1"
    min_port: int = Field(default=8100, ge=1, le=65535)
    max_port: int = Field(default=8132, ge=1, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> PcapSocketConfig:
        if self.min_port > self.max_port:
            raise ValueError(f"min_port {self.min_port} is above max_port {self.max_port}")
        return self


class AgentFlowConfig(_Section):
    """``agent.flow``: capture probes of the agent."""

    sflow: SflowCollectorConfig = Field(default_factory=SflowCollectorConfig)
    pcapsocket: PcapSocketConfig = Field(default_factory=PcapSocketConfig)


class FlowConfig(_Section):
    """``flow``: flow table timers and how agents ship flows (DESIGN.md §2.5)."""

    #: Every this many seconds the flows that moved are sent, with the delta in LastUpdateMetric.
    update: Seconds = 60
    #: A flow idle this long is expired (FinishType TIMEOUT).
    expire: Seconds = 600
    #: Most live flows per capture; packets of further flows are dropped and counted.
    max_entries: int = Field(default=500_000, ge=1)
    #: Key mode of captures that do not set LayerKeyMode: L2 (MACs are part of the key) or L3.
    default_layer_key_mode: Literal["L2", "L3"] = "L2"
    #: How agents send flows to the analyzers: websocket (/ws/agent/flow) or udp (to the
    #: analyzer's listen port; JSON batches that fit a datagram).
    protocol: Literal["websocket", "udp"] = "websocket"


class AgentConfig(_Section):
    """``agent``: the per-host process that runs the probes."""

    listen: Address = Address("127.0.0.1", 8081)
    topology: TopologyConfig = Field(default_factory=TopologyConfig)
    flow: AgentFlowConfig = Field(default_factory=AgentFlowConfig)
    metadata: dict[str, Any] = Field(default_factory=dict)
    auth: AgentAuthConfig = Field(default_factory=AgentAuthConfig)


def default_data_dir() -> str:
    """``/var/lib/skydive`` for root; ``$XDG_DATA_HOME/skydive`` (``~/.local/share/skydive``)
    for other users, who cannot write under /var/lib."""
    if os.geteuid() == 0:
        return "/var/lib/skydive"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "skydive")


#: The storage entry that always exists, whether or not ``storage`` defines it: the embedded
#: store in ``analyzer.data_dir``.
EMBEDDED = "embedded"


class AnalyzerStorageUse(_Section):
    """``analyzer.topology`` / ``analyzer.flow``: which storage entry keeps the history."""

    #: Name of a ``storage`` entry ("embedded" always exists).
    backend: NonEmptyStr = EMBEDDED
    #: Writes (revisions or flow updates) buffered while the backend is slow or down; beyond
    #: it the oldest are dropped and counted in /api/status.
    max_buffer_size: int = Field(default=500_000, ge=1)


class AnalyzerConfig(_Section):
    """``analyzer``: the process that aggregates agents and serves the API and UI."""

    listen: Address = Address("127.0.0.1", 8082)
    auth: AnalyzerAuthConfig = Field(default_factory=AnalyzerAuthConfig)
    #: Directory of the default embedded store (topology history, flows, API resources).
    data_dir: NonEmptyStr = Field(default_factory=default_data_dir)
    topology: AnalyzerStorageUse = Field(default_factory=AnalyzerStorageUse)
    flow: AnalyzerStorageUse = Field(default_factory=AnalyzerStorageUse)


_EMBEDDED_KEYS = frozenset({"driver", "path", "max_age", "max_flows"})
_ES_KEYS = frozenset(
    {
        "driver",
        "hosts",
        "index_prefix",
        "username",
        "password",
        "ca_cert",
        "ssl_insecure",
        "index_entries_limit",
        "index_age_limit",
        "indices_to_keep",
        "bulk_maxdelay",
        "total_fields_limit",
    }
)


class StorageBackendConfig(_Section):
    """``storage.<name>``: one named storage backend (DESIGN.md §2.6).

    ``driver: embedded`` keeps everything in a local directory (``path``, default
    ``analyzer.data_dir``); ``driver: elasticsearch`` in an Elasticsearch cluster. Options of
    the other driver are refused, so a misplaced key is not silently ignored.
    """

    driver: Literal["embedded", "elasticsearch"]
    # -- embedded --
    path: str | None = None
    #: Flows, metric history and closed topology revisions older than this are deleted
    #: (seconds; 0: kept until max_flows).
    max_age: SecondsOrZero = 0
    #: Most flows kept (the most recent); 0: no limit.
    max_flows: int = Field(default=0, ge=0)
    # -- elasticsearch --
    hosts: StringList = Field(default_factory=lambda: ["http://127.0.0.1:9200"])
    index_prefix: str = Field(default="skydive_", pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    username: str = ""
    password: str = ""
    ca_cert: str | None = None
    ssl_insecure: bool = False
    index_entries_limit: int = Field(default=0, ge=0)
    index_age_limit: SecondsOrZero = 0
    indices_to_keep: int = Field(default=0, ge=0)
    bulk_maxdelay: float = Field(default=1.0, gt=0, le=300)
    total_fields_limit: int = Field(default=1000, ge=100)

    @model_validator(mode="before")
    @classmethod
    def _from_text_and_driver_keys(cls, data: Any) -> Any:
        # SKYDIVE_STORAGE_<NAME>='{driver: elasticsearch, hosts: ...}': a YAML mapping.
        data = yaml_mapping(data)
        if isinstance(data, dict):
            if "host" in data and "hosts" not in data:  # Skydive's single "host: HOST:PORT"
                data = {**data, "hosts": data["host"]}
                del data["host"]
            driver = data.get("driver")
            allowed = {"embedded": _EMBEDDED_KEYS, "elasticsearch": _ES_KEYS}.get(
                driver if isinstance(driver, str) else ""
            )
            if allowed is not None:
                for key in data:
                    if isinstance(key, str) and key not in allowed and key in cls.model_fields:
                        raise ValueError(f"{key}: not an option of driver {driver}")
        return data

    @field_validator("hosts")
    @classmethod
    def _urls(cls, hosts: list[str]) -> list[str]:
        if not hosts:
            raise ValueError("at least one host")
        return [h if "://" in h else f"http://{h}" for h in hosts]


class OvsConfig(_Section):
    """``ovs``: how the agent reaches Open vSwitch."""

    #: OVSDB server the ``ovsdb`` probe monitors: ``unix:PATH``, ``unix://PATH`` or
    #: ``tcp:HOST:PORT``.
    ovsdb: NonEmptyStr = "unix:///var/run/openvswitch/db.sock"

    @field_validator("ovsdb")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("unix:", "tcp:")):
            raise ValueError(f"{value!r}: expected unix:PATH, unix://PATH or tcp:HOST:PORT")
        return value


class LoggingConfig(_Section):
    """``logging``."""

    level: LogLevel = "INFO"


def _default_host_id() -> str:
    return socket.gethostname() or "localhost"


class Config(_Section):
    """The whole configuration of an agent, an analyzer or the client."""

    host_id: NonEmptyStr = Field(default_factory=_default_host_id)
    analyzers: AddressList = Field(default_factory=lambda: [Address("127.0.0.1", 8082)])
    analyzer: AnalyzerConfig = Field(default_factory=AnalyzerConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    ovs: OvsConfig = Field(default_factory=OvsConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    auth: dict[str, AuthBackendConfig] = Field(default_factory=dict)
    tls: TLSConfig = Field(default_factory=TLSConfig)
    storage: dict[str, StorageBackendConfig] = Field(default_factory=dict)

    @field_validator("auth", "storage", mode="before")
    @classmethod
    def _no_backends(cls, value: Any) -> Any:
        return {} if value is None else value  # "auth:" with its children commented out

    @model_validator(mode="after")
    def _storage_backends_exist(self) -> Config:
        for key, name in (
            ("analyzer.topology.backend", self.analyzer.topology.backend),
            ("analyzer.flow.backend", self.analyzer.flow.backend),
        ):
            if name != EMBEDDED and name not in self.storage:
                defined = ", ".join(sorted({EMBEDDED, *self.storage}))
                raise ValueError(f"{key}: no storage backend {name!r} (defined: {defined})")
        return self

    def storage_backend(self, name: str) -> StorageBackendConfig:
        """The ``storage`` entry ``name``; "embedded" is the default embedded store."""
        if name in self.storage:
            return self.storage[name]
        if name == EMBEDDED:
            return StorageBackendConfig(driver="embedded")
        raise KeyError(name)

    @model_validator(mode="after")
    def _auth_backends_exist(self) -> Config:
        selected = (
            ("analyzer.auth.api.backend", self.analyzer.auth.api.backend),
            ("analyzer.auth.cluster.backend", self.analyzer.auth.cluster.backend),
            ("agent.auth.api.backend", self.agent.auth.api.backend),
        )
        for key, name in selected:
            if name != NOAUTH and name not in self.auth:
                defined = ", ".join(sorted({NOAUTH, *self.auth}))
                raise ValueError(f"{key}: no auth backend {name!r} (defined: {defined})")
        return self
