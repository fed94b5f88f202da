"""The short textual forms the command line accepts, turned into API values (pure, no I/O).

- ``k1=v1, k2=v2`` metadata definitions, as Skydive's client ``--metadata`` flag: values are
  strings, surrounding double quotes are dropped, and a dotted key (``Neutron.VNI=12``) sets a
  nested key, as ``graph.Metadata.SetField`` does.
- the seed's probe paths: see :mod:`pyskydive.gremlin.probepath` (shared with the analyzer).
"""

from __future__ import annotations

from typing import Any

from pyskydive.gremlin.probepath import gremlin_string, probe_path_to_gremlin

__all__ = ["gremlin_string", "parse_metadata", "probe_path_to_gremlin"]


def parse_metadata(definition: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``"k1=v1, k2.sub=v2"`` -> ``{"k1": "v1", "k2": {"sub": "v2"}}`` (merged into ``base``).

    Raises ``ValueError`` with a one-line reason on a pair that is not ``k=v``.
    """
    metadata: dict[str, Any] = dict(base or {})
    if not definition.strip():
        return metadata
    for raw in definition.split(","):
        pair = raw.strip()
        key, sep, value = pair.partition("=")
        key, value = key.strip().strip('"'), value.strip().strip('"')
        if not sep or not key or "=" in value:
            raise ValueError(f"metadata must be k=v pairs separated by commas, got {pair!r}")
        _set_field(metadata, key, value)
    return metadata


def _set_field(metadata: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if any(not part for part in parts):
        raise ValueError(f"invalid metadata key {key!r}")
    node = metadata
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value
