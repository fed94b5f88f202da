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

import socket
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pyskydive.config.address import Address
from pyskydive.config.fields import AddressList, LogLevel, NonEmptyStr, ProbeList, Seconds

__all__ = [
    "AgentConfig",
    "AnalyzerConfig",
    "Config",
    "LoggingConfig",
    "NetlinkConfig",
    "NetnsConfig",
    "TopologyConfig",
]


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

    probes: ProbeList = Field(default_factory=lambda: ["netlink", "netns"])
    netns: NetnsConfig = Field(default_factory=NetnsConfig)
    netlink: NetlinkConfig = Field(default_factory=NetlinkConfig)


class AgentConfig(_Section):
    """``agent``: the per-host process that runs the probes."""

    listen: Address = Address("127.0.0.1", 8081)
    topology: TopologyConfig = Field(default_factory=TopologyConfig)
    metadata: dict[str, Any] = Field(default_factory=dict)


class AnalyzerConfig(_Section):
    """``analyzer``: the process that aggregates agents and serves the API and UI."""

    listen: Address = Address("127.0.0.1", 8082)


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
