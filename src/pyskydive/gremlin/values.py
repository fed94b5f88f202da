"""What a traversal carries from one step to the next.

- :class:`GraphValue`: ``G``, ``SubGraph()``; serialised as ``[{"Nodes": [...], "Edges": [...]}]``
- :class:`AllNodes`: ``V()``, lazy, so that ``Has`` can use the indexes; a list of node dicts
- :class:`NodeList`: node steps; a list of node wire dicts
- :class:`EdgeList`: ``E()``, ``OutE()``, ...; a list of edge wire dicts
- :class:`PathList`: ``ShortestPathTo()``; a list of lists of node dicts
- :class:`ValueList`: ``Values()``, ``ValueMap()``, ``Keys()``; the list itself
- :class:`Scalar`: ``Count()``, ``Sum()``; the bare number

:class:`ItemList` is the base of every list of items that generic steps (``Has``, ``Dedup``,
``Count``, ``Limit``, ``Range``, ``Sort``, ``Values``, ...) work on; an extension (the flow
module) subclasses it for its own objects, which then only need ``get(key)`` and ``to_wire()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from pyskydive.graph import Edge, Graph, Node

__all__ = [
    "AllNodes",
    "EdgeList",
    "Getter",
    "GraphValue",
    "ItemList",
    "NodeList",
    "PathList",
    "Scalar",
    "ValueList",
    "WireValue",
    "to_wire",
]


@runtime_checkable
class Getter(Protocol):
    """An item predicates can test: ``get("A.B")`` returns the value or ``None`` if absent."""

    def get(self, key: str) -> Any: ...


@runtime_checkable
class WireValue(Protocol):
    """Anything that knows its JSON form (nodes, edges, traversal values, flows)."""

    def to_wire(self) -> Any: ...


def to_wire(value: object) -> Any:
    """The JSON-able form of a traversal value or item."""
    if isinstance(value, WireValue):
        return value.to_wire()
    return value


class ItemList:
    """A list of items (nodes, edges, flows, ...); ``with_items`` keeps the subclass."""

    kind = "items"
    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def with_items(self, items: list[Any]) -> ItemList:
        return type(self)(items)

    def to_wire(self) -> Any:
        return [to_wire(i) for i in self.items]


class NodeList(ItemList):
    kind = "nodes"
    __slots__ = ()
    items: list[Node]

    def to_wire(self) -> Any:
        return [n.to_wire() for n in self.items]


class EdgeList(ItemList):
    kind = "edges"
    __slots__ = ()
    items: list[Edge]

    def to_wire(self) -> Any:
        return [e.to_wire() for e in self.items]


class ValueList(ItemList):
    """Plain JSON values (``Values``, ``ValueMap``, ``Keys``); dicts can still be filtered."""

    kind = "values"
    __slots__ = ()

    def to_wire(self) -> Any:
        return self.items


class AllNodes:
    """Every node of ``graph``, not yet materialised (``V()``)."""

    kind = "nodes"
    __slots__ = ("graph",)

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def materialize(self) -> NodeList:
        return NodeList(list(self.graph.nodes.values()))

    def to_wire(self) -> Any:
        return [n.to_wire() for n in self.graph.nodes.values()]


class GraphValue:
    """A whole graph: the start ``G`` or the result of ``SubGraph()``."""

    kind = "graph"
    __slots__ = ("graph",)

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def to_wire(self) -> Any:
        return [self.graph.to_wire()]


class PathList:
    kind = "paths"
    __slots__ = ("paths",)

    def __init__(self, paths: list[list[Node]]) -> None:
        self.paths = paths

    def nodes(self) -> Iterable[Node]:
        for path in self.paths:
            yield from path

    def to_wire(self) -> Any:
        return [[n.to_wire() for n in path] for path in self.paths]


class Scalar:
    kind = "value"
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def to_wire(self) -> Any:
        return self.value
