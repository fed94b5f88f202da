"""The analyzer's hub: merges the graphs that agents push, one sub-graph per origin.

Each agent connection is an :class:`AgentSession` with origin ``agent.<host_id>``. A ``Sync``
replaces that origin's sub-graph by difference (what is unchanged stays, so subscribers see no
churn after an analyzer or agent restart); incremental messages are applied as they come. An
agent only ever touches elements of its own origin. Messages are validated whole before any
change, so a bad one changes nothing and is answered with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyskydive.errors import MessageError, SkydiveError
from pyskydive.graph import DEL_OP, Graph
from pyskydive.graph import messages as wire

__all__ = ["AgentConflict", "AgentSession", "Hub"]

log = logging.getLogger(__name__)


class AgentConflict(SkydiveError):
    """A second agent announced a host ID that is already connected."""


@dataclass(eq=False)
class AgentSession:
    host_id: str
    remote: str
    client_type: str
    connected_at: int
    delete_on_disconnect: bool = True
    messages: int = 0
    errors: int = 0
    #: "agent" for agents, "publisher" for external tools (``/ws/publisher``, ``/ws/pubsub``).
    service: str = "agent"
    origin: str = field(init=False)
    #: Sends a text frame to the agent (set by the WebSocket endpoint; None in tests).
    send: Callable[[str], None] | None = None
    #: The last capture set sent to this agent (analyzer/ondemand.py); None: none yet.
    captures_sent: list[dict[str, Any]] | None = None
    #: True once the session's first Sync is applied: only then is it sent capture sets.
    synced: bool = False

    def __post_init__(self) -> None:
        self.origin = f"{self.service}.{self.host_id}"

    def status(self) -> dict[str, Any]:
        host, _, port = self.remote.rpartition(":")
        return {
            "Host": self.host_id,
            "Addr": host,
            "Port": int(port) if port.isdigit() else 0,
            "ClientType": self.client_type,
            "ConnectTime": self.connected_at,
            "Origin": self.origin,
            "PersistencePolicy": (
                "DeleteOnDisconnect" if self.delete_on_disconnect else "Persistent"
            ),
            "Messages": self.messages,
        }


class Hub:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.agents: dict[str, AgentSession] = {}  # agents by host ID
        self.publishers: dict[str, AgentSession] = {}  # other sessions by host ID
        #: Called after an agent's Sync is applied (on-demand captures are sent then).
        self.on_synced: Callable[[AgentSession], None] | None = None

    def _sessions(self, session: AgentSession) -> dict[str, AgentSession]:
        return self.agents if session.service == "agent" else self.publishers

    def register(self, session: AgentSession) -> None:
        sessions = self._sessions(session)
        existing = sessions.get(session.host_id)
        if existing is not None:
            raise AgentConflict(
                f"a{'n' if session.service[0] in 'aeiou' else ''} {session.service} with host "
                f"ID {session.host_id!r} is already connected from {existing.remote}"
            )
        sessions[session.host_id] = session
        log.info("%s %s connected from %s", session.service, session.host_id, session.remote)

    def unregister(self, session: AgentSession) -> None:
        sessions = self._sessions(session)
        if sessions.get(session.host_id) is not session:
            return
        del sessions[session.host_id]
        removed = 0
        if session.delete_on_disconnect:
            removed = self.graph.delete_origin(session.origin)
        log.info(
            "%s %s disconnected (%d elements removed)", session.service, session.host_id, removed
        )

    # -- messages --------------------------------------------------------------------------

    def apply(self, session: AgentSession, msg: wire.Message) -> None:
        """Apply one message from ``session``; :class:`MessageError` if it cannot be."""
        session.messages += 1
        if msg.namespace != wire.GRAPH_NS:
            raise MessageError(f"unsupported namespace {msg.namespace!r}")
        t = msg.type
        if t == wire.SYNC:
            self._sync(session, msg.obj)
        elif t in (wire.NODE_ADDED, wire.NODE_UPDATED):
            self._upsert_node(session, wire.node_from_obj(msg.obj))
        elif t == wire.NODE_DELETED:
            self._delete(session, wire.node_from_obj(msg.obj, require_metadata=False).id, True)
        elif t in (wire.EDGE_ADDED, wire.EDGE_UPDATED):
            rec = wire.edge_from_obj(msg.obj)
            self._check_edge_ends(rec, set())
            self._upsert_edge(session, rec)
        elif t == wire.EDGE_DELETED:
            self._delete(session, wire.edge_from_obj(msg.obj, require_metadata=False).id, False)
        elif t in (wire.NODE_PARTIALLY_UPDATED, wire.EDGE_PARTIALLY_UPDATED):
            self._partial(session, msg.obj, t == wire.NODE_PARTIALLY_UPDATED)
        else:
            raise MessageError(f"unexpected message type {t!r}")

    def _own(self, session: AgentSession, element_id: str, is_node: bool) -> bool:
        element = self.graph.get_node(element_id) if is_node else self.graph.get_edge(element_id)
        if element is None:
            return False
        if element.origin != session.origin:
            what = "node" if is_node else "edge"
            raise MessageError(f"{what} {element_id} belongs to {element.origin}")
        return True

    def _upsert_node(self, session: AgentSession, rec: wire.NodeRecord) -> None:
        g = self.graph
        if self._own(session, rec.id, True):
            node = g.nodes[rec.id]
            g.replace_node_metadata(
                node, rec.metadata, updated_at=rec.updated_at, revision=rec.revision
            )
        else:
            g.add_node(
                rec.id,
                rec.metadata,
                origin=session.origin,
                host=rec.host or session.host_id,
                created_at=rec.created_at,
                updated_at=rec.updated_at,
                revision=rec.revision or 1,
            )

    def _check_edge_ends(self, rec: wire.EdgeRecord, incoming: set[str]) -> None:
        for end in (rec.parent, rec.child):
            if end not in incoming and self.graph.get_node(end) is None:
                raise MessageError(f"edge {rec.id}: node {end} does not exist")

    def _upsert_edge(self, session: AgentSession, rec: wire.EdgeRecord) -> None:
        g = self.graph
        if self._own(session, rec.id, False):
            edge = g.edges[rec.id]
            if edge.parent == rec.parent and edge.child == rec.child:
                g.replace_edge_metadata(
                    edge, rec.metadata, updated_at=rec.updated_at, revision=rec.revision
                )
                return
            g.delete_edge(edge)
        g.add_edge(
            rec.id,
            rec.parent,
            rec.child,
            rec.metadata,
            origin=session.origin,
            host=rec.host or session.host_id,
            created_at=rec.created_at,
            updated_at=rec.updated_at,
            revision=rec.revision or 1,
        )

    def _delete(self, session: AgentSession, element_id: str, is_node: bool) -> None:
        if not self._own(session, element_id, is_node):
            return
        if is_node:
            self.graph.delete_node(self.graph.nodes[element_id])
        else:
            self.graph.delete_edge(self.graph.edges[element_id])

    def _partial(self, session: AgentSession, obj: Any, is_node: bool) -> None:
        element_id, updated_at, revision, ops = wire.ops_from_obj(obj)
        if not self._own(session, element_id, is_node):
            raise MessageError(f"partial update of unknown element {element_id}")
        set_ = {k: v for t, k, v in ops if t != DEL_OP}
        delete = [k for t, k, _ in ops if t == DEL_OP]
        if is_node:
            node = self.graph.nodes[element_id]
            self.graph.update_node(node, set_, delete, updated_at=updated_at, revision=revision)
        else:
            edge = self.graph.edges[element_id]
            self.graph.update_edge(edge, set_, delete, updated_at=updated_at, revision=revision)

    def _sync(self, session: AgentSession, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise MessageError("Sync needs an object with Nodes and Edges")
        raw_nodes, raw_edges = obj.get("Nodes") or [], obj.get("Edges") or []
        if not isinstance(raw_nodes, list) or not isinstance(raw_edges, list):
            raise MessageError("Sync: Nodes and Edges must be lists")
        nodes = [wire.node_from_obj(n) for n in raw_nodes]
        edges = [wire.edge_from_obj(e) for e in raw_edges]
        node_ids = {n.id for n in nodes}
        for rec in nodes:
            other = self.graph.get_node(rec.id)
            if other is not None and other.origin != session.origin:
                raise MessageError(f"node {rec.id} belongs to {other.origin}")
        for erec in edges:
            self._check_edge_ends(erec, node_ids)
        keep = node_ids | {e.id for e in edges}
        g = self.graph
        for stale in g.origin_ids(session.origin) - keep:
            if stale in g.edges:
                g.delete_edge(g.edges[stale])
        for stale in g.origin_ids(session.origin) - keep:
            if stale in g.nodes:
                g.delete_node(g.nodes[stale])
        for rec in nodes:
            self._upsert_node(session, rec)
        for erec in edges:
            self._upsert_edge(session, erec)
        log.info("agent %s synced: %d nodes, %d edges", session.host_id, len(nodes), len(edges))
        session.synced = True
        if self.on_synced is not None and session.service == "agent":
            self.on_synced(session)
