"""On-demand captures, analyzer side: which capture runs on which node, told to each agent.

Theory of operation
-------------------
Captures are resources (``/api/capture``) with a Gremlin query (or a probe path, translated).
:class:`OnDemand` listens to the merged graph and is told when a capture is created, edited or
deleted (:meth:`OnDemand.changed`, from the resource routes) or an agent synced; after any of
those (debounced by :data:`DEBOUNCE_S`; nothing runs while nothing changes) it evaluates every
capture's query, keeps the nodes the capture can run on (the
capture's Type, or the node's default type: :mod:`pyskydive.flow.captures`), and groups them by
the agent that owns each node (``Node.origin`` = ``agent.<host>``).

Each agent is then sent its whole desired set, and only when that set changed since the last
one it was sent: ``{"Namespace": "OnDemand", "Type": "CaptureSet", "Obj": {"Captures": [{"NodeID":
..., "Capture": {...resource, "Type": resolved}}]}}``. The message is a state, not a command, so a
lost or repeated one is harmless: the agent diffs it against what runs. A freshly connected
agent (``AgentSession.captures_sent`` is None) always gets one, after its first Sync (a
session that never syncs, a tool speaking on the agent endpoint, gets none). A node that
disappears drops out of the set (the agent stops that capture); when it comes back the set has it
again and the capture resumes.

A capture whose query fails (a node rule removed a key it used, say) is logged once per distinct
error and skipped; the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from pyskydive.analyzer.hub import AgentSession, Hub
from pyskydive.analyzer.rules import query_node_ids
from pyskydive.errors import SkydiveError
from pyskydive.flow.captures import default_type, supports
from pyskydive.graph import BaseListener, Edge, Graph, Node, Op
from pyskydive.graph import messages as wire
from pyskydive.gremlin import NodeList, run
from pyskydive.gremlin.probepath import capture_query
from pyskydive.gremlin.values import to_wire
from pyskydive.storage.base import ResourceBackend

__all__ = ["CAPTURE_SET", "ONDEMAND_NS", "OnDemand", "capture_nodes"]

log = logging.getLogger(__name__)

ONDEMAND_NS = "OnDemand"
CAPTURE_SET = "CaptureSet"
DEBOUNCE_S = 0.05


def capture_nodes(capture: dict[str, Any], graph: Graph) -> list[Node]:
    """The nodes a capture's query selects now (:class:`SkydiveError` if the query fails)."""
    query = capture_query(str(capture.get("GremlinQuery") or ""))
    value = run(query, graph, timeout=5.0)
    if isinstance(value, NodeList):  # the usual case: the nodes themselves, not serialised
        return list(dict.fromkeys(n for n in value.items if n.id in graph.nodes))
    ids = query_node_ids(lambda q, g: to_wire(value), query, graph)
    return [graph.nodes[i] for i in ids]


class OnDemand(BaseListener):
    def __init__(self, graph: Graph, hub: Hub, store: ResourceBackend) -> None:
        self.graph = graph
        self.hub = hub
        self.store = store
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._errors: dict[str, str] = {}  # capture id -> last logged error

    async def __aenter__(self) -> OnDemand:
        self.graph.add_listener(self)
        self._task = asyncio.create_task(self._run(), name="ondemand")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.graph.remove_listener(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def changed(self) -> None:
        """Something captures depend on changed: re-evaluate soon."""
        self._dirty.set()

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(DEBOUNCE_S)
            self._dirty.clear()
            try:
                self.reconcile()
            except Exception:  # a bug: log it, keep serving captures
                log.exception("on-demand captures: cannot reconcile")

    def desired(self) -> dict[str, list[dict[str, Any]]]:
        """host ID -> the captures its agent should run, sorted (comparable)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for capture_id, capture in sorted(self.store.list("capture").items()):
            try:
                nodes = capture_nodes(capture, self.graph)
            except SkydiveError as exc:
                if self._errors.get(capture_id) != str(exc):
                    self._errors[capture_id] = str(exc)
                    log.warning("capture %s: query failed: %s", capture_id, exc)
                continue
            self._errors.pop(capture_id, None)
            for node in nodes:
                if not node.origin.startswith("agent."):
                    continue
                ctype = str(capture.get("Type") or "") or default_type(node.metadata)
                if ctype is None or not supports(ctype, node.metadata):
                    continue
                host = node.origin.removeprefix("agent.")
                out.setdefault(host, []).append(
                    {"NodeID": node.id, "Capture": {**capture, "Type": ctype}}
                )
        return out

    def reconcile(self) -> None:
        desired = self.desired()
        for host, session in list(self.hub.agents.items()):
            self._send(session, desired.get(host, []))

    @staticmethod
    def _send(session: AgentSession, captures: list[dict[str, Any]]) -> None:
        if session.send is None or not session.synced or session.captures_sent == captures:
            return
        text = wire.encode(
            {
                "Namespace": ONDEMAND_NS,
                "Type": CAPTURE_SET,
                "UUID": "",
                "Status": 200,
                "Obj": {"Captures": captures},
            }
        )
        session.send(text)
        session.captures_sent = captures
        log.info("agent %s: %d capture(s) to run", session.host_id, len(captures))

    # -- graph listener: any change may change a query's result --------------------------------

    def on_node_added(self, node: Node) -> None:
        self._dirty.set()

    def on_node_updated(self, node: Node, ops: list[Op]) -> None:
        # Captures metadata (the agent reporting on captures) changes no capture query that
        # matters; skipping it avoids re-evaluating every second per running capture
        if all(op[1] == "Captures" or op[1].startswith("Captures.") for op in ops):
            return
        self._dirty.set()

    def on_node_deleted(self, node: Node) -> None:
        self._dirty.set()

    def on_edge_added(self, edge: Edge) -> None:
        self._dirty.set()

    def on_edge_deleted(self, edge: Edge) -> None:
        self._dirty.set()
