"""Pure translation of rtnetlink messages into typed records (no I/O).

Theory of operation
-------------------
This module defines the records (:class:`Link`, :class:`Addr`, :class:`Route`,
:class:`Neighbor`) and the reference translation of pyroute2-decoded messages into them. The
probe itself decodes raw bytes with :mod:`rtnl_decode` (14x faster, on the event-latency hot
path), which is tested to give exactly the records this module gives: this translation, built
on pyroute2's well-tested parser, is its oracle. One function per message type:

========================  =====================================  ==========================
message (``nlmsghdr``)    function                               record
========================  =====================================  ==========================
RTM_NEWLINK/RTM_DELLINK   :func:`link_from_msg`                  :class:`Link`
RTM_NEWADDR/RTM_DELADDR   :func:`addr_from_msg`                  :class:`Addr`
RTM_NEWROUTE/DELROUTE     :func:`route_from_msg`                 :class:`Route` or ``None``
RTM_NEWNEIGH/DELNEIGH     :func:`neigh_from_msg`                 :class:`Neighbor` or ``None``
========================  =====================================  ==========================

The records carry Skydive v0.28 metadata names, so the shell only has to apply them to the
graph. The messages are duck-typed (``Any``): a pyroute2 message as ``AsyncIPRoute`` yields it,
or one decoded from bytes (``ifinfmsg(raw).decode()``, which lacks the ``event`` key: the
message type is always read from ``msg["header"]["type"]``). Use :func:`event_name`, not
``msg.get("event")``: pyroute2 resolves ``get("event")`` to the ``IFLA_EVENT`` attribute first,
which the kernel adds to some link notifications (e.g. a feature change).

Every malformed input raises :class:`~pyskydive.errors.ProtocolError` and nothing else: a
message pyroute2 could only partly decode (``header["error"]`` set), a missing mandatory
attribute, or a wrong object. ``None`` means "valid, but not for the topology". pyroute2
decodes attributes lazily and hands back the raw bytes of one it cannot decode (logging a
warning), so every optional attribute is type-checked and an undecodable one is skipped.

Corner cases, from the kernel (``net/core/rtnetlink.c``) and Skydive's behaviour:

- ``IFLA_LINK`` is omitted when it equals the device's own ifindex. Older kernels did so
  even for a veth whose peer lives in another netns under the same ifindex, so a veth
  without ``IFLA_LINK`` has ``peer_index == index``; ``IFLA_LINK == 0`` means no peer.
  A vxlan has no ``IFLA_LINK``: its underlay device (``dev``) is ``IFLA_VXLAN_LINK``.
- The bridge module sends its own RTM_NEWLINK/RTM_DELLINK with ``ifi_family == AF_BRIDGE``
  about ports: partial messages (no ``IFLA_LINKINFO``, no stats), and an ``AF_BRIDGE``
  RTM_DELLINK means "left the bridge", not "deleted". :attr:`Link.family` exposes this; the
  shell should not take such a message as the interface's state.
- Skydive v0.28 named ``LinkFlags`` and neighbour state/flags with off-by-one bit tables
  (e.g. loopback's IFF_LOOPBACK read as "POINTTOPOINT", NTF_STICKY as "NTF_ROUTER"); we use
  the kernel's names for the bits that are set.
- ``State`` is the administrative state (IFF_UP), as the project's DESIGN.md §2.1 says.
- Counters follow Skydive's ``InterfaceMetric``, whose JSON omits zero fields: zero counters
  are left out, so an empty dict means "all zero" (Skydive's ``IsZero``).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pyskydive.errors import ProtocolError
from pyskydive.probes.topology import netlink_metadata as names
from pyskydive.probes.topology.netlink_metadata import (
    metric_delta,
    metrics_from_stats,
    routing_tables,
)

AF_INET = names.AF_INET
AF_INET6 = names.AF_INET6
AF_BRIDGE = names.AF_BRIDGE
METRIC_NAMES = names.METRIC_NAMES

__all__ = [
    "AF_BRIDGE",
    "AF_INET",
    "AF_INET6",
    "METRIC_NAMES",
    "Addr",
    "Link",
    "Neighbor",
    "Route",
    "addr_from_msg",
    "event_name",
    "link_from_msg",
    "metric_delta",
    "metrics_from_stats",
    "neigh_from_msg",
    "route_from_msg",
    "routing_tables",
]


# What a broken message can raise while we walk it (pyroute2 objects, or not one at all).
_MALFORMED: Final = (LookupError, TypeError, ValueError, AttributeError, ArithmeticError)


@dataclass(frozen=True, slots=True)
class Link:
    """One RTM_NEWLINK/RTM_DELLINK: an interface and its Skydive metadata."""

    index: int
    name: str
    deleted: bool
    metadata: dict[str, Any]  # node metadata from this message; treat as read-only
    master_index: int | None  # IFLA_MASTER: bridge, bond, team or OVS master
    parent_index: int | None  # IFLA_LINK (vxlan: IFLA_VXLAN_LINK); not veth, never self or 0
    peer_index: int | None  # veth only: the peer's ifindex, in the peer's netns
    link_netnsid: int | None  # IFLA_LINK_NETNSID: peer/parent netns id, seen from this netns
    metrics: dict[str, int] | None  # IFLA_STATS64 (or IFLA_STATS); None when absent
    family: int = 0  # ifi_family: AF_BRIDGE (7) marks the bridge module's port notices


@dataclass(frozen=True, slots=True)
class Addr:
    """One RTM_NEWADDR/RTM_DELADDR."""

    index: int
    family: int
    cidr: str  # "10.0.0.1/24", "fe80::1/64"
    deleted: bool


@dataclass(frozen=True, slots=True)
class Route:
    """One RTM_NEWROUTE/RTM_DELROUTE.

    ``nexthops`` are Skydive ``NextHop`` dicts: ``{"IfIndex", "Priority", "IP"?}``; a route
    without an output interface (blackhole, unreachable...) has none.
    """

    table: int
    family: int
    prefix: str  # "10.0.0.0/24"; "0.0.0.0/0" or "::/0" for a default route
    protocol: int  # rtm_protocol (RTPROT_*)
    src: str | None  # RTA_PREFSRC
    nexthops: tuple[dict[str, Any], ...]
    deleted: bool
    priority: int | None = None  # RTA_PRIORITY (the metric)
    tos: int = 0

    @property
    def key(self) -> tuple[int, int, str, int, int | None]:
        """The kernel's identity of the route: a RTM_DELROUTE has the same key as its NEW."""
        return (self.family, self.table, self.prefix, self.tos, self.priority)


@dataclass(frozen=True, slots=True)
class Neighbor:
    """One RTM_NEWNEIGH/RTM_DELNEIGH (ARP/NDP entry, or FDB entry when family is AF_BRIDGE)."""

    index: int
    family: int
    ip: str  # "" for an FDB entry without NDA_DST
    mac: str
    state: tuple[str, ...]  # ("NUD_REACHABLE",)
    flags: tuple[str, ...]  # ("NTF_ROUTER",)
    deleted: bool  # RTM_DELNEIGH, or no NDA_LLADDR (unresolved): not a neighbour any more
    vlan: int | None = None  # NDA_VLAN (FDB)
    vni: int | None = None  # NDA_VNI (FDB on a vxlan)


# -- public functions ----------------------------------------------------------------------


def event_name(msg: Any) -> str | None:
    """``"RTM_NEWLINK"``... from the netlink header (or pyroute2's ``event`` key), or None."""
    try:
        header = msg["header"]
        mtype = header.get("type") if isinstance(header, Mapping) else None
        if isinstance(mtype, int) and mtype in names.RTM_NAMES:
            return names.RTM_NAMES[mtype]
        event = dict.get(msg, "event") if isinstance(msg, dict) else None
    except _MALFORMED:
        return None
    return event if isinstance(event, str) and event in names.RTM_TYPES else None


def link_from_msg(msg: Any) -> Link:
    """Translate a RTM_NEWLINK/RTM_DELLINK message; ProtocolError if malformed."""
    try:
        return _link(msg)
    except (*_MALFORMED, struct.error) as exc:
        raise ProtocolError(f"malformed link message: {exc!r}") from exc


def addr_from_msg(msg: Any) -> Addr:
    """Translate a RTM_NEWADDR/RTM_DELADDR message; ProtocolError if malformed."""
    try:
        return _addr(msg)
    except (*_MALFORMED, struct.error) as exc:
        raise ProtocolError(f"malformed address message: {exc!r}") from exc


def route_from_msg(msg: Any) -> Route | None:
    """Translate a RTM_NEWROUTE/RTM_DELROUTE; None for cloned/cache, local-table and non-IP."""
    try:
        return _route(msg)
    except (*_MALFORMED, struct.error) as exc:
        raise ProtocolError(f"malformed route message: {exc!r}") from exc


def neigh_from_msg(msg: Any) -> Neighbor | None:
    """Translate a RTM_NEWNEIGH/RTM_DELNEIGH; None for loopback and proxy entries.

    An entry without link-layer address (incomplete, failed, or any RTM_DELNEIGH) comes
    back with ``deleted=True`` and ``mac=""``: it leaves the interface's ``Neighbors``.
    """
    try:
        return _neigh(msg)
    except (*_MALFORMED, struct.error) as exc:
        raise ProtocolError(f"malformed neighbour message: {exc!r}") from exc


# -- translation ---------------------------------------------------------------------------


def _link(msg: Any) -> Link:
    deleted = _expect(msg, "link", "RTM_NEWLINK", "RTM_DELLINK")
    index = msg["index"]
    name = msg.get_attr("IFLA_IFNAME")
    if not isinstance(index, int) or index <= 0:
        raise ProtocolError(f"link message without an interface index ({index!r})")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"link message for ifindex {index} without IFLA_IFNAME")
    flags = int(msg["flags"])
    ifi_type = int(msg["ifi_type"])

    info = msg.get_attr("IFLA_LINKINFO")
    kind = _nested(info, "IFLA_INFO_KIND")
    data = _nested(info, "IFLA_INFO_DATA")
    link_type = kind if isinstance(kind, str) and kind else "device"

    metadata: dict[str, Any] = {
        "Name": name,
        "Type": link_type,
        "EncapType": names.ARPHRD_NAMES.get(ifi_type, f"unknown{ifi_type}"),
        "IfIndex": index,
        "State": "UP" if flags & names.IFF_UP else "DOWN",
        "LinkFlags": sorted(n for bit, n in names.IFF_NAMES.items() if flags & bit),
    }
    mtu = _positive(msg.get_attr("IFLA_MTU"))
    if mtu is not None:
        metadata["MTU"] = mtu
    mac = msg.get_attr("IFLA_ADDRESS")
    if isinstance(mac, str) and mac and ifi_type not in names.NO_L2_ADDRESS:
        metadata["MAC"] = mac.lower()

    master = _positive(msg.get_attr("IFLA_MASTER"))
    link_attr = msg.get_attr("IFLA_LINK")
    parent: int | None = None
    peer: int | None = None
    if link_type == "veth":
        # No IFLA_LINK: the peer has our ifindex (the kernel omits iflink == ifindex).
        peer = index if link_attr is None else _positive(link_attr)
    else:
        parent = _positive(link_attr)
        if parent is None and link_type == "vxlan":  # no iflink: the underlay is in INFO_DATA
            parent = _positive(_nested(data, "IFLA_VXLAN_LINK"))
        if parent == index:
            parent = None
    netnsid = msg.get_attr("IFLA_LINK_NETNSID")
    link_netnsid = int(netnsid) if isinstance(netnsid, int) and netnsid >= 0 else None

    if master is not None:
        metadata["MasterIndex"] = master
    if parent is not None:
        metadata["ParentIndex"] = parent
    if peer is not None:
        metadata["PeerIfIndex"] = peer
    if link_netnsid is not None:
        metadata["LinkNetNsID"] = link_netnsid
    metadata.update(_kind_metadata(link_type, data))
    bond_slave = _bond_slave(info)
    if bond_slave is not None:
        metadata["BondSlave"] = bond_slave

    stats = msg.get_attr("IFLA_STATS64")
    if stats is None:
        stats = msg.get_attr("IFLA_STATS")
    metrics = metrics_from_stats(stats) if isinstance(stats, Mapping) else None

    return Link(
        index=index,
        name=name,
        deleted=deleted,
        metadata=metadata,
        master_index=master,
        parent_index=parent,
        peer_index=peer,
        link_netnsid=link_netnsid,
        metrics=metrics,
        family=int(msg["family"]),
    )


def _kind_metadata(link_type: str, data: Any) -> dict[str, Any]:
    """Metadata from IFLA_INFO_DATA for the kinds Skydive (or we) describe further."""
    out: dict[str, Any] = {}
    if link_type == "vlan":
        vlan = _nested(data, "IFLA_VLAN_ID")
        if isinstance(vlan, int):
            out["Vlan"] = vlan
    elif link_type == "bond":
        mode = _nested(data, "IFLA_BOND_MODE")
        if isinstance(mode, int):
            out["BondMode"] = names.BOND_MODES[mode] if mode < len(names.BOND_MODES) else "unknown"
    elif link_type in ("vxlan", "geneve"):
        vni = _nested(data, "IFLA_VXLAN_ID" if link_type == "vxlan" else "IFLA_GENEVE_ID")
        if isinstance(vni, int):
            out["VNI"] = vni
    elif link_type == "tun":
        mode = names.TUN_TYPES.get(_nested(data, "IFLA_TUN_TYPE"))
        if mode is not None:
            out["TunMode"] = mode
    return out


def _bond_slave(info: Any) -> dict[str, Any] | None:
    """Skydive's ``BondSlave`` metadata of a bond port (IFLA_INFO_SLAVE_DATA)."""
    if _nested(info, "IFLA_INFO_SLAVE_KIND") != "bond":
        return None
    data = _nested(info, "IFLA_INFO_SLAVE_DATA")
    state = _int(_nested(data, "IFLA_BOND_SLAVE_STATE"))
    mii = _int(_nested(data, "IFLA_BOND_SLAVE_MII_STATUS"))
    out: dict[str, Any] = {
        "Type": "bond",
        "State": names.BOND_SLAVE_STATES[state]
        if state < len(names.BOND_SLAVE_STATES)
        else str(state),
        "MiiStatus": names.BOND_MII_STATUS[mii] if mii < len(names.BOND_MII_STATUS) else str(mii),
        "LinkFailureCount": _int(_nested(data, "IFLA_BOND_SLAVE_LINK_FAILURE_COUNT")),
        "QueueId": _int(_nested(data, "IFLA_BOND_SLAVE_QUEUE_ID")),
        "AggregatorId": _int(_nested(data, "IFLA_BOND_SLAVE_AD_AGGREGATOR_ID")),
        "AdActorOperPortState": 0,  # not decoded by pyroute2 0.9
        "AdPartnerOperPortState": 0,
    }
    perm = _nested(data, "IFLA_BOND_SLAVE_PERM_HWADDR")
    if isinstance(perm, str) and perm:
        out["PermMAC"] = perm.lower()
    return out


def _addr(msg: Any) -> Addr:
    deleted = _expect(msg, "address", "RTM_NEWADDR", "RTM_DELADDR")
    family = int(msg["family"])
    if family not in (names.AF_INET, names.AF_INET6):
        raise ProtocolError(f"address message of unsupported family {family}")
    # IFA_LOCAL is the local address; IFA_ADDRESS is the peer's on point-to-point links.
    ip = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    if not isinstance(ip, str) or not ip:
        raise ProtocolError("address message without IFA_LOCAL or IFA_ADDRESS")
    address = ipaddress.ip_address(ip)
    if address.version != (4 if family == names.AF_INET else 6):
        raise ProtocolError(f"address {ip} does not match family {family}")
    return Addr(
        index=int(msg["index"]),
        family=family,
        cidr=f"{address.compressed}/{int(msg['prefixlen'])}",
        deleted=deleted,
    )


def _route(msg: Any) -> Route | None:
    deleted = _expect(msg, "route", "RTM_NEWROUTE", "RTM_DELROUTE")
    family = int(msg["family"])
    if family not in (names.AF_INET, names.AF_INET6) or int(msg["flags"]) & names.RTM_F_CLONED:
        return None
    table = msg.get_attr("RTA_TABLE")
    table = int(table) if isinstance(table, int) else int(msg["table"])
    if table == names.RT_TABLE_LOCAL:
        return None
    dst = msg.get_attr("RTA_DST")
    if dst:
        prefix = f"{ipaddress.ip_address(dst).compressed}/{int(msg['dst_len'])}"
    else:
        prefix = "0.0.0.0/0" if family == names.AF_INET else "::/0"
    priority = msg.get_attr("RTA_PRIORITY")
    priority = int(priority) if isinstance(priority, int) else None
    src = msg.get_attr("RTA_PREFSRC")

    hops: list[dict[str, Any]] = []
    multipath = msg.get_attr("RTA_MULTIPATH")
    if multipath:
        for nh in multipath:
            _add_nexthop(hops, nh["oif"], _gateway(nh), priority)
    else:
        _add_nexthop(hops, msg.get_attr("RTA_OIF"), _gateway(msg), priority)
    return Route(
        table=table,
        family=family,
        prefix=prefix,
        protocol=int(msg["proto"]),
        src=ipaddress.ip_address(src).compressed if isinstance(src, str) and src else None,
        nexthops=tuple(hops),
        deleted=deleted,
        priority=priority,
        tos=int(msg["tos"]),
    )


def _gateway(obj: Any) -> str | None:
    gateway = obj.get_attr("RTA_GATEWAY")
    if not gateway:
        via = obj.get_attr("RTA_VIA")  # IPv4 route via an IPv6 gateway (RFC 5549)
        gateway = via.get("addr") if isinstance(via, Mapping) else None
    return ipaddress.ip_address(gateway).compressed if isinstance(gateway, str) else None


def _add_nexthop(hops: list[dict[str, Any]], oif: Any, gw: str | None, prio: int | None) -> None:
    ifindex = _positive(oif)
    if ifindex is None:
        return
    nexthop: dict[str, Any] = {"IfIndex": ifindex, "Priority": prio or 0}
    if gw is not None:
        nexthop["IP"] = gw
    hops.append(nexthop)


def _neigh(msg: Any) -> Neighbor | None:
    deleted = _expect(msg, "neighbour", "RTM_NEWNEIGH", "RTM_DELNEIGH")
    family, state, flags = int(msg["family"]), int(msg["state"]), int(msg["flags"])
    lladdr = msg.get_attr("NDA_LLADDR")
    mac = lladdr.lower() if isinstance(lladdr, str) else ""
    if flags & names.NTF_PROXY:
        return None  # a proxy-ARP/NDP entry, not a neighbour
    if family != names.AF_BRIDGE and state & names.NUD_NOARP and mac.strip("0:") == "":
        return None  # loopback's own entries: NOARP with an all-zero address
    dst = msg.get_attr("NDA_DST")
    return Neighbor(
        index=int(msg["ifindex"]),
        family=family,
        ip=ipaddress.ip_address(dst).compressed if isinstance(dst, str) and dst else "",
        mac=mac,
        state=tuple(n for bit, n in names.NUD_NAMES.items() if state & bit) or ("NUD_NONE",),
        flags=tuple(n for bit, n in names.NTF_NAMES.items() if flags & bit),
        # Unresolved (incomplete, failed) entries leave the list like deleted ones; the
        # kernel's RTM_DELNEIGH itself carries no NDA_LLADDR.
        deleted=deleted or not mac,
        vlan=_optional_int(msg.get_attr("NDA_VLAN")),
        vni=_optional_int(msg.get_attr("NDA_VNI")),
    )


# -- helpers -------------------------------------------------------------------------------


def _expect(msg: Any, what: str, new: str, delete: str) -> bool:
    """Check the message decoded and has the right type; return whether it is a deletion."""
    header = msg["header"]
    error = header.get("error")
    if isinstance(error, BaseException):
        raise ProtocolError(f"undecodable {what} message: {error}") from error
    event = event_name(msg)
    if event is None and header.get("type") is None and "event" not in msg:
        return False  # built by hand without a header: take it as a NEW message
    if event not in (new, delete):
        raise ProtocolError(f"expected {new}/{delete}, got {event or header.get('type')!r}")
    return event == delete


def _nested(nla: Any, name: str) -> Any:
    """Attribute ``name`` of a nested NLA, or None (also for undecoded/hex data).

    A decoded pyroute2 NLA has ``get_attr``; a hand-built one is ``{"attrs": [(name, v)]}``.
    """
    get_attr = getattr(nla, "get_attr", None)
    if callable(get_attr):
        return get_attr(name)
    if isinstance(nla, Mapping):
        return next((item[1] for item in nla.get("attrs", ()) if item[0] == name), None)
    return None


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0
