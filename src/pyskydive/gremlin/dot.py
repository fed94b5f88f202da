"""Graphviz DOT rendering of a graph-shaped query result (``Accept: text/vnd.graphviz``).

Accepts what :func:`~pyskydive.gremlin.evaluate` returns for ``G`` or ``SubGraph()``
(``[{"Nodes": [...], "Edges": [...]}]``), a bare ``{"Nodes", "Edges"}``, a list of node dicts,
or a list of paths (lists of node dicts, from ``ShortestPathTo``). Nodes are labelled with
their ``Name``, edges with their ``RelationType``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyskydive.errors import QueryError

__all__ = ["to_dot"]


def _quote(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _split(result: Any) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    if (
        isinstance(result, list)
        and len(result) == 1
        and isinstance(result[0], Mapping)
        and "Nodes" in result[0]
    ):
        result = result[0]
    if isinstance(result, Mapping) and "Nodes" in result:
        return list(result.get("Nodes") or []), list(result.get("Edges") or [])
    if isinstance(result, list):
        nodes: list[Mapping[str, Any]] = []
        for item in result:
            if isinstance(item, list):
                nodes.extend(i for i in item if isinstance(i, Mapping))
            elif isinstance(item, Mapping) and "ID" in item:
                nodes.append(item)
            else:
                raise QueryError("the result is not a graph, nodes or paths")
        return nodes, []
    raise QueryError("the result is not a graph, nodes or paths")


def to_dot(result: Any) -> str:
    """DOT text for ``result``; ``QueryError`` if it is not graph-shaped."""
    nodes, edges = _split(result)
    lines = ["digraph g {"]
    seen: set[str] = set()
    for node in nodes:
        node_id = str(node.get("ID", ""))
        if node_id in seen:
            continue
        seen.add(node_id)
        md = node.get("Metadata") or {}
        label = md.get("Name", node_id) if isinstance(md, Mapping) else node_id
        lines.append(f"  {_quote(node_id)} [label={_quote(label)}];")
    for edge in edges:
        md = edge.get("Metadata") or {}
        label = md.get("RelationType", "") if isinstance(md, Mapping) else ""
        lines.append(
            f"  {_quote(edge.get('Parent', ''))} -> {_quote(edge.get('Child', ''))}"
            f" [label={_quote(label)}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"
