"""Skydive's Gremlin dialect over the in-memory graph (DESIGN.md §2.4).

::

    parse(text) -> Query                       # QuerySyntaxError(position) on bad input
    evaluate(query, graph, registry=..., timeout=30.0, now_ms=None, history=None)
                                               # history: G.At(t[, d]) (see .timetravel)
    to_dot(result) -> str                      # Graphviz for graph-shaped results
    StepRegistry().register("Flows", handler)  # extension steps (see .registry)

The package is pure: no I/O, no threads, no global state. Modules: ``_lexer``/``parser``
(text to :mod:`.ast`), ``predicates`` (filters), ``values`` (what flows between steps),
``steps``/``walk`` (built-in steps), ``timeforms``/``timetravel`` (``At``/``Context``),
``registry`` (extension steps), ``evaluator``, ``dot``.
"""

from pyskydive.gremlin.ast import Arg, Call, Keyword, Query, Step
from pyskydive.gremlin.dot import to_dot
from pyskydive.gremlin.errors import QueryError, QuerySyntaxError
from pyskydive.gremlin.evaluator import evaluate, run
from pyskydive.gremlin.parser import MAX_DEPTH, MAX_QUERY_LENGTH, parse
from pyskydive.gremlin.predicates import Filter, compile_filter, field_of
from pyskydive.gremlin.registry import StepContext, StepHandler, StepRegistry
from pyskydive.gremlin.steps import as_edges, as_items, as_nodes
from pyskydive.gremlin.timeforms import TimeWindow, time_window
from pyskydive.gremlin.timetravel import HistorySource, query_window
from pyskydive.gremlin.values import (
    AllNodes,
    EdgeList,
    Getter,
    GraphValue,
    ItemList,
    NodeList,
    PathList,
    Scalar,
    ValueList,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_QUERY_LENGTH",
    "AllNodes",
    "Arg",
    "Call",
    "EdgeList",
    "Filter",
    "Getter",
    "GraphValue",
    "HistorySource",
    "ItemList",
    "Keyword",
    "NodeList",
    "PathList",
    "Query",
    "QueryError",
    "QuerySyntaxError",
    "Scalar",
    "Step",
    "StepContext",
    "StepHandler",
    "StepRegistry",
    "TimeWindow",
    "ValueList",
    "as_edges",
    "as_items",
    "as_nodes",
    "compile_filter",
    "evaluate",
    "field_of",
    "parse",
    "query_window",
    "run",
    "time_window",
    "to_dot",
]
