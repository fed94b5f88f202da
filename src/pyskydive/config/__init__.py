"""Typed configuration: YAML file + ``SKYDIVE_*`` environment overrides -> frozen :class:`Config`.

Load once at the process root with :func:`load_config` and pass the sections down.  Every
error is a one-line :class:`ConfigError` naming the key.  ``etc/skydive.yml.default`` documents
every key with its default.
"""

from pyskydive.config.address import Address
from pyskydive.config.fields import KNOWN_PROBES
from pyskydive.config.loader import (
    check_config,
    dump_config,
    load_config,
    load_config_with_warnings,
)
from pyskydive.config.model import (
    AgentConfig,
    AnalyzerConfig,
    Config,
    LoggingConfig,
    NetlinkConfig,
    NetnsConfig,
    TopologyConfig,
)
from pyskydive.errors import ConfigError

__all__ = [
    "KNOWN_PROBES",
    "Address",
    "AgentConfig",
    "AnalyzerConfig",
    "Config",
    "ConfigError",
    "LoggingConfig",
    "NetlinkConfig",
    "NetnsConfig",
    "TopologyConfig",
    "check_config",
    "dump_config",
    "load_config",
    "load_config_with_warnings",
]
