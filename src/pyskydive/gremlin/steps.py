"""Built-in steps that select, filter and reduce: V, E, Has*, Dedup, Count, Limit, Range,
Sort, Values, ValueMap, Keys, Sum, As/Select (time travel is in :mod:`.timetravel`).

Every step is ``step(value, args, ctx) -> value`` (see :mod:`pyskydive.gremlin.registry`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from itertools import islice
from typing import Any

from pyskydive.graph import Edge, Element, Graph, Node
from pyskydive.graph.graph import INDEXED_KEYS
from pyskydive.gremlin.ast import Arg, Keyword
from pyskydive.gremlin.predicates import (
    Filter,
    absent_filter,
    compile_filter,
    field_of,
    freeze,
)
from pyskydive.gremlin.registry import StepContext
from pyskydive.gremlin.values import (
    AllNodes,
    EdgeList,
    GraphValue,
    ItemList,
    NodeList,
    PathList,
    Scalar,
    ValueList,
    to_wire,
)

__all__ = ["BASIC_STEPS", "as_edges", "as_items", "as_nodes", "kind_of"]

_INDEXED = frozenset(INDEXED_KEYS)


def kind_of(value: object) -> str:
    return str(getattr(value, "kind", type(value).__name__))


def as_nodes(value: object, ctx: StepContext) -> list[Node]:
    """The nodes a node step works on (the nodes of every path for ``ShortestPathTo``)."""
    if isinstance(value, NodeList):
        return value.items
    if isinstance(value, AllNodes):
        return list(value.graph.nodes.values())
    if isinstance(value, PathList):
        return list(value.nodes())
    raise ctx.error(f"needs nodes, got {kind_of(value)}")


def as_edges(value: object, ctx: StepContext) -> list[Edge]:
    if isinstance(value, EdgeList):
        return value.items
    raise ctx.error(f"needs edges, got {kind_of(value)}")


def as_items(value: object, ctx: StepContext) -> ItemList:
    """Any list-shaped value as an :class:`ItemList` (paths become their nodes)."""
    if isinstance(value, ItemList):
        return value
    if isinstance(value, AllNodes):
        return value.materialize()
    if isinstance(value, PathList):
        return NodeList(list(value.nodes()))
    raise ctx.error(f"does not apply to {kind_of(value)}")


def _string_args(args: tuple[Arg, ...], ctx: StepContext) -> list[str]:
    out: list[str] = []
    for a in args:
        if not isinstance(a, str):
            raise ctx.error(f"parameters have to be string keys, got {a!r}")
        out.append(a)
    return out


def _int_arg(arg: Arg, ctx: StepContext) -> int:
    if isinstance(arg, bool) or not isinstance(arg, int):
        raise ctx.error(f"{arg!r} is not an integer")
    return arg


# -- sources -----------------------------------------------------------------------------------


def _graph_of(value: object, ctx: StepContext) -> Graph:
    if not isinstance(value, GraphValue):
        raise ctx.error(f"must follow G or SubGraph(), not {kind_of(value)}")
    ctx.graph = value.graph
    return value.graph


def select_nodes(graph: Graph, flt: Filter, ctx: StepContext) -> list[Node]:
    """Nodes matching ``flt``: equality terms on indexed keys are looked up, not scanned."""
    indexed = {
        k: v
        for k, v in flt.terms.items()
        if k in _INDEXED and isinstance(v, Hashable) and not isinstance(v, bool)
    }
    if indexed:
        candidates = graph.get_nodes(indexed)  # answered by the indexes, no scan
        if flt.only_terms and len(indexed) == len(flt.clauses):
            return candidates
        return ctx.select(candidates, flt)
    return ctx.select(graph.nodes.values(), flt)


def step_v(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    graph = _graph_of(value, ctx)
    if not args:
        return AllNodes(graph)
    if len(args) == 1:
        node_id = args[0]
        if not isinstance(node_id, str):
            raise ctx.error("accepts only a string when there is only one argument")
        node = graph.get_node(node_id)
        if node is None:
            raise ctx.error(f"node '{node_id}' does not exist")
        return NodeList([node])
    return NodeList(select_nodes(graph, compile_filter(args, _pos(ctx)), ctx))


def step_e(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    graph = _graph_of(value, ctx)
    if not args:
        return EdgeList(list(graph.edges.values()))
    if len(args) == 1:
        edge_id = args[0]
        if not isinstance(edge_id, str):
            raise ctx.error("accepts only a string when there is only one argument")
        edge = graph.get_edge(edge_id)
        if edge is None:
            raise ctx.error(f"edge '{edge_id}' does not exist")
        return EdgeList([edge])
    flt = compile_filter(args, _pos(ctx))
    return EdgeList(ctx.select(graph.edges.values(), flt))


def _pos(ctx: StepContext) -> int:
    return ctx.step.position if ctx.step is not None else 0


# -- filters -----------------------------------------------------------------------------------


def _apply_filter(value: Any, flt: Filter, ctx: StepContext) -> Any:
    if isinstance(value, AllNodes):
        if flt.any_of:
            return NodeList(ctx.select(value.graph.nodes.values(), flt))
        return NodeList(select_nodes(value.graph, flt, ctx))
    items = as_items(value, ctx)
    return items.with_items(ctx.select(items.items, flt))


def step_has(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if not args:
        raise ctx.error("at least one parameter must be provided")
    return _apply_filter(value, compile_filter(args, _pos(ctx)), ctx)


def step_has_either(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if not args:
        raise ctx.error("at least one parameter must be provided")
    return _apply_filter(value, compile_filter(args, _pos(ctx), any_of=True), ctx)


def step_has_key(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if len(args) != 1 or not isinstance(args[0], str):
        raise ctx.error("takes one string key")
    return _apply_filter(value, compile_filter(args, _pos(ctx)), ctx)


def step_has_not(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if len(args) != 1 or not isinstance(args[0], str):
        raise ctx.error("takes one string key")
    return _apply_filter(value, absent_filter(args[0]), ctx)


# -- reshaping ---------------------------------------------------------------------------------


def _identity(item: object) -> Hashable:
    if isinstance(item, Element):
        return ("id", item.id)
    return freeze(to_wire(item))


def step_dedup(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    keys = _string_args(args, ctx)
    items = as_items(value, ctx)
    seen: set[Hashable] = set()
    out: list[Any] = []
    for item in ctx.iterate(items.items):
        if keys:
            present = [v for v in (field_of(item, k) for k in keys) if v is not None]
            if not present:
                out.append(item)
                continue
            mark = freeze(present)
        else:
            mark = _identity(item)
        if mark not in seen:
            seen.add(mark)
            out.append(item)
    return items.with_items(out)


def step_count(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if isinstance(value, AllNodes):
        return Scalar(len(value.graph.nodes))
    if isinstance(value, PathList):
        return Scalar(len(value.paths))
    if isinstance(value, ItemList):
        return Scalar(len(value.items))
    raise ctx.error(f"does not apply to {kind_of(value)}")


def _range(value: Any, start: int, stop: int, ctx: StepContext) -> Any:
    start, stop = max(start, 0), max(stop, 0)
    if isinstance(value, AllNodes):
        return NodeList(list(islice(value.graph.nodes.values(), start, stop)))
    if isinstance(value, PathList):
        return PathList(value.paths[start:stop])
    items = as_items(value, ctx)
    return items.with_items(items.items[start:stop])


def step_range(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if len(args) != 2:
        raise ctx.error("2 parameters must be provided")
    return _range(value, _int_arg(args[0], ctx), _int_arg(args[1], ctx), ctx)


def step_limit(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if len(args) != 1:
        raise ctx.error("1 parameter must be provided")
    return _range(value, 0, _int_arg(args[0], ctx), ctx)


def _sort_key(key: str) -> Any:
    def sort_key(item: object) -> tuple[int, Any]:
        v = field_of(item, key)
        if v is None:
            return (0, 0)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return (1, v)
        if isinstance(v, str):
            return (2, v)
        return (3, repr(v))

    return sort_key


def step_sort(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    descending, key = False, "CreatedAt"
    if len(args) == 1 and isinstance(args[0], str):
        key = args[0]
    elif len(args) == 2 and isinstance(args[0], Keyword) and isinstance(args[1], str):
        if args[0].name not in ("ASC", "DESC"):
            raise ctx.error("the order has to be ASC or DESC")
        descending, key = args[0].name == "DESC", args[1]
    elif args:
        raise ctx.error("parameters have to be an order (ASC/DESC) and a string key")
    items = as_items(value, ctx)
    ctx.check()
    return items.with_items(sorted(items.items, key=_sort_key(key), reverse=descending))


def _iter_items(value: Any, ctx: StepContext) -> Iterable[Any]:
    if isinstance(value, AllNodes):
        return ctx.iterate(value.graph.nodes.values())
    return ctx.iterate(as_items(value, ctx).items)


def step_values(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    keys = _string_args(args, ctx)
    if len(keys) != 1:
        raise ctx.error("takes one key")
    out: list[Any] = []
    for item in _iter_items(value, ctx):
        v = field_of(item, keys[0])
        if v is None or (isinstance(v, list | dict) and not v):
            continue
        out.append(v)
    return ValueList(out)


def _all_fields(item: object) -> dict[str, Any]:
    if isinstance(item, Element):
        return dict(item.metadata)
    if isinstance(item, dict):
        return dict(item)
    wire = to_wire(item)
    return dict(wire) if isinstance(wire, dict) else {}


def step_value_map(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    keys = _string_args(args, ctx)
    out: list[Any] = []
    for item in _iter_items(value, ctx):
        if not keys:
            out.append(_all_fields(item))
            continue
        m: dict[str, Any] = {}
        for k in keys:
            v = field_of(item, k)
            if v is not None:
                m[k] = v
        out.append(m)
    return ValueList(out)


def _leaf_keys(d: dict[str, Any], prefix: str, out: list[str]) -> None:
    for k in sorted(d):
        v = d[k]
        if isinstance(v, dict) and v:
            _leaf_keys(v, f"{prefix}{k}.", out)
        else:
            out.append(prefix + k)


def step_keys(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if args:
        raise ctx.error("takes no parameter")
    seen: dict[str, None] = {}
    for item in _iter_items(value, ctx):
        keys: list[str] = []
        _leaf_keys(_all_fields(item), "", keys)
        for k in keys:
            seen.setdefault(k, None)
    return ValueList(list(seen))


def step_sum(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    keys = _string_args(args, ctx)
    if len(keys) != 1:
        raise ctx.error("requires 1 parameter")
    total: int | float = 0
    for item in _iter_items(value, ctx):
        v = field_of(item, keys[0])
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ctx.error(f"{keys[0]} is not a number: {v!r}")
        total += v
    return Scalar(total)


def step_as(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    names = _string_args(args, ctx)
    if len(names) != 1:
        raise ctx.error("parameter has to be a string key")
    ctx.saved[names[0]] = list(as_items(value, ctx).items)
    return value


def step_select(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    names = _string_args(args, ctx)
    if not names:
        raise ctx.error("requires at least one key")
    out: list[Any] = []
    for name in names:
        if name not in ctx.saved:
            raise ctx.error(f"key {name} not registered, register it with As()")
        out.extend(ctx.saved[name])
    if all(isinstance(i, Node) for i in out):
        return NodeList(out)
    if all(isinstance(i, Edge) for i in out):
        return EdgeList(out)
    return ValueList(out)


BASIC_STEPS = {
    "V": step_v,
    "E": step_e,
    "HAS": step_has,
    "HASEITHER": step_has_either,
    "HASKEY": step_has_key,
    "HASNOT": step_has_not,
    "DEDUP": step_dedup,
    "COUNT": step_count,
    "RANGE": step_range,
    "LIMIT": step_limit,
    "SORT": step_sort,
    "VALUES": step_values,
    "VALUEMAP": step_value_map,
    "KEYS": step_keys,
    "SUM": step_sum,
    "AS": step_as,
    "SELECT": step_select,
}
