"""The seed's probe paths, translated to Gremlin (pure).

``host1[Type=host]/br1[Type=ovsbridge]`` (``*`` for any name): each ``/``-separated segment is
a node (its name, then ``[k=v,...]`` metadata), and each segment after the first is a neighbour
of the previous one. The equivalent Gremlin is
``G.V().Has('Name', 'host1', 'Type', 'host').Out('Name', 'br1', 'Type', 'ovsbridge')``.
DESIGN.md §2.4: a probe path is accepted wherever a capture query is.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["capture_query", "gremlin_string", "is_probe_path", "probe_path_to_gremlin"]

_SEGMENT_RE = re.compile(r"\s*([^\[\]/]*?)\s*(?:\[([^\[\]]*)\])?\s*")


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
        if index == 0:  # the first segment is a host: ``*`` alone means any host
            query += f".Has({args})" if args else ".Has('Type', 'host')"
        else:
            query += f".Out({args})"
    return query


def is_probe_path(text: str) -> bool:
    """Probe paths have no parentheses or quotes and do not start like Gremlin (``G``/``G.``);
    anything else is read as Gremlin, whose parser then explains what is wrong with it."""
    stripped = text.strip()
    if stripped in ("G", "g") or stripped[:2] in ("G.", "g."):
        return False
    return not any(c in stripped for c in "()'\"")


def capture_query(text: str) -> str:
    """The Gremlin of a capture's query, which may be written as a probe path."""
    return probe_path_to_gremlin(text) if is_probe_path(text) else text
