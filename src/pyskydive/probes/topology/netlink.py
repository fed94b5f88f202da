"""Netlink topology probe: the interfaces, addresses, routes and neighbours of one namespace.

Theory of operation
-------------------
One :class:`NetlinkProbe` per network namespace (the agent's own, and one per ``netns`` node).
It opens an rtnetlink socket *inside* that namespace (pyroute2 creates it there and hands the
fd back), subscribes to link/address/route/neighbour groups first, then dumps the current
state, so no change falls between the dump and the stream. Messages are turned into records
by :mod:`pyskydive.probes.topology.netlink_msg` (pure) and applied to the graph here:

- one node per ifindex, owned (``ownership``) by the host or netns node; renames, MAC and MTU
  changes update that node, never replace it;
- ``layer2`` edges: master → slave (bridge, bond, OVS), parent → child (vlan, macvlan, ...),
  and one edge per veth pair with ``Type: veth``, found across namespaces through the
  ``IFLA_LINK_NETNSID`` of the veth and the shared :class:`TopologyContext`;
- counters are polled every ``metrics_update`` seconds into ``Metric``/``LastUpdateMetric``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from pyroute2 import AsyncIPRoute

from pyskydive.errors import ProtocolError
from pyskydive.graph import Edge, Node
from pyskydive.probes.topology import netlink_msg as nlm
from pyskydive.probes.topology.registry import ROOT_NS, TopologyContext, new_id
from pyskydive.probes.topology.tid import child_tid

__all__ = ["NetlinkProbe"]

log = logging.getLogger(__name__)

_LINK_EVENTS = {"RTM_NEWLINK", "RTM_DELLINK"}
_ADDR_EVENTS = {"RTM_NEWADDR", "RTM_DELADDR"}
_ROUTE_EVENTS = {"RTM_NEWROUTE", "RTM_DELROUTE"}
_NEIGH_EVENTS = {"RTM_NEWNEIGH", "RTM_DELNEIGH"}
_OWNERSHIP = {"RelationType": "ownership"}


class NetlinkProbe:
    """Mirror one network namespace's links into the graph, under ``owner``."""

    def __init__(
        self,
        ctx: TopologyContext,
        owner: Node,
        *,
        ns_key: str = ROOT_NS,
        ns_path: str | None = None,
        metrics_update: float = 30.0,
    ) -> None:
        self.ctx = ctx
        self.owner = owner
        self.ns_key = ns_key
        self.ns_path = ns_path
        self.metrics_update = metrics_update
        self._ipr: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._links: dict[int, nlm.Link] = {}
        self._nodes: dict[int, Node] = {}
        self._addrs: dict[int, dict[int, list[str]]] = {}  # ifindex -> family -> cidrs
        self._routes: dict[Any, nlm.Route] = {}
        self._neighs: dict[tuple[int, str], nlm.Neighbor] = {}
        self._l2: dict[tuple[str, int], Edge] = {}  # ("master"|"parent", child ifindex) -> edge
        self._nsid_keys: dict[int, str] = {}
        self._metrics: dict[int, dict[str, int]] = {}
        self._metric_start: dict[int, int] = {}
        self._dirty_routes = False
        self._unpaired: set[int] = set()  # veths whose peer edge is not made yet

    @property
    def where(self) -> str:
        return self.ns_key or "root namespace"

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the socket in the namespace, dump, and start following events."""
        kwargs: dict[str, Any] = {}
        if self.ns_path is not None:
            kwargs = {"netns": self.ns_path, "flags": 0}  # flags=0: never create a netns
        self._ipr = AsyncIPRoute(**kwargs)
        await self._ipr.bind()
        await self._dump()
        self._tasks.append(asyncio.create_task(self._follow(), name=f"netlink:{self.where}"))
        if self.metrics_update > 0:
            self._tasks.append(
                asyncio.create_task(self._poll_metrics(), name=f"metrics:{self.where}")
            )

    async def stop(self, *, remove_nodes: bool = True) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._ipr is not None:
            with contextlib.suppress(Exception):
                self._ipr.close()
            self._ipr = None
        if remove_nodes:
            for index in list(self._nodes):
                self._remove_link(index)

    async def _dump(self) -> None:
        ipr = self._ipr
        for msg in [m async for m in await ipr.link("dump")]:
            self._on_message(msg)
        for msg in [m async for m in await ipr.addr("dump")]:
            self._on_message(msg)
        for family in (2, 10):
            for msg in [m async for m in await ipr.route("dump", family=family)]:
                self._on_message(msg)
        for msg in [m async for m in await ipr.neigh("dump")]:
            self._on_message(msg)
        self._flush_routes()
        await self._resolve_peers()

    async def _follow(self) -> None:
        while True:
            async for msg in self._ipr.get():
                try:
                    self._on_message(msg)
                except Exception:
                    log.exception("netlink (%s): cannot apply %s", self.where, nlm.event_name(msg))
            self._flush_routes()
            await self._resolve_peers()

    # -- messages --------------------------------------------------------------------------

    def _on_message(self, msg: Any) -> None:
        event = nlm.event_name(msg)  # not msg.get("event"): that reads IFLA_EVENT first
        try:
            if event in _LINK_EVENTS:
                link = nlm.link_from_msg(msg)
                # The bridge module also reports its ports with family AF_BRIDGE (and a
                # DELLINK when a port leaves); the AF_UNSPEC message carries the link itself.
                if link.family != nlm.AF_BRIDGE:
                    self._on_link(link)
            elif event in _ADDR_EVENTS:
                self._on_addr(nlm.addr_from_msg(msg))
            elif event in _ROUTE_EVENTS:
                route = nlm.route_from_msg(msg)
                if route is not None:
                    self._on_route(route)
            elif event in _NEIGH_EVENTS:
                neigh = nlm.neigh_from_msg(msg)
                if neigh is not None:
                    self._on_neigh(neigh)
        except ProtocolError as exc:
            log.warning("netlink (%s): skipped a malformed %s: %s", self.where, event, exc)

    def _on_link(self, link: nlm.Link) -> None:
        if link.deleted:
            self._remove_link(link.index)
            return
        graph = self.ctx.graph
        previous = self._links.get(link.index)
        self._links[link.index] = link
        md = dict(link.metadata)
        md.pop("Metric", None)
        fam = self._addrs.get(link.index, {})
        if fam.get(2):
            md["IPV4"] = list(fam[2])
        if fam.get(10):
            md["IPV6"] = list(fam[10])
        node = self._nodes.get(link.index)
        tid_parent = self.owner.metadata.get("TID")
        if isinstance(tid_parent, str):
            md["TID"] = child_tid(tid_parent, link.name, str(md.get("Type", "")))
        if node is None:
            node = graph.add_node(new_id(), md, origin=self.ctx.origin)
            self._nodes[link.index] = node
            self.ctx.interfaces[(self.ns_key, link.index)] = node
            graph.add_edge(new_id(), self.owner.id, node.id, dict(_OWNERSHIP), origin=node.origin)
        else:
            keep = {"Metric", "LastUpdateMetric", "RoutingTables", "Neighbors", "LinkNetNsName"}
            gone = [k for k in node.metadata if k not in md and k not in _foreign_keys(node, keep)]
            graph.update_node(node, md, gone)
        self._update_l2(link, previous)
        if link.peer_index is not None:
            self._unpaired.add(link.index)

    def _remove_link(self, index: int) -> None:
        self._links.pop(index, None)
        self._unpaired.discard(index)
        self._addrs.pop(index, None)
        self._metrics.pop(index, None)
        self._metric_start.pop(index, None)
        for kind in ("master", "parent"):
            self._l2.pop((kind, index), None)
        node = self._nodes.pop(index, None)
        if node is None:
            return
        self.ctx.interfaces.pop((self.ns_key, index), None)
        self.ctx.graph.delete_node(node)

    # -- layer2 edges ----------------------------------------------------------------------

    def _update_l2(self, link: nlm.Link, previous: nlm.Link | None) -> None:
        self._set_l2("master", link.index, link.master_index)
        parent = link.parent_index if link.link_netnsid is None else None
        self._set_l2("parent", link.index, parent)
        # Slaves and children that arrived before this link.
        if previous is None:
            for other in self._links.values():
                if other.master_index == link.index:
                    self._set_l2("master", other.index, link.index)
                if other.parent_index == link.index and other.link_netnsid is None:
                    self._set_l2("parent", other.index, link.index)

    def _set_l2(self, kind: str, child_index: int, parent_index: int | None) -> None:
        graph = self.ctx.graph
        edge = self._l2.get((kind, child_index))
        parent = self._nodes.get(parent_index) if parent_index else None
        child = self._nodes.get(child_index)
        if edge is not None:
            if parent is not None and edge.parent == parent.id and edge.id in graph.edges:
                return
            self._l2.pop((kind, child_index))
            graph.delete_edge(edge)
        if parent is None or child is None:
            return
        self._l2[(kind, child_index)] = graph.add_edge(
            new_id(), parent.id, child.id, {"RelationType": "layer2"}, origin=child.origin
        )

    async def _resolve_peers(self) -> None:
        """Link each veth to its peer, which may live in another namespace."""
        for index in list(self._unpaired):
            link = self._links.get(index)
            node = self._nodes.get(index)
            if link is None or node is None or link.peer_index is None:
                self._unpaired.discard(index)
                continue
            if any(e.metadata.get("Type") == "veth" for e in _all_edges(self.ctx, node)):
                self._unpaired.discard(index)
                continue
            if link.link_netnsid is None:
                peer_key: str | None = self.ns_key
            else:
                peer_key = await self._nsid_to_key(link.link_netnsid)
                name = os.path.basename(peer_key) if peer_key else None
                if name and node.metadata.get("LinkNetNsName") != name:
                    self.ctx.graph.update_node(node, {"LinkNetNsName": name})
            if peer_key is None:
                continue
            peer = self.ctx.interfaces.get((peer_key, link.peer_index))
            if peer is None or self.ctx.graph.get_node(peer.id) is None:
                continue
            if peer.metadata.get("PeerIfIndex") != index:
                # The kernel announces the first end of a pair before the second exists,
                # with IFLA_LINK 0, and says nothing more about it: complete it from here.
                if peer.metadata.get("Type") != "veth" or peer.metadata.get("PeerIfIndex"):
                    continue
                self.ctx.graph.update_node(peer, {"PeerIfIndex": index})
            self._unpaired.discard(index)
            if any(e.metadata.get("Type") == "veth" for e in _all_edges(self.ctx, peer)):
                continue
            parent, child = sorted((node, peer), key=lambda n: n.id)
            self.ctx.graph.add_edge(
                new_id(),
                parent.id,
                child.id,
                {"RelationType": "layer2", "Type": "veth"},
                origin=self.ctx.origin,
            )

    async def _nsid_to_key(self, nsid: int) -> str | None:
        """Which known namespace has ``nsid`` as seen from this one."""
        if nsid in self._nsid_keys and self._nsid_keys[nsid] in self.ctx.namespaces:
            return self._nsid_keys[nsid]
        for key, path in list(self.ctx.namespaces.items()):
            if key == self.ns_key:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                reply = await self._ipr.get_netnsid(fd=fd)
            except Exception as exc:
                log.debug("netlink (%s): get_netnsid(%s): %s", self.where, path, exc)
                continue
            finally:
                os.close(fd)
            got = reply.get("nsid") if isinstance(reply, dict) else None
            if isinstance(got, int) and got < 2**31:
                self._nsid_keys[got] = key
                if got == nsid:
                    return key
        return None

    # -- addresses, routes, neighbours -----------------------------------------------------

    def _on_addr(self, addr: nlm.Addr) -> None:
        family = self._addrs.setdefault(addr.index, {}).setdefault(addr.family, [])
        if addr.deleted:
            if addr.cidr in family:
                family.remove(addr.cidr)
        elif addr.cidr not in family:
            family.append(addr.cidr)
        node = self._nodes.get(addr.index)
        if node is None:
            return
        key = "IPV4" if addr.family == 2 else "IPV6"
        if family:
            self.ctx.graph.update_node(node, {key: list(family)})
        else:
            self.ctx.graph.update_node(node, delete=[key])

    def _on_route(self, route: nlm.Route) -> None:
        key = route.key
        if route.deleted:
            self._routes.pop(key, None)
        else:
            self._routes[key] = route
        self._dirty_routes = True

    def _on_neigh(self, neigh: nlm.Neighbor) -> None:
        if neigh.family not in (nlm.AF_INET, nlm.AF_INET6):
            return  # bridge FDB entries churn with traffic; not part of Neighbors yet
        key = (neigh.index, neigh.ip)
        if neigh.deleted:
            self._neighs.pop(key, None)
        else:
            self._neighs[key] = neigh
        node = self._nodes.get(neigh.index)
        if node is None:
            return
        entries = sorted(
            (n for (i, _), n in self._neighs.items() if i == neigh.index), key=lambda n: n.ip
        )
        value = [
            {
                "IP": n.ip,
                "MAC": n.mac,
                "State": list(n.state),
                "Flags": list(n.flags),
                "IfIndex": n.index,
            }
            for n in entries
        ]
        if value:
            self.ctx.graph.update_node(node, {"Neighbors": value})
        else:
            self.ctx.graph.update_node(node, delete=["Neighbors"])

    def _flush_routes(self) -> None:
        if not self._dirty_routes:
            return
        self._dirty_routes = False
        routes = list(self._routes.values())
        for index, node in self._nodes.items():
            tables = nlm.routing_tables(routes, index)
            if tables:
                self.ctx.graph.update_node(node, {"RoutingTables": tables})
            else:
                self.ctx.graph.update_node(node, delete=["RoutingTables"])

    # -- metrics ---------------------------------------------------------------------------

    async def _poll_metrics(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_update)
            try:
                msgs = [m async for m in await self._ipr.link("dump")]
            except Exception as exc:
                log.warning("netlink (%s): metrics dump failed: %s", self.where, exc)
                continue
            now = self.ctx.graph.now()
            for msg in msgs:
                try:
                    link = nlm.link_from_msg(msg)
                except ProtocolError:
                    continue
                self._apply_metrics(link, now)

    def _apply_metrics(self, link: nlm.Link, now: int) -> None:
        node = self._nodes.get(link.index)
        if node is None or not link.metrics:
            return
        current = dict(link.metrics)
        previous = self._metrics.get(link.index)
        self._metrics[link.index] = current
        if previous == current:
            return
        start = self._metric_start.setdefault(link.index, node.created_at)
        update: dict[str, Any] = {"Metric": dict(current, Start=start, Last=now)}
        if previous is not None:  # the first poll has no period to report a delta for
            last = node.metadata.get("Metric", {}).get("Last", start)
            update["LastUpdateMetric"] = dict(
                nlm.metric_delta(previous, current), Start=last, Last=now
            )
        self.ctx.graph.update_node(node, update)


def _foreign_keys(node: Node, keep: set[str]) -> set[str]:
    """Metadata keys other probes or slower paths own: a link update must not drop them."""
    own = {
        "Name",
        "Type",
        "IfIndex",
        "MTU",
        "MAC",
        "State",
        "LinkFlags",
        "EncapType",
        "Vlan",
        "BondMode",
        "MasterIndex",
        "ParentIndex",
        "PeerIfIndex",
        "IPV4",
        "IPV6",
        "TID",
        "VNI",
        "TunMode",
        "Alias",
        "OperState",
        "NetNsID",
        "LinkNetNsID",
    }
    return {k for k in node.metadata if k not in own} | keep


def _all_edges(ctx: TopologyContext, node: Node) -> list[Edge]:
    return ctx.graph.out_edges(node.id) + ctx.graph.in_edges(node.id)
