"""OVSDB topology probe: Open vSwitch bridges, ports and interfaces in the agent's graph.

Theory of operation
-------------------
The probe connects to ``ovs.ovsdb`` (``unix:PATH``, ``unix://PATH`` or ``tcp:HOST:PORT``),
sends one RFC 7047 ``monitor`` of the Open_vSwitch, Bridge, Port and Interface tables and then
only reads: the monitor reply is the whole state, ``update`` notifications are the changes,
``echo`` requests are answered. Bytes become messages in :mod:`pyskydive.protocols.ovsdb`, row
changes become intents in :mod:`ovsdb_model` (both pure); this shell applies intents to the
graph, on the agent's loop.

One node per interface: an OVS interface backed by a kernel netdev is the node netlink made
for it (same Name, owned by the host or by the namespace it lives in); OVS merges its metadata
into it (``graph.update_node``), sets ``TopologyContext.type_overrides`` so netlink keeps the OVS
Type (``internal``), and links its port to it. While no netlink node stands for it (not seen
yet, or moving between namespaces) the interface has a node of its own, owned by its bridge;
the probe listens to the graph and swaps to netlink's node as soon as one appears. Patch and
tunnel interfaces have no netdev: their nodes are the probe's, owned by the bridge.

When the connection drops or ovsdb-server restarts, the probe reconnects with exponential
backoff; the fresh monitor reply replaces the model's state and everything no longer there
leaves the graph (OVS-made nodes deleted, OVS metadata and edges stripped from netlink nodes).
A malformed message is logged with its reason and handled the same way: drop the connection,
resync from a fresh monitor reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from pyskydive.errors import ProbeError, ProtocolError
from pyskydive.graph import BaseListener, Edge, Node
from pyskydive.graph.graph import SET_OP, Op
from pyskydive.probes.topology.ovsdb_model import HOST, EdgeIntent, Kind, NodeIntent, OvsdbModel
from pyskydive.probes.topology.registry import TopologyContext, new_id
from pyskydive.probes.topology.tid import ovs_tid
from pyskydive.protocols.ovsdb import (
    Notification,
    Request,
    StreamDecoder,
    classify,
    decode_table_updates,
    echo_reply,
    encode,
    monitor_request,
    update_params,
)

__all__ = ["OvsdbAddress", "OvsdbProbe", "parse_address"]

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 18
_MONITOR_ID = 1


@dataclass(frozen=True, slots=True)
class OvsdbAddress:
    """Where ovsdb-server listens: a Unix socket ``path``, or ``host``:``port``."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"tcp:{self.host}:{self.port}"


def parse_address(address: str) -> OvsdbAddress:
    """``unix:PATH``, ``unix://PATH`` or ``tcp:HOST:PORT`` (``tcp://`` accepted too)."""
    scheme, sep, rest = address.partition(":")
    if sep and scheme == "unix":
        path = rest[2:] if rest.startswith("//") else rest
        if path:
            return OvsdbAddress(path=path)
    elif sep and scheme == "tcp":
        rest = rest[2:] if rest.startswith("//") else rest
        host, sep, port = rest.rpartition(":")
        if sep and host and port.isdigit():
            return OvsdbAddress(host=host.strip("[]"), port=int(port))
    raise ProbeError(f"ovs.ovsdb: {address!r} is not unix:PATH, unix://PATH or tcp:HOST:PORT")


@dataclass
class _Merged:
    """A netlink node carrying an OVS interface's metadata."""

    node: Node
    type_before: Any


@dataclass
class _Applied:
    """What the probe put in the graph for one OVS UUID."""

    node: Node
    keys: set[str] = field(default_factory=set)
    merged: _Merged | None = None
    edges: dict[EdgeIntent, Edge] = field(default_factory=dict)


class OvsdbProbe(BaseListener):
    """Mirror one OVSDB server into the graph (bridges, ports, interfaces)."""

    def __init__(
        self,
        ctx: TopologyContext,
        address: str,
        *,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
    ) -> None:
        self.ctx = ctx
        self.address = parse_address(address)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.model = OvsdbModel()
        self._applied: dict[str, _Applied] = {}  # OVS uuid -> what is in the graph
        self._own: set[str] = set()  # IDs of the nodes this probe created
        self._merged_ids: dict[str, str] = {}  # netlink node ID -> OVS uuid merged into it
        self._dirty: set[str] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._host_tid = str(ctx.host.metadata.get("TID", ""))
        #: Set once the first monitor reply has been applied (tests and benchmarks wait on it).
        self.synced = asyncio.Event()

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start following OVSDB in the background; an absent server is retried, not fatal."""
        self.ctx.graph.add_listener(self)
        self._task = asyncio.create_task(self._run(), name="ovsdb")

    async def stop(self, *, remove_nodes: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._close()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.ctx.graph.remove_listener(self)
        if remove_nodes:
            self._reconcile(self.model.reset([]))

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _run(self) -> None:
        delay = self.backoff_initial
        failing: str | None = None
        while True:
            try:
                reason = await self._session()
            except (OSError, ProtocolError, ProbeError) as exc:
                reason = str(exc) or type(exc).__name__
            except Exception as exc:  # a bug here: say so loudly, then resync from scratch
                log.exception("ovsdb: %s: cannot apply an update", self.address)
                reason = f"internal error: {exc!r}"
            finally:
                self._close()
            if self._session_synced:
                delay = self.backoff_initial
            if reason != failing or self._session_synced:
                log.warning("ovsdb: %s: %s; reconnecting", self.address, reason)
            else:
                log.debug("ovsdb: %s: %s; reconnecting", self.address, reason)
            failing = reason
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    _session_synced = False

    async def _session(self) -> str:
        """One connection: monitor, then apply messages until it ends; returns why."""
        self._session_synced = False
        if self.address.path is not None:
            reader, writer = await asyncio.open_unix_connection(self.address.path)
        else:
            reader, writer = await asyncio.open_connection(self.address.host, self.address.port)
        self._writer = writer
        decoder = StreamDecoder()
        writer.write(monitor_request(_MONITOR_ID, None))
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                if decoder.pending:
                    return f"connection closed in the middle of a message ({decoder.pending} bytes)"
                return "connection closed"
            try:
                for raw in decoder.feed(data):
                    reply = self.handle(raw)
                    if reply is not None:
                        writer.write(reply)
            finally:
                self.flush()
            await writer.drain()

    def handle(self, raw: Any) -> bytes | None:
        """Apply one decoded JSON-RPC message to the model; return the answer to send, if any.

        Graph changes wait for :meth:`flush`, so a batch of messages costs one reconcile."""
        msg = classify(raw)
        if isinstance(msg, Request):
            if msg.method == "echo":
                return echo_reply(msg)
            return encode({"id": msg.id, "result": None, "error": f"unknown method {msg.method}"})
        if isinstance(msg, Notification):
            if msg.method == "update":
                _, updates = update_params(msg.params)
                self._dirty |= self.model.apply(decode_table_updates(updates))
            return None
        if msg.id == _MONITOR_ID:
            if msg.error is not None:
                raise ProbeError(f"monitor refused: {msg.error}")
            changes = decode_table_updates(msg.result)
            self._dirty |= self.model.reset(changes)
            self._session_synced = True
            if not self.synced.is_set():
                log.info("ovsdb: monitoring %s (%d objects)", self.address, len(self.model.uuids()))
            self.synced.set()
        return None

    # -- graph listener: netlink nodes that stand for OVS interfaces -------------------------

    def _schedule(self, uuids: set[str]) -> None:
        if not uuids:
            return
        self._dirty |= uuids
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # driven synchronously (unit tests): flush() applies it
                return
            self._flush_handle = loop.call_soon(self.flush)

    def on_node_added(self, node: Node) -> None:
        if node.id in self._own:
            return
        name = node.metadata.get("Name")
        if isinstance(name, str):
            self._schedule(self.model.interfaces_named(name))

    def on_node_updated(self, node: Node, ops: list[Op]) -> None:
        if node.id in self._own:
            return
        for op_type, key, value in ops:
            if key == "Name":
                if node.id in self._merged_ids:
                    self._schedule({self._merged_ids[node.id]})
                if op_type == SET_OP and isinstance(value, str):
                    self._schedule(self.model.interfaces_named(value))

    def on_node_deleted(self, node: Node) -> None:
        uuid = self._merged_ids.get(node.id)
        if uuid is not None:
            self._schedule({uuid})

    # -- applying intents ------------------------------------------------------------------

    def flush(self) -> None:
        """Apply every pending change to the graph."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        if dirty:
            self._reconcile(dirty)

    def _reconcile(self, dirty: set[str]) -> None:
        ordered = self.model.ordered(dirty)
        for uuid in dirty.difference(ordered):
            self._drop(uuid)
        intents = [i for u in ordered if (i := self.model.intent(u)) is not None]
        for intent in intents:
            self._bind(intent)
        for intent in intents:
            self._link(intent)

    def _bind(self, intent: NodeIntent) -> None:
        """Make the node of ``intent`` exist with its metadata (merged or own)."""
        applied = self._applied.get(intent.uuid)
        if intent.kind is Kind.INTERFACE and intent.netdev:
            target = self._netlink_node(intent)
            stale = applied is not None and (target is None or applied.node is not target)
            if stale and applied is not None and (applied.merged is not None or target is not None):
                self._drop(intent.uuid)
                applied = None
            if target is not None:
                self._merge(intent, target)
                return
        graph = self.ctx.graph
        md = dict(intent.metadata)
        md.setdefault("Name", intent.name)
        md.setdefault(
            "Type", intent.ovs_type if intent.ovs_type not in ("", "system") else "device"
        )
        if self._host_tid:
            md["TID"] = ovs_tid(self._host_tid, intent.uuid)
        if applied is None or graph.get_node(applied.node.id) is not applied.node:
            node = graph.add_node(new_id(), md, origin=self.ctx.origin)
            self._own.add(node.id)
            self._applied[intent.uuid] = _Applied(node, set(md))
            return
        graph.update_node(applied.node, md, applied.keys - md.keys())
        applied.keys = set(md)

    def _merge(self, intent: NodeIntent, target: Node) -> None:
        applied = self._applied.get(intent.uuid)
        if applied is None:
            applied = _Applied(target, merged=_Merged(target, target.metadata.get("Type")))
            self._applied[intent.uuid] = applied
            self._merged_ids[target.id] = intent.uuid
        md = intent.metadata
        delete = applied.keys - md.keys()
        set_ = dict(md)
        if "Type" in md:
            self.ctx.type_overrides[target.id] = md["Type"]
        else:
            self.ctx.type_overrides.pop(target.id, None)
            if "Type" in delete:
                delete.discard("Type")
                assert applied.merged is not None
                if applied.merged.type_before is not None:
                    set_["Type"] = applied.merged.type_before
        self.ctx.graph.update_node(target, set_, delete)
        applied.keys = set(md)

    def _drop(self, uuid: str) -> None:
        """Take what the probe put in the graph for ``uuid`` out of it."""
        applied = self._applied.pop(uuid, None)
        if applied is None:
            return
        graph = self.ctx.graph
        for edge in applied.edges.values():
            graph.delete_edge(edge)
        node = applied.node
        if applied.merged is not None:
            self._merged_ids.pop(node.id, None)
            self.ctx.type_overrides.pop(node.id, None)
            if graph.get_node(node.id) is node:
                set_: dict[str, Any] = {}
                delete = applied.keys - {"Type"}
                if "Type" in applied.keys and applied.merged.type_before is not None:
                    set_["Type"] = applied.merged.type_before
                graph.update_node(node, set_, delete)
        else:
            self._own.discard(node.id)
            graph.delete_node(node)

    def _link(self, intent: NodeIntent) -> None:
        """Make the edges into the node of ``intent`` exactly the intended ones."""
        applied = self._applied.get(intent.uuid)
        graph = self.ctx.graph
        if applied is None or graph.get_node(applied.node.id) is not applied.node:
            return
        node = applied.node
        want = list(intent.parents)
        if intent.kind is Kind.INTERFACE and applied.merged is None and intent.bridge:
            want.append(EdgeIntent(intent.bridge, "ownership"))
        for key in [k for k in applied.edges if k not in want]:
            graph.delete_edge(applied.edges.pop(key))
        for key in want:
            parent = self._parent_node(key.parent)
            edge = applied.edges.get(key)
            if (
                edge is not None
                and parent is not None
                and graph.get_edge(edge.id) is edge
                and edge.parent == parent.id
            ):
                continue
            if edge is not None:
                graph.delete_edge(applied.edges.pop(key))
            if parent is None:
                continue
            applied.edges[key] = graph.add_edge(
                new_id(), parent.id, node.id, key.metadata(), origin=self.ctx.origin
            )

    def _parent_node(self, key: str) -> Node | None:
        if key == HOST:
            return self.ctx.host
        applied = self._applied.get(key)
        if applied is None or self.ctx.graph.get_node(applied.node.id) is not applied.node:
            return None
        return applied.node

    def _netlink_node(self, intent: NodeIntent) -> Node | None:
        """The node netlink made for the interface of ``intent``, in any of the namespaces."""
        graph = self.ctx.graph
        found: list[Node] = []
        for node in graph.get_nodes({"Name": intent.name}):
            if node.id in self._own or "IfIndex" not in node.metadata:
                continue
            if node.origin != self.ctx.origin:
                continue
            owner = self._merged_ids.get(node.id)
            if owner is not None and owner != intent.uuid:
                continue
            parents = graph.parents(node.id, {"RelationType": "ownership"})
            if not any(p is self.ctx.host or p.metadata.get("Type") == "netns" for p in parents):
                continue
            found.append(node)
        if len(found) > 1:
            found.sort(
                key=lambda n: (
                    self._merged_ids.get(n.id) != intent.uuid,
                    n.metadata.get("MAC") != intent.mac,
                )
            )
        return found[0] if found else None
