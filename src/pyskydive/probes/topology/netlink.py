"""Netlink topology probe: the interfaces, addresses, routes and neighbours of one namespace.

Theory of operation
-------------------
One :class:`NetlinkProbe` per network namespace (the agent's own, and one per ``netns`` node).
It opens a raw rtnetlink socket *inside* that namespace (:mod:`nsutil`, :mod:`rtnl_socket`),
subscribed to the link/address/route/neighbour groups before it dumps the current state on the
same socket, so no change falls between the dump and the stream and everything arrives in
kernel order. Datagrams are decoded straight from bytes by :mod:`rtnl_decode` (pure, and
golden-tested to give the same records as :mod:`netlink_msg`) and applied to the graph here:

- one node per ifindex, owned (``ownership``) by the host or netns node; renames, MAC and MTU
  changes update that node, never replace it;
- ``layer2`` edges: master → slave (bridge, bond, OVS), parent → child (vlan, macvlan, ...),
  and one edge per veth pair with ``Type: veth``, found across namespaces through the
  ``IFLA_LINK_NETNSID`` of the veth and the shared :class:`TopologyContext`;
- counters are polled every ``metrics_update`` seconds into ``Metric``/``LastUpdateMetric``;
- a receive buffer overrun (events lost) triggers a full re-dump that removes what is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from typing import Any

from pyskydive.errors import ProbeError, ProtocolError
from pyskydive.graph import Edge, Node
from pyskydive.probes.topology import netlink_msg as nlm
from pyskydive.probes.topology.nsutil import NetnsRunner, RunnerClosed
from pyskydive.probes.topology.registry import ROOT_NS, TopologyContext, new_id
from pyskydive.probes.topology.rtnl_decode import Done, Error, Skip, decode_with_seq
from pyskydive.probes.topology.rtnl_socket import (
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_GETROUTE,
    RtnlSocket,
    query_nsid,
)
from pyskydive.probes.topology.tid import child_tid

__all__ = ["NetlinkProbe"]

log = logging.getLogger(__name__)

AF_INET = nlm.AF_INET
AF_INET6 = nlm.AF_INET6
_OWNERSHIP = {"RelationType": "ownership"}


class NetlinkProbe:
    """Mirror one network namespace's links into the graph, under ``owner``."""

    def __init__(
        self,
        ctx: TopologyContext,
        owner: Node,
        runner: NetnsRunner,
        *,
        ns_key: str = ROOT_NS,
        ns_path: str | None = None,
        metrics_update: float = 30.0,
    ) -> None:
        self.ctx = ctx
        self.owner = owner
        self.runner = runner
        self.ns_key = ns_key
        self.ns_path = ns_path
        self.metrics_update = metrics_update
        self._sock: RtnlSocket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._links: dict[int, nlm.Link] = {}
        self._nodes: dict[int, Node] = {}
        self._addrs: dict[int, dict[int, list[str]]] = {}  # ifindex -> family -> cidrs
        self._routes: dict[Any, nlm.Route] = {}
        # Per interface, so a change costs the routes and neighbours of that interface only
        # (a root namespace with hundreds of veths sees a route change per veth).
        self._routes_of: dict[int, set[Any]] = {}  # ifindex -> keys of routes via it
        self._neighs: dict[int, dict[str, nlm.Neighbor]] = {}  # ifindex -> ip -> entry
        self._dirty_routes: set[int] = set()
        self._l2: dict[tuple[str, int], Edge] = {}  # ("master"|"parent", child ifindex) -> edge
        self._nsid_keys: dict[int, str] = {}
        self._nsid_lookup: asyncio.Task[None] | None = None
        self._nsid_wanted: set[str] = set()
        self._metrics: dict[int, dict[str, int]] = {}
        self._metric_start: dict[int, int] = {}
        self._unpaired: set[int] = set()  # veths whose peer edge is not made yet
        self._peers_dirty = False
        self._peers_gen = -1
        # Dumps in flight: seq -> what to do with their replies and at their end.
        self._dumps: dict[int, str] = {}
        self._seen: set[int] | None = None  # links seen by a resync dump
        self._synced: asyncio.Future[None] | None = None

    @property
    def where(self) -> str:
        return self.ns_key or "root namespace"

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the socket in the namespace, dump, and start following events."""
        self._sock = await RtnlSocket.open(
            self.runner, self.ns_path, self._on_datagram, self._on_overrun
        )
        self._synced = asyncio.get_running_loop().create_future()
        self._request_full_dump("initial")
        try:
            await asyncio.wait_for(self._synced, 30)
        except TimeoutError as exc:
            raise ProbeError(f"netlink ({self.where}): no answer to the initial dump") from exc
        if self.metrics_update > 0:
            self._tasks.append(
                asyncio.create_task(self._poll_metrics(), name=f"metrics:{self.where}")
            )

    async def stop(self, *, remove_nodes: bool = True) -> None:
        for task in self._tasks + ([self._nsid_lookup] if self._nsid_lookup else []):
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._synced is not None and not self._synced.done():
            self._synced.set_exception(ProbeError(f"netlink ({self.where}): stopped"))
        if remove_nodes:
            for index in list(self._nodes):
                self._remove_link(index)

    def _request_full_dump(self, purpose: str) -> None:
        assert self._sock is not None
        if purpose == "resync":
            self._seen = set()
            self._addrs.clear()
            self._routes.clear()
            self._routes_of.clear()
            self._neighs.clear()
        self._dumps[self._sock.dump(RTM_GETLINK)] = purpose
        self._dumps[self._sock.dump(RTM_GETADDR)] = "addr"
        self._dumps[self._sock.dump(RTM_GETROUTE, AF_INET)] = "route"
        self._dumps[self._sock.dump(RTM_GETROUTE, AF_INET6)] = "route"
        self._dumps[self._sock.dump(RTM_GETNEIGH)] = purpose + "-end"

    def _on_overrun(self) -> None:
        if "resync" in self._dumps.values():
            return  # one resync at a time; the one queued will see the current state
        log.warning(
            "netlink (%s): events were lost (receive buffer overrun), resyncing", self.where
        )
        self._request_full_dump("resync")

    def _on_datagram(self, data: bytes) -> None:
        try:
            for seq, record in decode_with_seq(data, strict=False):
                try:
                    self._on_record(seq, record)
                except Exception:
                    log.exception("netlink (%s): cannot apply %s", self.where, record)
        except ProtocolError as exc:
            log.warning("netlink (%s): skipped a malformed message: %s", self.where, exc)
        self._flush_routes()
        self._resolve_peers()

    def _on_record(self, seq: int, record: object) -> None:
        if isinstance(record, nlm.Link):
            # The bridge module also reports its ports with family AF_BRIDGE (and a
            # DELLINK when a port leaves); the AF_UNSPEC message carries the link itself.
            if record.family == nlm.AF_BRIDGE:
                return
            self._on_link(record)
            purpose = self._dumps.get(seq) if seq else None
            if purpose == "metrics":
                self._apply_metrics(record, self.ctx.graph.now())
            elif purpose == "resync" and self._seen is not None:
                self._seen.add(record.index)
        elif isinstance(record, nlm.Addr):
            self._on_addr(record)
        elif isinstance(record, nlm.Route):
            self._on_route(record)
        elif isinstance(record, nlm.Neighbor):
            self._on_neigh(record)
        elif isinstance(record, Done | Error):
            self._dump_done(record.seq, record)
        elif isinstance(record, Skip) and record.reason.startswith("malformed"):
            log.warning("netlink (%s): skipped a %s", self.where, record.reason)

    def _dump_done(self, seq: int, record: Done | Error) -> None:
        purpose = self._dumps.pop(seq, None)
        if purpose is None:
            return
        if isinstance(record, Error) and record.errno:
            log.warning("netlink (%s): dump failed: %s", self.where, os.strerror(record.errno))
        if self._sock is not None:
            self._sock.dump_finished(seq)
        if purpose == "resync" and self._seen is not None:
            for index in [i for i in self._nodes if i not in self._seen]:
                self._remove_link(index)
            self._seen = None
        elif purpose.endswith("-end"):
            self._dirty_routes.update(self._nodes)
            for index, node in self._nodes.items():
                self._refresh_addrs(index, node)
                self._refresh_neighs(index, node)
            if self._synced is not None and not self._synced.done():
                self._synced.set_result(None)

    # -- links -----------------------------------------------------------------------------

    def _on_link(self, link: nlm.Link) -> None:
        if link.deleted:
            self._remove_link(link.index)
            return
        graph = self.ctx.graph
        previous = self._links.get(link.index)
        self._links[link.index] = link
        md = dict(link.metadata)
        fam = self._addrs.get(link.index, {})
        if fam.get(AF_INET):
            md["IPV4"] = list(fam[AF_INET])
        if fam.get(AF_INET6):
            md["IPV6"] = list(fam[AF_INET6])
        node = self._nodes.get(link.index)
        tid_parent = self.owner.metadata.get("TID")
        if isinstance(tid_parent, str):
            md["TID"] = child_tid(tid_parent, link.name, str(md.get("Type", "")))
        if node is None:
            node = graph.add_node(new_id(), md, origin=self.ctx.origin)
            self._nodes[link.index] = node
            self.ctx.interfaces[(self.ns_key, link.index)] = node
            self.ctx.generation += 1
            graph.add_edge(new_id(), self.owner.id, node.id, dict(_OWNERSHIP), origin=node.origin)
        else:
            override = self.ctx.type_overrides.get(node.id)
            if override is not None:
                md["Type"] = override
            keep = {"Metric", "LastUpdateMetric", "RoutingTables", "Neighbors", "LinkNetNsName"}
            gone = [k for k in node.metadata if k not in md and k not in _foreign_keys(node, keep)]
            graph.update_node(node, md, gone)
        self._update_l2(link, previous)
        if link.peer_index is not None:
            self._unpaired.add(link.index)
            self._peers_dirty = True
        if previous is not None and _is_up(previous) and not _is_up(link):
            # The kernel flushes IPv4 routes through a link that goes down without a word.
            self._purge_routes(link.index, only_family=AF_INET)

    def _remove_link(self, index: int) -> None:
        self._links.pop(index, None)
        self._unpaired.discard(index)
        self._purge_routes(index)
        self._neighs.pop(index, None)
        self._addrs.pop(index, None)
        self._metrics.pop(index, None)
        self._metric_start.pop(index, None)
        for kind in ("master", "parent"):
            self._l2.pop((kind, index), None)
        node = self._nodes.pop(index, None)
        if node is None:
            return
        self.ctx.interfaces.pop((self.ns_key, index), None)
        self.ctx.type_overrides.pop(node.id, None)
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

    def _resolve_peers(self, *, force: bool = False) -> None:
        """Link each veth to its peer, which may live in another namespace.

        Runs after every datagram, so it returns at once unless a veth changed here or an
        interface appeared anywhere since the last try (a peer in a namespace nobody watches
        must not cost a scan per message)."""
        if not self._unpaired:
            return
        if not force and not self._peers_dirty and self._peers_gen == self.ctx.generation:
            return
        self._peers_dirty = False
        self._peers_gen = self.ctx.generation
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
                peer_key = self.ns_key
            else:
                known = self._nsid_keys.get(link.link_netnsid)
                if known is None or known not in self.ctx.namespaces:
                    self._lookup_nsids(self._peer_candidates(index, link.peer_index))
                    continue
                peer_key = known
                name = os.path.basename(peer_key) if peer_key else None
                if name and node.metadata.get("LinkNetNsName") != name:
                    self.ctx.graph.update_node(node, {"LinkNetNsName": name})
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

    def _peer_candidates(self, index: int, peer_index: int) -> set[str]:
        """Namespaces holding a veth that could be the peer of ours (by ifindexes)."""
        return {
            key
            for (key, idx), node in self.ctx.interfaces.items()
            if idx == peer_index
            and key != self.ns_key
            and node.metadata.get("Type") == "veth"
            and node.metadata.get("PeerIfIndex") in (index, None, 0)
        }

    def _lookup_nsids(self, candidates: set[str]) -> None:
        """Learn, in the background, the ids this namespace gives to ``candidates``.

        Only namespaces that hold a plausible peer are asked (each question is a socket
        made inside this namespace), not every namespace of the host."""
        known = set(self._nsid_keys.values())
        self._nsid_wanted.update(k for k in candidates if k not in known)
        if self._nsid_wanted and (self._nsid_lookup is None or self._nsid_lookup.done()):
            self._nsid_lookup = asyncio.create_task(self._learn_nsids())

    async def _learn_nsids(self) -> None:
        learned = 0
        while self._nsid_wanted:
            key = self._nsid_wanted.pop()
            path = self.ctx.namespaces.get(key)
            if path is None:
                continue
            try:
                nsid = await query_nsid(self.runner, self.ns_path, path)
            except RunnerClosed:
                return
            except OSError as exc:
                log.debug("netlink (%s): nsid of %s: %s", self.where, path, exc)
                continue
            if nsid is not None:
                self._nsid_keys[nsid] = key
                learned += 1
        if learned:  # only then: an unresolvable peer must not loop back here forever
            self._resolve_peers(force=True)

    def peers_may_have_changed(self) -> None:
        """A namespace appeared: veths that pointed nowhere may now find their peer."""
        if self._unpaired:
            self._resolve_peers(force=True)

    # -- addresses, routes, neighbours -----------------------------------------------------

    def _on_addr(self, addr: nlm.Addr) -> None:
        family = self._addrs.setdefault(addr.index, {}).setdefault(addr.family, [])
        if addr.deleted:
            if addr.cidr in family:
                family.remove(addr.cidr)
        elif addr.cidr not in family:
            family.append(addr.cidr)
        node = self._nodes.get(addr.index)
        if node is not None:
            self._refresh_addrs(addr.index, node)

    def _refresh_addrs(self, index: int, node: Node) -> None:
        fam = self._addrs.get(index, {})
        set_ = {}
        delete = []
        for family, key in ((AF_INET, "IPV4"), (AF_INET6, "IPV6")):
            if fam.get(family):
                set_[key] = list(fam[family])
            else:
                delete.append(key)
        self.ctx.graph.update_node(node, set_, delete)

    def _on_route(self, route: nlm.Route) -> None:
        key = route.key
        old = self._routes.pop(key, None)
        if old is not None:
            for index in _route_ifindexes(old):
                self._routes_of.get(index, set()).discard(key)
                self._dirty_routes.add(index)
        if not route.deleted:
            self._routes[key] = route
            for index in _route_ifindexes(route):
                self._routes_of.setdefault(index, set()).add(key)
                self._dirty_routes.add(index)

    def _purge_routes(self, index: int, only_family: int | None = None) -> None:
        """Forget routes through ``index`` that the kernel removed without telling."""
        for key in list(self._routes_of.get(index, ())):
            route = self._routes.get(key)
            if route is not None and (only_family is None or route.family == only_family):
                self._on_route(dataclasses.replace(route, deleted=True))

    def _on_neigh(self, neigh: nlm.Neighbor) -> None:
        if neigh.family not in (nlm.AF_INET, nlm.AF_INET6):
            return  # bridge FDB entries churn with traffic; not part of Neighbors yet
        entries = self._neighs.setdefault(neigh.index, {})
        if neigh.deleted:
            entries.pop(neigh.ip, None)
        else:
            entries[neigh.ip] = neigh
        node = self._nodes.get(neigh.index)
        if node is not None:
            self._refresh_neighs(neigh.index, node)

    def _refresh_neighs(self, index: int, node: Node) -> None:
        entries = self._neighs.get(index, {})
        value = [
            {
                "IP": n.ip,
                "MAC": n.mac,
                "State": list(n.state),
                "Flags": list(n.flags),
                "IfIndex": n.index,
            }
            for _, n in sorted(entries.items())
        ]
        if value:
            self.ctx.graph.update_node(node, {"Neighbors": value})
        else:
            self.ctx.graph.update_node(node, delete=["Neighbors"])

    def _flush_routes(self) -> None:
        if not self._dirty_routes:
            return
        dirty, self._dirty_routes = self._dirty_routes, set()
        for index in dirty:
            node = self._nodes.get(index)
            if node is None:
                continue
            keys = self._routes_of.get(index, ())
            tables = nlm.routing_tables([self._routes[k] for k in keys], index)
            if tables:
                self.ctx.graph.update_node(node, {"RoutingTables": tables})
            else:
                self.ctx.graph.update_node(node, delete=["RoutingTables"])

    # -- metrics ---------------------------------------------------------------------------

    async def _poll_metrics(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_update)
            if self._sock is not None and "metrics" not in self._dumps.values():
                self._dumps[self._sock.dump(RTM_GETLINK)] = "metrics"

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


def _is_up(link: nlm.Link) -> bool:
    return link.metadata.get("State") == "UP"


def _route_ifindexes(route: nlm.Route) -> set[int]:
    return {hop["IfIndex"] for hop in route.nexthops if isinstance(hop.get("IfIndex"), int)}


def _all_edges(ctx: TopologyContext, node: Node) -> list[Edge]:
    return ctx.graph.out_edges(node.id) + ctx.graph.in_edges(node.id)
