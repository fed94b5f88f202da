"""Read the YAML file, apply ``SKYDIVE_*`` overrides, validate into :class:`Config`.

The shell around the pure model: file and YAML errors become one-line :class:`ConfigError`\\ s
naming the file, line and column; validation errors name the dotted key (see
:mod:`pyskydive.config.validation`).  An empty file, or no file at all, means all defaults.

YAML duplicate keys are an error here, unlike PyYAML's default of "last one wins", because a
silently ignored duplicate is exactly the kind of mistake loud validation is for.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from pyskydive.config.env import apply_env
from pyskydive.config.model import Config
from pyskydive.config.validation import to_config_error
from pyskydive.errors import ConfigError

__all__ = ["check_config", "dump_config", "load_config", "load_config_with_warnings"]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that rejects a key repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_error(path: str, exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        where = f"{path} line {mark.line + 1}, column {mark.column + 1}" if mark else path
        return ConfigError("", f"{where}: {' '.join(what.split())}")
    return ConfigError("", f"{path}: {' '.join(str(exc).split())}")


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"cannot read config file {path}: not UTF-8 text") from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError("", f"{path}: expected a mapping of keys at top level, got a {kind}")
    return data


def load_config_with_warnings(
    path: str | None, env: Mapping[str, str] | None = None
) -> tuple[Config, list[str]]:
    """Load ``path`` (None: defaults only) with overrides from ``env`` (default ``os.environ``).

    Returns the config and one line per ignored ``SKYDIVE_*`` variable; raises
    :class:`ConfigError` on any bad file, key or value.
    """
    data = {} if path is None else _read(path)
    merged, origins, warnings = apply_env(data, os.environ if env is None else env)
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:
        raise to_config_error(exc, origins) from exc
    return config, warnings


def load_config(path: str | None, env: Mapping[str, str] | None = None) -> Config:
    """Like :func:`load_config_with_warnings`, dropping the warnings."""
    return load_config_with_warnings(path, env)[0]


def check_config(path: str) -> Config:
    """``skydive config check FILE``: load ``path`` as a process would, or raise ConfigError."""
    return load_config(path)


def dump_config(config: Config) -> dict[str, Any]:
    """A plain JSON-able dict of ``config`` (addresses as ``host:port``), for logs and debug."""
    return config.model_dump(mode="json")
