"""Network namespace probe: a ``netns`` node per file in ``run_path`` (``ip netns``), each with
a :class:`NetlinkProbe` inside it whose interfaces the netns node owns.

inotify on the run directory tells when a namespace appears or goes; ``ip netns add`` creates
the file before it bind-mounts the namespace on it, so a new file is retried until it is an
nsfs mount. The same namespace mounted twice, and the agent's own namespace, are skipped.
Deleting a namespace takes its netns node and everything it owns out of the graph.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Awaitable, Callable

from pyskydive.graph import Node
from pyskydive.probes.topology.inotify import (
    IN_CREATE,
    IN_DELETE,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    Inotify,
)
from pyskydive.probes.topology.netlink import NetlinkProbe
from pyskydive.probes.topology.nsutil import NetnsRunner
from pyskydive.probes.topology.registry import TopologyContext, new_id
from pyskydive.probes.topology.tid import netns_tid

__all__ = ["NetnsProbe"]

log = logging.getLogger(__name__)

_NSFS_MAGIC = 0x6E736673
_MOUNT_RETRIES = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _ns_identity(path: str) -> tuple[int, int] | None:
    """(dev, inode) of the namespace behind ``path``, or None if it is not one (yet)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    try:
        parent = os.stat(os.path.dirname(path) or ".")
    except OSError:
        return None
    if st.st_dev == parent.st_dev:  # a plain file: not bind-mounted yet
        return None
    return (st.st_dev, st.st_ino)


class _Namespace:
    def __init__(self, name: str, path: str, node: Node, probe: NetlinkProbe) -> None:
        self.name = name
        self.path = path
        self.node = node
        self.probe = probe


class NetnsProbe:
    """Follow ``run_path`` and keep one netns node (+ netlink sub-probe) per namespace."""

    def __init__(
        self,
        ctx: TopologyContext,
        runner: NetnsRunner,
        run_path: str,
        *,
        metrics_update: float,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.runner = runner
        self._on_change = on_change
        self.run_path = run_path
        self.metrics_update = metrics_update
        self._namespaces: dict[str, _Namespace] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._watcher: Inotify | None = None
        self._own = _ns_identity_of("/proc/self/ns/net")

    async def start(self) -> None:
        os.makedirs(self.run_path, exist_ok=True)
        self._watcher = Inotify(
            self.run_path, IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO, self._on_event
        )
        # Through _schedule, like inotify events, so an add and a removal of the same name
        # never run at the same time; then wait for the initial ones to settle.
        for name in sorted(os.listdir(self.run_path)):
            self._schedule(name, functools.partial(self._add, name, retry=False))
        while self._pending:
            await asyncio.gather(*self._pending.values(), return_exceptions=True)

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()
        for ns in list(self._namespaces.values()):
            await ns.probe.stop(remove_nodes=False)
        self._namespaces.clear()

    def _on_event(self, mask: int, name: str) -> None:
        if mask & (IN_CREATE | IN_MOVED_TO):
            self._schedule(name, lambda: self._add(name, retry=True))
        elif mask & (IN_DELETE | IN_MOVED_FROM):
            self._schedule(name, lambda: self._remove(name))

    def _schedule(self, name: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` after the previous step for the same name (events stay in order)."""
        previous = self._pending.get(name)

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await previous
            try:
                await step()
            except Exception:
                log.exception("netns: cannot follow %s", name)
            finally:
                if self._pending.get(name) is task:
                    del self._pending[name]

        task = asyncio.create_task(run(), name=f"netns:{name}")
        self._pending[name] = task

    async def _add(self, name: str, *, retry: bool) -> None:
        path = os.path.join(self.run_path, name)
        if name in self._namespaces:
            return
        identity = _ns_identity(path)
        for delay in _MOUNT_RETRIES if retry else ():
            if identity is not None or not os.path.exists(path):
                break
            await asyncio.sleep(delay)
            identity = _ns_identity(path)
        if identity is None:
            if os.path.exists(path):
                log.debug("netns: %s is not a mounted namespace, skipped", path)
            return
        if identity == self._own:
            return
        if any(_ns_identity(ns.path) == identity for ns in self._namespaces.values()):
            log.info("netns: %s is a namespace already seen under another name", path)
            return
        graph = self.ctx.graph
        host = self.ctx.host
        md = {
            "Name": name,
            "Type": "netns",
            "Path": path,
            "TID": netns_tid(str(host.metadata.get("TID")), path),
        }
        node = graph.add_node(new_id(), md, origin=self.ctx.origin)
        graph.add_edge(
            new_id(), host.id, node.id, {"RelationType": "ownership"}, origin=self.ctx.origin
        )
        probe = NetlinkProbe(
            self.ctx,
            node,
            self.runner,
            ns_key=path,
            ns_path=path,
            metrics_update=self.metrics_update,
        )
        self.ctx.namespaces[path] = path
        self._namespaces[name] = _Namespace(name, path, node, probe)
        try:
            await probe.start()
        except Exception as exc:
            # Gone already (created and deleted in a blink) is normal churn, not a warning.
            level = logging.WARNING if os.path.exists(path) else logging.DEBUG
            log.log(level, "netns: cannot open %s: %s", path, exc)
            await self._remove(name)
            return
        log.debug("netns: %s added", path)
        self._notify()

    def _notify(self) -> None:
        for ns in self._namespaces.values():
            ns.probe.peers_may_have_changed()
        if self._on_change is not None:
            self._on_change()

    async def _remove(self, name: str) -> None:
        ns = self._namespaces.pop(name, None)
        if ns is None:
            return
        self.ctx.namespaces.pop(ns.path, None)
        await ns.probe.stop(remove_nodes=True)
        graph = self.ctx.graph
        for node in graph.descendants(ns.node.id, {"RelationType": "ownership"}):
            graph.delete_node(node)
        graph.delete_node(ns.node)
        log.debug("netns: %s removed", ns.path)


def _ns_identity_of(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
