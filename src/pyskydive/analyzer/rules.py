"""Live node and edge rules (DESIGN.md §2.2): ``noderule`` and ``edgerule`` resources.

* A node rule with ``Action: create`` adds one node carrying the rule's ``Metadata`` (its ID
  derives from the rule's UUID, so it is the same node after a restart).
* A node rule with ``Action: update`` merges its ``Metadata`` into every node its Gremlin
  ``Query`` matches.
* An edge rule links every node matching ``Src`` to every node matching ``Dst`` with the rule's
  ``Metadata`` (edge IDs derive from the rule and the two ends).

Rules are live: the engine listens to the graph and, after a burst of changes, re-evaluates
every rule once (debounced: a change schedules one refresh a short delay later; further changes
before it runs are absorbed), adding what is missing and undoing what no longer matches.
Deleting a rule undoes it: its node, its merged keys, its edges. What rules add has the
analyzer's origin (``analyzer.<host_id>``).

Queries are evaluated by :func:`pyskydive.gremlin.evaluate`, looked up lazily; until that
package exists a tiny fallback understands ``G.V()``, ``G.V('<id>')`` and ``.Has(...)`` chains.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from pyskydive.errors import QueryError, SkydiveError
from pyskydive.graph import Edge, Graph, Node, Op

__all__ = ["Evaluate", "RuleEngine", "default_evaluate", "query_node_ids"]

log = logging.getLogger(__name__)

#: ``evaluate(query, graph)`` -> a list of results (node wire dicts for node queries).
Evaluate = Callable[[str, Graph], list[Any]]

#: Seconds a rule's query may run (rules are evaluated on the event loop).
QUERY_TIMEOUT = 5.0

_NS = uuid.UUID("6c1f4d6e-1a7e-4c55-9f7a-8d0d5c3b2a10")


def default_evaluate(query: str, graph: Graph) -> list[Any]:
    """Evaluate with :mod:`pyskydive.gremlin` when it is installed, else with the fallback."""
    try:
        evaluate = importlib.import_module("pyskydive.gremlin").evaluate
    except (ImportError, AttributeError):
        return _fallback_evaluate(query, graph)
    result = evaluate(query, graph, timeout=QUERY_TIMEOUT)
    return result if isinstance(result, list) else [result]


_STEP = re.compile(r"\.\s*(V|Has)\s*\(([^()]*)\)\s*")
_ARG = re.compile(r"""\s*(?:'([^']*)'|"([^"]*)"|(-?\d+(?:\.\d+)?)|(true|false))\s*(?:,|$)""")


def _fallback_args(text: str, query: str) -> list[Any]:
    args: list[Any] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _ARG.match(text, pos)
        if m is None or m.end() == pos:
            raise QueryError(f"cannot parse arguments {text!r} in {query!r}")
        s1, s2, num, boolean = m.groups()
        if num is not None:
            args.append(float(num) if "." in num else int(num))
        elif boolean is not None:
            args.append(boolean == "true")
        else:
            args.append(s1 if s1 is not None else s2)
        pos = m.end()
    return args


def _fallback_evaluate(query: str, graph: Graph) -> list[Any]:
    q = query.strip()
    if not q.startswith("G"):
        raise QueryError(f"query must start with G: {query!r}")
    pos, nodes = 1, None
    while pos < len(q):
        m = _STEP.match(q, pos)
        if m is None:
            raise QueryError(f"unsupported query at position {pos}: {query!r}")
        step, args = m.group(1), _fallback_args(m.group(2), query)
        if step == "V":
            if nodes is not None:
                raise QueryError("V() must come first")
            nodes = (
                [graph.nodes[a] for a in args if a in graph.nodes] if args else graph.get_nodes()
            )
        else:
            if nodes is None or len(args) % 2:
                raise QueryError("Has() needs key/value pairs after V()")
            match = dict(zip(args[::2], args[1::2], strict=True))
            nodes = [n for n in nodes if all(n.get(k) == v for k, v in match.items())]
        pos = m.end()
    if nodes is None:
        raise QueryError(f"unsupported query {query!r}")
    return [n.to_wire() for n in nodes]


def query_node_ids(evaluate: Evaluate, query: str, graph: Graph) -> list[str]:
    """IDs of the graph nodes a query returns (nested lists flattened, edges ignored)."""
    out: list[str] = []
    seen: set[str] = set()
    stack: list[Any] = list(reversed(evaluate(query, graph)))
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
            continue
        if isinstance(item, Node):
            node_id: Any = item.id
        elif isinstance(item, dict) and "Parent" not in item:
            node_id = item.get("ID")
        else:
            continue
        if isinstance(node_id, str) and node_id in graph.nodes and node_id not in seen:
            seen.add(node_id)
            out.append(node_id)
    return out


def rule_node_id(rule_id: str) -> str:
    """The ID of the node a ``create`` node rule adds."""
    return str(uuid.uuid5(_NS, f"noderule/{rule_id}"))


def rule_edge_id(rule_id: str, parent: str, child: str) -> str:
    return str(uuid.uuid5(_NS, f"edgerule/{rule_id}/{parent}/{child}"))


class RuleEngine:
    """Applies node and edge rules to a graph and keeps them applied (a graph listener)."""

    def __init__(
        self,
        graph: Graph,
        origin: str,
        evaluate: Evaluate = default_evaluate,
        *,
        delay: float = 0.05,
    ) -> None:
        self.graph = graph
        self.origin = origin
        self.evaluate = evaluate
        self.delay = delay
        self.node_rules: dict[str, dict[str, Any]] = {}
        self.edge_rules: dict[str, dict[str, Any]] = {}
        self._merged: dict[str, dict[str, set[str]]] = {}  # update rule -> node -> keys
        self._edges: dict[str, set[str]] = {}  # edge rule -> edge ids
        self._applying = False
        self._handle: asyncio.TimerHandle | None = None
        self.dirty = False
        graph.add_listener(self)

    # -- queries ---------------------------------------------------------------------------

    def check_query(self, query: str) -> None:
        """Evaluate once: :class:`QueryError` (or another SkydiveError) if it is bad."""
        query_node_ids(self.evaluate, query, self.graph)

    def _ids(self, rule_id: str, query: str) -> list[str] | None:
        try:
            return query_node_ids(self.evaluate, query, self.graph)
        except SkydiveError as exc:
            log.warning("rule %s: query %r failed: %s", rule_id, query, exc)
            return None

    # -- rules -----------------------------------------------------------------------------

    def add_node_rule(self, rule: dict[str, Any]) -> None:
        self.node_rules[rule["UUID"]] = rule
        self._apply_node_rule(rule)

    def remove_node_rule(self, rule_id: str) -> None:
        rule = self.node_rules.pop(rule_id, None)
        if rule is None:
            return
        self._applying = True
        try:
            if rule.get("Action") == "create":
                node = self.graph.get_node(rule_node_id(rule_id))
                if node is not None:
                    self.graph.delete_node(node)
            for node_id, keys in self._merged.pop(rule_id, {}).items():
                merged = self.graph.get_node(node_id)
                if merged is not None:
                    self.graph.update_node(merged, delete=keys)
        finally:
            self._applying = False

    def add_edge_rule(self, rule: dict[str, Any]) -> None:
        self.edge_rules[rule["UUID"]] = rule
        self._apply_edge_rule(rule)

    def remove_edge_rule(self, rule_id: str) -> None:
        if self.edge_rules.pop(rule_id, None) is None:
            return
        self._applying = True
        try:
            for edge_id in self._edges.pop(rule_id, set()):
                edge = self.graph.get_edge(edge_id)
                if edge is not None:
                    self.graph.delete_edge(edge)
        finally:
            self._applying = False

    def merged_keys(self, node_id: str) -> set[str]:
        """Metadata keys that update rules merged into ``node_id`` (not the node's own)."""
        keys: set[str] = set()
        for merged in self._merged.values():
            keys |= merged.get(node_id, set())
        return keys

    def refresh(self) -> None:
        """Re-apply every rule to the graph as it is now."""
        self.dirty = False
        self._handle = None
        for rule in list(self.node_rules.values()):
            self._apply_node_rule(rule)
        for rule in list(self.edge_rules.values()):
            self._apply_edge_rule(rule)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.graph.remove_listener(self)

    # -- applying --------------------------------------------------------------------------

    def _apply_node_rule(self, rule: dict[str, Any]) -> None:
        rule_id = rule["UUID"]
        metadata: dict[str, Any] = rule.get("Metadata") or {}
        g = self.graph
        self._applying = True
        try:
            if rule.get("Action") == "create":
                node_id = rule_node_id(rule_id)
                node = g.get_node(node_id)
                if node is None:
                    g.add_node(node_id, dict(metadata), origin=self.origin)
                return
            ids = self._ids(rule_id, rule.get("Query") or "")
            if ids is None:
                return
            merged = self._merged.setdefault(rule_id, {})
            for gone in set(merged) - set(ids):
                keys = merged.pop(gone)
                node = g.get_node(gone)
                if node is not None:
                    g.update_node(node, delete=keys)
            for node_id in ids:
                g.update_node(g.nodes[node_id], metadata)
                merged[node_id] = set(metadata)
        finally:
            self._applying = False

    def _apply_edge_rule(self, rule: dict[str, Any]) -> None:
        rule_id = rule["UUID"]
        src = self._ids(rule_id, rule.get("Src") or "")
        dst = self._ids(rule_id, rule.get("Dst") or "")
        if src is None or dst is None:
            return
        metadata: dict[str, Any] = rule.get("Metadata") or {}
        g = self.graph
        wanted = {rule_edge_id(rule_id, p, c): (p, c) for p in src for c in dst if p != c}
        have = self._edges.setdefault(rule_id, set())
        self._applying = True
        try:
            for edge_id in have - set(wanted):
                edge = g.get_edge(edge_id)
                if edge is not None:
                    g.delete_edge(edge)
            have &= set(wanted)
            for edge_id, (parent, child) in wanted.items():
                edge = g.get_edge(edge_id)
                if edge is None:
                    g.add_edge(edge_id, parent, child, dict(metadata), origin=self.origin)
                have.add(edge_id)
        finally:
            self._applying = False

    # -- graph listener: debounced refresh -------------------------------------------------

    def _changed(self) -> None:
        if self._applying or self.dirty:
            return
        if not self.node_rules and not self.edge_rules:
            return
        self.dirty = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (unit tests): whoever changed the graph calls refresh()
        self._handle = loop.call_later(self.delay, self._refresh_safely)

    def _refresh_safely(self) -> None:
        try:
            self.refresh()
        except Exception:  # a bug must not stop the rules for good
            log.exception("rules: refresh failed")

    def on_node_added(self, node: Node) -> None:
        self._changed()

    def on_node_updated(self, node: Node, ops: list[Op]) -> None:
        self._changed()

    def on_node_deleted(self, node: Node) -> None:
        self._changed()

    def on_edge_added(self, edge: Edge) -> None:
        self._changed()

    def on_edge_updated(self, edge: Edge, ops: list[Op]) -> None:
        self._changed()

    def on_edge_deleted(self, edge: Edge) -> None:
        self._changed()
