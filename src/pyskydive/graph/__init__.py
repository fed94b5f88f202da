"""Pure in-memory graph engine: elements, indexes, change events and wire messages."""

from pyskydive.graph.elements import Edge, Element, Metadata, Node, get_field, now_ms
from pyskydive.graph.graph import (
    DEL_OP,
    SET_OP,
    BaseListener,
    Graph,
    GraphListener,
    Op,
    matches,
)

__all__ = [
    "DEL_OP",
    "SET_OP",
    "BaseListener",
    "Edge",
    "Element",
    "Graph",
    "GraphListener",
    "Metadata",
    "Node",
    "Op",
    "get_field",
    "matches",
    "now_ms",
]
