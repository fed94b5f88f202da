"""Built-in steps that walk the graph: Out/In/Both, OutE/InE/BothE, OutV/InV/BothV,
ShortestPathTo, SubGraph, Descendants, Ascendants and Neighbors.

Edges go from ``Parent`` to ``Child``. ``Out()`` follows them to the children, ``In()`` to
the parents; on edges ``OutV()`` gives the **child** and ``InV()`` the **parent** (Skydive's
convention). ``Both()`` yields one node per edge, duplicates included, until ``Dedup()``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pyskydive.graph import Edge, Graph, Node
from pyskydive.graph.graph import INDEXED_KEYS
from pyskydive.gremlin.ast import Arg, Call
from pyskydive.gremlin.predicates import Filter, compile_filter
from pyskydive.gremlin.registry import StepContext
from pyskydive.gremlin.steps import as_edges, as_nodes, select_nodes
from pyskydive.gremlin.values import EdgeList, GraphValue, NodeList, PathList

__all__ = ["WALK_STEPS"]

_OWNERSHIP = Filter([("RelationType", lambda v: v == "ownership")])


def _filter(args: tuple[Arg, ...], ctx: StepContext) -> Filter | None:
    if not args:
        return None
    return compile_filter(args, ctx.step.position if ctx.step else 0)


def _adjacent(
    value: Any, args: tuple[Arg, ...], ctx: StepContext, *, out: bool, into: bool
) -> NodeList:
    """Neighbour nodes through out-edges (children) and/or in-edges (parents), one per edge,
    kept when they match the step's filter."""
    flt, g = _filter(args, ctx), ctx.graph
    nodes = g.nodes
    found: list[Node] = []
    for n in ctx.iterate(as_nodes(value, ctx)):
        if out:
            for e in g.out_edges(n.id):
                child = nodes[e.child]
                if flt is None or flt(child):
                    found.append(child)
        if into:
            for e in g.in_edges(n.id):
                parent = nodes[e.parent]
                if flt is None or flt(parent):
                    found.append(parent)
    return NodeList(found)


def step_out(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    return _adjacent(value, args, ctx, out=True, into=False)


def step_in(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    return _adjacent(value, args, ctx, out=False, into=True)


def step_both(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    return _adjacent(value, args, ctx, out=True, into=True)


def step_out_e(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    flt, g = _filter(args, ctx), ctx.graph
    out: list[Edge] = []
    for n in ctx.iterate(as_nodes(value, ctx)):
        out.extend(e for e in g.out_edges(n.id) if flt is None or flt(e))
    return EdgeList(out)


def step_in_e(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    flt, g = _filter(args, ctx), ctx.graph
    out: list[Edge] = []
    for n in ctx.iterate(as_nodes(value, ctx)):
        out.extend(e for e in g.in_edges(n.id) if flt is None or flt(e))
    return EdgeList(out)


def step_both_e(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    flt, g = _filter(args, ctx), ctx.graph
    out: list[Edge] = []
    for n in ctx.iterate(as_nodes(value, ctx)):
        out.extend(e for e in g.out_edges(n.id) if flt is None or flt(e))
        out.extend(e for e in g.in_edges(n.id) if flt is None or flt(e))
    return EdgeList(out)


def _edge_ends(value: Any, args: tuple[Arg, ...], ctx: StepContext, ends: str) -> Any:
    flt, nodes = _filter(args, ctx), ctx.graph.nodes
    out: list[Node] = []
    for e in ctx.iterate(as_edges(value, ctx)):
        for node_id in (e.parent, e.child) if ends == "both" else (getattr(e, ends),):
            node = nodes.get(node_id)
            if node is not None and (flt is None or flt(node)):
                out.append(node)
    return NodeList(out)


def step_out_v(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    return _edge_ends(value, args, ctx, "child")


def step_in_v(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    return _edge_ends(value, args, ctx, "parent")


def step_both_v(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    return _edge_ends(value, args, ctx, "both")


# -- paths -------------------------------------------------------------------------------------


def _metadata_arg(arg: Arg, ctx: StepContext) -> Filter:
    if not isinstance(arg, Call) or arg.name != "METADATA":
        raise ctx.error(f"expects Metadata(...) parameters, got {arg!r}")
    return compile_filter(arg.args, arg.position)


def shortest_path(
    g: Graph, start: Node, target: Filter, edges: Filter | None, ctx: StepContext
) -> list[Node]:
    """Nodes from ``start`` to the nearest node matching ``target`` (edges in any direction).

    Breadth first; among equally short paths, ownership links are followed first. A node is
    tested when it is queued, not when it is taken out, so the last (largest) level of the
    search is never expanded; a target given by indexed keys is a set looked up once.
    """
    targets = _target_ids(g, target, ctx)

    def is_target(node_id: str) -> bool:
        return node_id in targets if targets is not None else bool(target(nodes[node_id]))

    nodes = g.nodes
    previous: dict[str, str | None] = {start.id: None}

    def path_to(node_id: str) -> list[Node]:
        path: list[Node] = []
        cursor: str | None = node_id
        while cursor is not None:
            path.append(nodes[cursor])
            cursor = previous[cursor]
        path.reverse()
        return path

    if is_target(start.id):
        return [start]
    if targets is not None and len(targets) <= _BIDIRECTIONAL_MAX_TARGETS:
        return _bidirectional(g, start.id, targets, edges, ctx)
    queue = deque([start.id])
    steps = 0
    while queue:
        steps += 1
        if steps % 512 == 0:
            ctx.check()
        current = queue.popleft()
        # Ties: Skydive walks edges in map order; we prefer ownership (containment) links,
        # which is also the path the original returned in the reference capture.
        later: list[str] = []
        for e, other in g.links(current):
            if other in previous or (edges is not None and not edges(e)):
                continue
            if e.metadata.get("RelationType") == "ownership":
                previous[other] = current
                if is_target(other):
                    return path_to(other)
                queue.append(other)
            else:
                later.append(other)
        for other in later:
            if other not in previous:
                previous[other] = current
                if is_target(other):
                    return path_to(other)
                queue.append(other)
    return []


#: Up to this many known targets, search from both ends at once: a six-hop path then costs
#: two three-hop balls instead of one six-hop ball (the last levels dominate).
_BIDIRECTIONAL_MAX_TARGETS = 4096


def _bidirectional(
    g: Graph, start: str, targets: set[str], edges: Filter | None, ctx: StepContext
) -> list[Node]:
    """Shortest path from ``start`` to any of ``targets``, growing the smaller side a level
    at a time; ownership links are followed first, as in the one-sided search."""
    sides: tuple[dict[str, tuple[str | None, int]], dict[str, tuple[str | None, int]]] = (
        {start: (None, 0)},
        {t: (None, 0) for t in targets},
    )
    frontiers: list[list[str]] = [[start], sorted(targets)]
    steps = 0
    while frontiers[0] and frontiers[1]:
        side = 0 if len(frontiers[0]) <= len(frontiers[1]) else 1
        mine, other = sides[side], sides[1 - side]
        best: tuple[int, str] | None = None
        nxt: list[str] = []
        for current in frontiers[side]:
            steps += 1
            if steps % 512 == 0:
                ctx.check()
            depth = mine[current][1] + 1
            links = sorted(
                g.links(current),
                key=lambda link: link[0].metadata.get("RelationType") != "ownership",
            )
            for e, node_id in links:
                if node_id in mine or (edges is not None and not edges(e)):
                    continue
                mine[node_id] = (current, depth)
                nxt.append(node_id)
                if node_id in other:
                    total = depth + other[node_id][1]
                    if best is None or total < best[0]:
                        best = (total, node_id)
        if best is not None:
            meet = best[1]
            forward, backward = (sides[0], sides[1])
            path: list[str] = []
            cursor: str | None = meet
            while cursor is not None:
                path.append(cursor)
                cursor = forward[cursor][0]
            path.reverse()
            cursor = backward[meet][0]
            while cursor is not None:
                path.append(cursor)
                cursor = backward[cursor][0]
            return [g.nodes[i] for i in path]
        frontiers[side] = nxt
    return []


def _ownership_last_is_false(link: tuple[Edge, str]) -> bool:
    """Sort key putting ownership links first (False sorts before True)."""
    return link[0].metadata.get("RelationType") != "ownership"


def _target_ids(g: Graph, target: Filter, ctx: StepContext) -> set[str] | None:
    """The IDs of every target when the filter has an indexed term (cheap); else None."""
    if not any(k in INDEXED_KEYS for k in target.terms):
        return None
    return {n.id for n in select_nodes(g, target, ctx)}


def step_shortest_path_to(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    if not 1 <= len(args) <= 2:
        raise ctx.error("accepts only 1 or 2 Metadata(...) parameters")
    target = _metadata_arg(args[0], ctx)
    edges = _metadata_arg(args[1], ctx) if len(args) == 2 else None
    paths: list[list[Node]] = []
    for n in as_nodes(value, ctx):
        path = shortest_path(ctx.graph, n, target, edges, ctx)
        if path:
            paths.append(path)
    return PathList(paths)


def step_sub_graph(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    g = ctx.graph
    sub = Graph(g.host, clock=g.now)
    if isinstance(value, EdgeList):
        edges = value.items
        for e in edges:
            for node_id in (e.parent, e.child):
                node = g.nodes.get(node_id)
                if node is not None and sub.get_node(node_id) is None:
                    _copy_node(sub, node)
    else:
        for n in ctx.iterate(as_nodes(value, ctx)):
            if sub.get_node(n.id) is None:
                _copy_node(sub, n)
        edges = [
            e
            for n in ctx.iterate(list(sub.nodes.values()))
            for e in g.out_edges(n.id)
            if e.child in sub.nodes
        ]
    for e in ctx.iterate(edges):
        if sub.get_edge(e.id) is None:
            sub.add_edge(
                e.id,
                e.parent,
                e.child,
                e.metadata,
                origin=e.origin,
                host=e.host,
                created_at=e.created_at,
                updated_at=e.updated_at,
                revision=e.revision,
            )
    return GraphValue(sub)


def _copy_node(sub: Graph, n: Node) -> None:
    sub.add_node(
        n.id,
        n.metadata,
        origin=n.origin,
        host=n.host,
        created_at=n.created_at,
        updated_at=n.updated_at,
        revision=n.revision,
    )


# -- neighbourhoods ----------------------------------------------------------------------------


def _walk_params(args: tuple[Arg, ...], ctx: StepContext, *, any_of: bool) -> tuple[Filter, int]:
    """``([Metadata(...) | k, v, ...] [, depth])``: edge filter (ownership) and depth (1)."""
    depth = 1
    rest = args
    last = rest[-1] if rest else None
    if isinstance(last, int) and not isinstance(last, bool):
        head = rest[:-1]
        if len(head) % 2 == 0 or (len(head) == 1 and isinstance(head[0], Call)):
            depth, rest = last, head
    if not rest:
        return _OWNERSHIP, depth
    if len(rest) % 2 and not (len(rest) == 1 and isinstance(rest[0], Call)):
        raise ctx.error("accepts key/value pairs or Metadata(...), and an optional depth")
    position = ctx.step.position if ctx.step else 0
    return compile_filter(rest, position, any_of=any_of and len(rest) > 1), depth


def _expand(
    value: Any, ctx: StepContext, flt: Filter, depth: int, down: bool, up: bool
) -> NodeList:
    g = ctx.graph
    nodes = g.nodes
    out: list[Node] = []
    seen: set[str] = set()
    frontier: list[Node] = []
    for n in as_nodes(value, ctx):
        if n.id not in seen:
            seen.add(n.id)
            out.append(n)
            frontier.append(n)
    level = 0
    while frontier and (depth == 0 or level < depth):
        level += 1
        ctx.check()
        nxt: list[Node] = []
        for n in ctx.iterate(frontier):
            ends: list[str] = []
            if down:
                ends.extend(e.child for e in g.out_edges(n.id) if flt(e))
            if up:
                ends.extend(e.parent for e in g.in_edges(n.id) if flt(e))
            for node_id in ends:
                if node_id not in seen:
                    seen.add(node_id)
                    node = nodes[node_id]
                    out.append(node)
                    nxt.append(node)
        frontier = nxt
    return NodeList(out)


def step_descendants(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    flt, depth = _walk_params(args, ctx, any_of=False)
    return _expand(value, ctx, flt, depth, down=True, up=False)


def step_ascendants(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    flt, depth = _walk_params(args, ctx, any_of=False)
    return _expand(value, ctx, flt, depth, down=False, up=True)


def step_neighbors(value: Any, args: tuple[Arg, ...], ctx: StepContext) -> Any:
    flt, depth = _walk_params(args, ctx, any_of=True)
    if depth == 0:
        return NodeList(_unique(as_nodes(value, ctx)))
    return _expand(value, ctx, flt, depth, down=True, up=True)


def _unique(nodes: list[Node]) -> list[Node]:
    seen: set[str] = set()
    out: list[Node] = []
    for n in nodes:
        if n.id not in seen:
            seen.add(n.id)
            out.append(n)
    return out


WALK_STEPS = {
    "OUT": step_out,
    "IN": step_in,
    "BOTH": step_both,
    "OUTE": step_out_e,
    "INE": step_in_e,
    "BOTHE": step_both_e,
    "OUTV": step_out_v,
    "INV": step_in_v,
    "BOTHV": step_both_v,
    "SHORTESTPATHTO": step_shortest_path_to,
    "SUBGRAPH": step_sub_graph,
    "DESCENDANTS": step_descendants,
    "ASCENDANTS": step_ascendants,
    "NEIGHBORS": step_neighbors,
}
