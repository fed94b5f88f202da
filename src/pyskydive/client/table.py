"""Readable tables of API results for ``skydive client`` (pure: values in, text out).

Each resource has its columns (a column is a title and a dotted path into the object); a
Gremlin result gets the table that fits its shape: nodes (ID, Name, Type, Host), edges (ID,
RelationType, Parent, Child), graphs (their nodes, then their edges), paths (one line of
names per path), a bare number or string (itself), a list of scalars (one per line), other
objects (one column per key).  ``--format json`` bypasses all of this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

__all__ = ["RESOURCE_COLUMNS", "format_cell", "format_query_result", "format_status", "render"]

Column = tuple[str, str]  # (title, dotted path)

_NODE: tuple[Column, ...] = (
    ("ID", "ID"),
    ("Name", "Metadata.Name"),
    ("Type", "Metadata.Type"),
    ("Host", "Host"),
)
_EDGE: tuple[Column, ...] = (
    ("ID", "ID"),
    ("RelationType", "Metadata.RelationType"),
    ("Parent", "Parent"),
    ("Child", "Child"),
    ("Host", "Host"),
)

#: Columns of each CRUD resource.
RESOURCE_COLUMNS: dict[str, tuple[Column, ...]] = {
    "capture": (
        ("UUID", "UUID"),
        ("Name", "Name"),
        ("GremlinQuery", "GremlinQuery"),
        ("BPFFilter", "BPFFilter"),
        ("Type", "Type"),
        ("Count", "Count"),
    ),
    "alert": (
        ("UUID", "UUID"),
        ("Name", "Name"),
        ("Expression", "Expression"),
        ("Trigger", "Trigger"),
        ("Action", "Action"),
    ),
    "noderule": (
        ("UUID", "UUID"),
        ("Name", "Name"),
        ("Action", "Action"),
        ("Query", "Query"),
        ("Metadata", "Metadata"),
    ),
    "edgerule": (
        ("UUID", "UUID"),
        ("Name", "Name"),
        ("Src", "Src"),
        ("Dst", "Dst"),
        ("Metadata", "Metadata"),
    ),
    "node": _NODE,
    "edge": _EDGE,
}

_MAX_CELL = 80


def format_cell(value: Any) -> str:
    """One table cell: strings as is, None empty, the rest as compact JSON; one line."""
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = str(value)
    else:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    text = " ".join(text.split()) if "\n" in text or "\t" in text else text
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 3] + "..."


def _lookup(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def render(columns: Sequence[Column], rows: Iterable[Any]) -> str:
    """An aligned table (header, then one line per row) with ``columns`` picked from rows."""
    titles = [title for title, _ in columns]
    cells = [[format_cell(_lookup(row, path)) for _, path in columns] for row in rows]
    widths = [max([len(t), *(len(r[i]) for r in cells)]) for i, t in enumerate(titles)]
    lines = [titles, *cells]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _is_node(value: Any) -> bool:
    return isinstance(value, Mapping) and "ID" in value and "Metadata" in value


def _is_edge(value: Any) -> bool:
    return _is_node(value) and "Parent" in value and "Child" in value


def _is_graph(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and ("Nodes" in value or "Edges" in value)
        and all(isinstance(value.get(key) or [], list) for key in ("Nodes", "Edges"))
    )


def _graph_tables(graph: Mapping[str, Any]) -> list[str]:
    nodes, edges = graph.get("Nodes") or [], graph.get("Edges") or []
    out = [f"Nodes ({len(nodes)}):", render(_NODE, nodes)]
    if edges:
        out += ["", f"Edges ({len(edges)}):", render(_EDGE, edges)]
    return out


def _path_line(path: Sequence[Any]) -> str:
    names = []
    for step in path:
        if _is_node(step):
            names.append(format_cell(_lookup(step, "Metadata.Name") or step.get("ID")))
        else:
            names.append(format_cell(step))
    return " -> ".join(names)


def _generic(rows: Sequence[Mapping[str, Any]]) -> str:
    keys: list[str] = []
    for row in rows:
        keys.extend(key for key in row if key not in keys)
    return render([(key, key) for key in keys], rows)


def format_query_result(result: Any) -> str:
    """The table for a Gremlin query result, chosen by its shape."""
    if not isinstance(result, list):
        if isinstance(result, Mapping):
            if _is_graph(result):
                return "\n".join(_graph_tables(result))
            return render([("Key", "Key"), ("Value", "Value")], _pairs(result))
        return format_cell(result) if not isinstance(result, str) else result
    if not result:
        return "(no result)"
    if all(_is_graph(item) for item in result):
        out: list[str] = []
        for index, graph in enumerate(result):
            if index:
                out.append("")
            out += _graph_tables(graph)
        return "\n".join(out)
    if all(_is_edge(item) for item in result):
        return render(_EDGE, result)
    if all(_is_node(item) for item in result):
        return render(_NODE, result)
    if all(isinstance(item, list) for item in result):
        return "\n".join(_path_line(item) for item in result)
    if all(isinstance(item, Mapping) for item in result):
        return _generic(result)
    return "\n".join(format_cell(item) if not isinstance(item, str) else item for item in result)


def _pairs(mapping: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"Key": key, "Value": value} for key, value in mapping.items()]


def format_status(status: Mapping[str, Any]) -> str:
    """``GET /api/status``: its scalar fields as ``Key: value`` lines, then each map of peers
    (Agents, Subscribers, ...) as a table keyed by the peer."""
    scalars = {k: v for k, v in status.items() if not isinstance(v, Mapping | list)}
    width = max((len(k) for k in scalars), default=0)
    out = [f"{(k + ':').ljust(width + 1)} {format_cell(v)}".rstrip() for k, v in scalars.items()]
    for key, value in status.items():
        if key in scalars:
            continue
        out.append("")
        if (
            isinstance(value, Mapping)
            and value
            and all(isinstance(v, Mapping) for v in value.values())
        ):
            rows = [{"ID": name, **peer} for name, peer in value.items()]
            out += [f"{key} ({len(value)}):", _generic(rows)]
        elif isinstance(value, Mapping | list) and not value:
            out.append(f"{key}: none")
        else:
            out.append(f"{key}: {format_cell(value)}")
    return "\n".join(out)
