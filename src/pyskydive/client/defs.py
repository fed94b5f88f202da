"""The short textual forms the command line accepts, turned into API values (pure, no I/O).

- ``k1=v1, k2=v2`` metadata definitions, as Skydive's client ``--metadata`` flag: values are
  strings, surrounding double quotes are dropped, and a dotted key (``Neutron.VNI=12``) sets a
  nested key, as ``graph.Metadata.SetField`` does.
- the seed's probe paths (``host1[Type=host]/br1[Type=ovsbridge]``, ``*`` for any name):
  each ``/``-separated segment is a node (its name, then ``[k=v,...]`` metadata), and each
  segment after the first is a neighbour of the previous one; the equivalent Gremlin is
  ``G.V().Has('Name', 'host1', 'Type', 'host').Out('Name', 'br1', 'Type', 'ovsbridge')``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["gremlin_string", "parse_metadata", "probe_path_to_gremlin"]

_SEGMENT_RE = re.compile(r"\s*([^\[\]/]*?)\s*(?:\[([^\[\]]*)\])?\s*")


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


def gremlin_string(value: str) -> str:
    """``value`` as a Gremlin string literal."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot quote {value!r} in a Gremlin query (it has both kinds of quotes)")


def _segment_filter(segment: str) -> str:
    match = _SEGMENT_RE.fullmatch(segment)
    if match is None:
        raise ValueError(f"invalid probe path segment {segment!r} (expected NAME[k=v,...])")
    name, attrs = match.group(1), match.group(2)
    if not name and attrs is None:
        raise ValueError(f"empty probe path segment in {segment!r}")
    metadata: dict[str, Any] = {}
    if name and name != "*":
        metadata["Name"] = name
    if attrs:
        for raw in attrs.split(","):
            key, sep, value = raw.partition("=")
            key, value = key.strip().strip('"'), value.strip().strip('"')
            if not sep or not key:
                raise ValueError(f"invalid attribute {raw.strip()!r} in probe path (expected k=v)")
            metadata[key] = value
    return ", ".join(f"{gremlin_string(k)}, {gremlin_string(v)}" for k, v in metadata.items())


def probe_path_to_gremlin(path: str) -> str:
    """Translate a seed probe path to the equivalent Gremlin query (``ValueError`` if bad)."""
    segments = [segment for segment in path.strip().split("/")]
    if not path.strip() or any(not segment.strip() for segment in segments):
        raise ValueError(f"invalid probe path {path!r} (expected HOST[k=v]/NAME[k=v]/...)")
    query = "G.V()"
    for index, segment in enumerate(segments):
        args = _segment_filter(segment)
        if index == 0:
            query += f".Has({args})" if args else ""
        else:
            query += f".Out({args})"
    return query
