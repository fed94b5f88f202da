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
from pyskydive.graph.history import HistoryRecorder, MemoryHistory, graph_from_wire

__all__ = [
    "DEL_OP",
    "SET_OP",
    "BaseListener",
    "Edge",
    "Element",
    "Graph",
    "GraphListener",
    "HistoryRecorder",
    "MemoryHistory",
    "Metadata",
    "Node",
    "Op",
    "get_field",
    "graph_from_wire",
    "matches",
    "now_ms",
]
