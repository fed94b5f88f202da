"""ethtool topology probe: driver, link settings, feature map and driver statistics of every
interface, asked in the interface's own network namespace.

Theory of operation
-------------------
:class:`EthtoolProbe` is a graph listener. An interface node that appears (any type but
host, netns, ovsbridge and ovsport, with an ``IfIndex``), is renamed, changes ``State`` or
gets its ``IfIndex`` is put in a queue; nothing else (the probe's own updates included)
queues it. A single task drains the queue a moment after the first entry arrives, so the
burst of events a new namespace or a bridge causes is answered with one batch: the nodes are
grouped by namespace (found, at query time, from the ownership parents: a ``netns`` node's
``Path``, or the agent's own namespace under the host) and each group is asked on the
:class:`NetnsRunner` thread with one ``AF_INET``/``SOCK_DGRAM`` socket made inside that
namespace, ioctls by interface name (:mod:`ethtool_codec` does the bytes).

The answer is merged into the node if it still exists under the name that was asked; keys this
probe set before and no longer gets are removed, keys other probes set (``Driver`` from OVS)
are left alone. ``PeerIfIndex`` is netlink's: it is only filled in, from the veth's
``peer_ifindex`` counter, when the node has none.

Failures are normal churn, not errors: an interface that vanished (``ENODEV``), a namespace
deleted meanwhile, a driver without ethtool support. They are logged at debug level and not
retried; the next rename or state change asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pyskydive.errors import ProtocolError
from pyskydive.graph import BaseListener, Edge, Node, Op
from pyskydive.probes.topology.ethtool_codec import (
    METADATA_KEYS,
    SIOCETHTOOL,
    EthtoolInfo,
    Transact,
    peer_ifindex,
    query,
    to_metadata,
)
from pyskydive.probes.topology.nsutil import NetnsRunner
from pyskydive.probes.topology.registry import TopologyContext

__all__ = ["EthtoolProbe", "QueryFn", "ioctl_transact", "query_names"]

log = logging.getLogger(__name__)

#: Node types that are not kernel interfaces (or have no ethtool of their own).
_SKIPPED_TYPES = frozenset({"host", "netns", "ovsbridge", "ovsport"})
#: Metadata changes that make the answer stale.
_TRIGGERS = frozenset({"Name", "State", "IfIndex"})
_OWNERSHIP = {"RelationType": "ownership"}
_IFNAMSIZ = 16
_IFREQ_SIZE = 40  # sizeof(struct ifreq) on 64-bit; a bigger buffer is harmless on 32-bit

#: The result of one query: the info, or why there is none.
Result = EthtoolInfo | OSError | ProtocolError
#: Ask ethtool about ``names`` inside the namespace at ``path`` (``None``: the agent's own).
QueryFn = Callable[[str | None, Sequence[str]], Awaitable[Sequence[Result]]]


def ioctl_transact(fd: int, name: str) -> Transact:
    """A :data:`Transact` doing ``SIOCETHTOOL`` on socket ``fd`` for interface ``name``."""
    ifname = name.encode()
    if not ifname or len(ifname) >= _IFNAMSIZ or b"\0" in ifname:
        raise OSError(errno.ENODEV, f"not an interface name: {name!r}")

    def transact(request: bytes) -> bytes:
        buf = ctypes.create_string_buffer(request, len(request))
        ifreq = struct.pack("16sP", ifname, ctypes.addressof(buf)).ljust(_IFREQ_SIZE, b"\0")
        fcntl.ioctl(fd, SIOCETHTOOL, ifreq)
        return buf.raw

    return transact


def query_names(names: Sequence[str]) -> list[Result]:
    """Query every interface of ``names`` in the calling thread's namespace (blocking)."""
    out: list[Result] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            try:
                out.append(query(ioctl_transact(sock.fileno(), name)))
            except (OSError, ProtocolError) as exc:
                out.append(exc)
    return out


class EthtoolProbe(BaseListener):
    """Keep the ethtool metadata of every interface node of ``ctx.graph`` up to date."""

    def __init__(
        self,
        ctx: TopologyContext,
        runner: NetnsRunner,
        *,
        query_fn: QueryFn | None = None,
        delay: float = 0.1,
    ) -> None:
        self.ctx = ctx
        self.runner = runner
        self._query: QueryFn = query_fn or self._query_in_netns
        self.delay = delay
        self._pending: dict[str, None] = {}  # node IDs, in arrival order
        self._unowned: set[str] = set()  # asked before their ownership edge existed
        self._owned: dict[str, dict[str, Any]] = {}  # node ID -> what this probe set
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the graph, and queue the interfaces already in it."""
        self.ctx.graph.add_listener(self)
        for node in list(self.ctx.graph.nodes.values()):
            if _eligible(node):
                self._schedule(node.id)
        self._task = asyncio.create_task(self._run(), name="ethtool")

    async def stop(self) -> None:
        self.ctx.graph.remove_listener(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._pending.clear()

    @property
    def idle(self) -> bool:
        """Nothing queued (for tests)."""
        return not self._pending

    # -- graph listener --------------------------------------------------------------------

    def on_node_added(self, node: Node) -> None:
        if _eligible(node):
            self._schedule(node.id)

    def on_node_updated(self, node: Node, ops: list[Op]) -> None:
        if any(key in _TRIGGERS for _, key, _ in ops) and _eligible(node):
            self._schedule(node.id)

    def on_node_deleted(self, node: Node) -> None:
        self._pending.pop(node.id, None)
        self._unowned.discard(node.id)
        self._owned.pop(node.id, None)

    def on_edge_added(self, edge: Edge) -> None:
        if edge.child in self._unowned and edge.metadata.get("RelationType") == "ownership":
            self._unowned.discard(edge.child)
            self._schedule(edge.child)

    def _schedule(self, node_id: str) -> None:
        self._pending[node_id] = None
        self._wake.set()

    # -- queries ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.delay)  # let the rest of the burst arrive
            self._wake.clear()
            batch, self._pending = list(self._pending), {}
            try:
                await self._process(batch)
            except Exception:
                log.exception("ethtool: cannot process a batch of %d interfaces", len(batch))

    async def _process(self, batch: list[str]) -> None:
        graph = self.ctx.graph
        groups: dict[str | None, list[tuple[Node, str]]] = {}
        for node_id in batch:
            node = graph.get_node(node_id)
            if node is None or not _eligible(node):
                continue
            name = node.metadata.get("Name")
            found, path = self._namespace_of(node)
            if not found:
                self._unowned.add(node_id)
                continue
            if isinstance(name, str) and name:
                groups.setdefault(path, []).append((node, name))
        if groups:
            log.debug(
                "ethtool: asking %d interfaces in %d namespaces",
                sum(len(items) for items in groups.values()),
                len(groups),
            )
        for path, items in groups.items():
            try:
                results = await self._query(path, [name for _, name in items])
            except OSError as exc:  # the namespace went away
                log.debug("ethtool: cannot enter %s: %s", path or "root namespace", exc)
                continue
            for (node, name), result in zip(items, results, strict=True):
                self._apply(node, name, path, result)

    async def _query_in_netns(self, path: str | None, names: Sequence[str]) -> Sequence[Result]:
        return await self.runner.run(path, lambda: query_names(names))

    def _namespace_of(self, node: Node) -> tuple[bool, str | None]:
        """(found, path) of the namespace ``node`` lives in; path None is the agent's own."""
        graph = self.ctx.graph
        current = node
        for _ in range(8):  # interface -> bridge/netns -> host at most, in practice
            parents = graph.parents(current.id, _OWNERSHIP)
            if not parents:
                return False, None
            current = parents[0]
            kind = current.metadata.get("Type")
            if kind == "host":
                return True, None
            if kind == "netns":
                path = current.metadata.get("Path")
                return (True, path) if isinstance(path, str) else (False, None)
        return False, None

    def _apply(self, node: Node, name: str, path: str | None, result: Result) -> None:
        where = path or "root namespace"
        if isinstance(result, ProtocolError):
            log.warning("ethtool: %s in %s: malformed reply: %s", name, where, result)
            return
        if isinstance(result, OSError):
            log.debug("ethtool: %s in %s: %s", name, where, result)
            return
        graph = self.ctx.graph
        if graph.get_node(node.id) is not node or node.metadata.get("Name") != name:
            return  # gone or renamed meanwhile (a rename is queued again)
        md = build_update(node.metadata, result)
        # Remove what this probe set and no longer gets, unless another probe changed it since.
        previous = self._owned.get(node.id, {})
        gone = [k for k, v in previous.items() if k not in md and node.metadata.get(k) == v]
        self._owned[node.id] = {k: v for k, v in md.items() if k in METADATA_KEYS}
        graph.update_node(node, md, gone)


def build_update(current: dict[str, Any], info: EthtoolInfo) -> dict[str, Any]:
    """What to set on a node whose metadata is ``current`` from ``info``."""
    md = to_metadata(info)
    if current.get("Driver") == "openvswitch":
        # An OVS internal port: the kernel says "tun", but the device is Open vSwitch's.
        md.pop("Driver", None)
    if not current.get("PeerIfIndex") and current.get("Type") == "veth":
        peer = peer_ifindex(md)
        if peer is not None:
            md["PeerIfIndex"] = peer
    return md


def _eligible(node: Node) -> bool:
    md = node.metadata
    return md.get("Type") not in _SKIPPED_TYPES and isinstance(md.get("IfIndex"), int)
