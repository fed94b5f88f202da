"""``SKYDIVE_*`` environment overrides, applied to the raw file data before validation.

A key's variable is ``SKYDIVE_`` + its dotted key upper-cased with dots as underscores
(``agent.topology.netns.run_path`` -> ``SKYDIVE_AGENT_TOPOLOGY_NETNS_RUN_PATH``).  Keys contain
underscores themselves, so a name cannot be split back into a key; instead the table of names
is built from the model's leaves (:func:`pyskydive.config.keys.leaf_keys`) and looked up.

The free-form ``agent.metadata`` takes one variable per entry, ``SKYDIVE_AGENT_METADATA_<NAME>``,
with ``<NAME>`` used exactly as written (environment names are case-sensitive).

Text is read as a YAML scalar (``"30"`` -> 30, ``"true"`` -> True) except for string keys, whose
text is kept as is; anything that is not a plain scalar stays a string, which the field
validators then split (lists) or parse (addresses).  Overrides win over the file.  Variables
starting with ``SKYDIVE_`` that match no key are ignored and reported as warnings, since the
client and other tools share the prefix.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

import yaml

from pyskydive.config.fields import closest
from pyskydive.config.keys import Leaf, LeafKind, leaf_keys

__all__ = ["ENV_PREFIX", "EnvOverrides", "apply_env", "env_name"]

ENV_PREFIX = "SKYDIVE_"

#: Where each overridden value came from: key path -> variable name (for error messages).
EnvOverrides = dict[tuple[str, ...], str]


def env_name(path: tuple[str, ...]) -> str:
    """The variable that overrides the key at ``path``."""
    return ENV_PREFIX + "_".join(path).upper()


@functools.cache
def _table() -> dict[str, Leaf]:
    table: dict[str, Leaf] = {}
    for leaf in leaf_keys():
        name = env_name(leaf.path)
        if name in table:  # two keys that differ only by '.' vs '_': a model bug
            raise RuntimeError(f"{leaf.dotted} and {table[name].dotted} share {name}")
        table[name] = leaf
    return table


def _closest_name(name: str, choices: list[str]) -> str | None:
    # Compare without the shared prefix, or every name looks alike.
    short = {choice.removeprefix(ENV_PREFIX): choice for choice in choices}
    hint = closest(name.removeprefix(ENV_PREFIX), short)
    return short[hint] if hint else None


def _scalar(text: str) -> object:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, bool | int | float) else text


def _put(data: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    """Set ``data[path]``, creating missing sections; leave non-mapping sections to fail."""
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            return  # the file's own bad value is reported by validation
        node = child
    node[path[-1]] = value


def apply_env(
    data: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, Any], EnvOverrides, list[str]]:
    """Return a copy of ``data`` with the overrides in ``env``, their origins, and warnings."""
    merged: dict[str, Any] = copy.deepcopy(dict(data))
    origins: EnvOverrides = {}
    warnings: list[str] = []
    table = _table()
    exact = {name: leaf for name, leaf in table.items() if leaf.kind is not LeafKind.MAPPING}
    prefixes = [(name + "_", m) for name, m in table.items() if m.kind is LeafKind.MAPPING]
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        text = env[name]
        leaf = exact.get(name)
        if leaf is not None:
            path = leaf.path
            value = text if leaf.kind is LeafKind.STRING else _scalar(text)
        else:
            found = [
                (*mapping.path, name[len(prefix) :])
                for prefix, mapping in prefixes
                if name.startswith(prefix) and len(name) > len(prefix)
            ]
            if not found:
                choices = [*exact, *(prefix + "<NAME>" for prefix, _ in prefixes)]
                hint = _closest_name(name, choices)
                tail = f" (did you mean {hint}?)" if hint else ""
                warnings.append(f"{name}: ignored, no such configuration key{tail}")
                continue
            path, value = found[0], _scalar(text)
        _put(merged, path, value)
        origins[path] = name
    return merged, origins, warnings
