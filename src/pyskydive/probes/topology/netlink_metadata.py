"""Skydive's metadata vocabulary for what rtnetlink reports (pure data and functions).

- kernel constants (``linux/if.h``, ``if_arp.h``, ``neighbour.h``, ``rtnetlink.h``,
  ``if_link.h``) and the names Skydive v0.28 gives them, through vishvananda/netlink, or
  iproute2 where Skydive has none;
- Skydive's ``InterfaceMetric`` counters: :func:`metrics_from_stats`, :func:`metric_delta`;
- Skydive's ``RoutingTables`` of an interface: :func:`routing_tables`.

:mod:`pyskydive.probes.topology.netlink_msg` turns messages into records with these.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from pyskydive.probes.topology.netlink_msg import Route

__all__ = [
    "AF_BRIDGE",
    "AF_INET",
    "AF_INET6",
    "ARPHRD_NAMES",
    "BOND_MII_STATUS",
    "BOND_MODES",
    "BOND_SLAVE_STATES",
    "IFF_NAMES",
    "IFF_UP",
    "METRIC_NAMES",
    "NO_L2_ADDRESS",
    "NTF_NAMES",
    "NTF_PROXY",
    "NUD_NAMES",
    "NUD_NOARP",
    "RTM_F_CLONED",
    "RTM_NAMES",
    "RTM_TYPES",
    "RT_TABLE_LOCAL",
    "STATS_TO_METRIC",
    "TUN_TYPES",
    "metric_delta",
    "metrics_from_stats",
    "routing_tables",
]

# linux/socket.h
AF_INET: Final = 2
AF_BRIDGE: Final = 7
AF_INET6: Final = 10

# linux/rtnetlink.h
RTM_NAMES: Final = {
    16: "RTM_NEWLINK",
    17: "RTM_DELLINK",
    20: "RTM_NEWADDR",
    21: "RTM_DELADDR",
    24: "RTM_NEWROUTE",
    25: "RTM_DELROUTE",
    28: "RTM_NEWNEIGH",
    29: "RTM_DELNEIGH",
}
RTM_TYPES: Final = {name: code for code, name in RTM_NAMES.items()}
RTM_F_CLONED: Final = 0x200
RT_TABLE_LOCAL: Final = 255

# linux/if.h, net_device_flags: bit -> name as iproute2 prints it
IFF_NAMES: Final = {
    0x1: "UP",
    0x2: "BROADCAST",
    0x4: "DEBUG",
    0x8: "LOOPBACK",
    0x10: "POINTOPOINT",
    0x20: "NOTRAILERS",
    0x40: "RUNNING",
    0x80: "NOARP",
    0x100: "PROMISC",
    0x200: "ALLMULTI",
    0x400: "MASTER",
    0x800: "SLAVE",
    0x1000: "MULTICAST",
    0x2000: "PORTSEL",
    0x4000: "AUTOMEDIA",
    0x8000: "DYNAMIC",
    0x10000: "LOWER_UP",
    0x20000: "DORMANT",
    0x40000: "ECHO",
}
IFF_UP: Final = 0x1

# linux/neighbour.h
NUD_NAMES: Final = {
    0x01: "NUD_INCOMPLETE",
    0x02: "NUD_REACHABLE",
    0x04: "NUD_STALE",
    0x08: "NUD_DELAY",
    0x10: "NUD_PROBE",
    0x20: "NUD_FAILED",
    0x40: "NUD_NOARP",
    0x80: "NUD_PERMANENT",
}
NUD_NOARP: Final = 0x40
NTF_PROXY: Final = 0x08
NTF_NAMES: Final = {
    0x01: "NTF_USE",
    0x02: "NTF_SELF",
    0x04: "NTF_MASTER",
    0x08: "NTF_PROXY",
    0x10: "NTF_EXT_LEARNED",
    0x20: "NTF_OFFLOADED",
    0x40: "NTF_STICKY",
    0x80: "NTF_ROUTER",
}

# linux/if_arp.h ARPHRD_* -> the names vishvananda/netlink (so Skydive's EncapType) uses,
# which are iproute2's; 0 is "generic" there, and the few types it lacks use iproute2's name.
ARPHRD_NAMES: Final = {
    0: "generic",
    1: "ether",
    2: "eether",
    3: "ax25",
    4: "pronet",
    5: "chaos",
    6: "ieee802",
    7: "arcnet",
    8: "atalk",
    15: "dlci",
    19: "atm",
    23: "metricom",
    24: "ieee1394",
    27: "eui64",
    32: "infiniband",
    256: "slip",
    257: "cslip",
    258: "slip6",
    259: "cslip6",
    260: "rsrvd",
    264: "adapt",
    270: "rose",
    271: "x25",
    272: "hwx25",
    280: "can",
    512: "ppp",
    513: "hdlc",
    516: "lapb",
    517: "ddcmp",
    518: "rawhdlc",
    519: "rawip",
    768: "ipip",
    769: "tunnel6",
    770: "frad",
    771: "skip",
    772: "loopback",
    773: "ltalk",
    774: "fddi",
    775: "bif",
    776: "sit",
    777: "ip/ddp",
    778: "gre",
    779: "pimreg",
    780: "hippi",
    781: "ash",
    782: "econet",
    783: "irda",
    784: "fcpp",
    785: "fcal",
    786: "fcpl",
    **{787 + i: f"fcfb{i}" for i in range(13)},
    800: "tr",
    801: "ieee802.11",
    802: "ieee802.11/prism",
    803: "ieee802.11/radiotap",
    804: "ieee802.15.4",
    805: "ieee802.15.4/monitor",
    820: "phonet",
    821: "phonet_pipe",
    822: "caif",
    823: "gre6",
    824: "netlink",
    825: "6lowpan",
    826: "vsockmon",
    0xFFFE: "none",
    0xFFFF: "void",
}
# Link types whose IFLA_ADDRESS is no L2 address (none, or the tunnel's local IP): no MAC.
NO_L2_ADDRESS: Final = frozenset({0, 768, 769, 772, 776, 778, 823, 0xFFFE, 0xFFFF})

# include/uapi/linux/if_link.h (bonding), names as in vishvananda/netlink and iproute2
BOND_MODES: Final = (
    "balance-rr",
    "active-backup",
    "balance-xor",
    "broadcast",
    "802.3ad",
    "balance-tlb",
    "balance-alb",
)
BOND_SLAVE_STATES: Final = ("ACTIVE", "BACKUP")
BOND_MII_STATUS: Final = ("UP", "GOING_DOWN", "DOWN", "GOING_BACK")
TUN_TYPES: Final = {1: "tun", 2: "tap"}  # IFF_TUN, IFF_TAP

# struct rtnl_link_stats64 member (pyroute2's name) -> Skydive InterfaceMetric field
STATS_TO_METRIC: Final = {
    "rx_packets": "RxPackets",
    "tx_packets": "TxPackets",
    "rx_bytes": "RxBytes",
    "tx_bytes": "TxBytes",
    "rx_errors": "RxErrors",
    "tx_errors": "TxErrors",
    "rx_dropped": "RxDropped",
    "tx_dropped": "TxDropped",
    "multicast": "Multicast",
    "collisions": "Collisions",
    "rx_length_errors": "RxLengthErrors",
    "rx_over_errors": "RxOverErrors",
    "rx_crc_errors": "RxCrcErrors",
    "rx_frame_errors": "RxFrameErrors",
    "rx_fifo_errors": "RxFifoErrors",
    "rx_missed_errors": "RxMissedErrors",
    "tx_aborted_errors": "TxAbortedErrors",
    "tx_carrier_errors": "TxCarrierErrors",
    "tx_fifo_errors": "TxFifoErrors",
    "tx_heartbeat_errors": "TxHeartbeatErrors",
    "tx_window_errors": "TxWindowErrors",
    "rx_compressed": "RxCompressed",
    "tx_compressed": "TxCompressed",
}
METRIC_NAMES: Final = tuple(STATS_TO_METRIC.values())
"""The counter names of Skydive's ``InterfaceMetric`` (without ``Start``/``Last``)."""


def metrics_from_stats(stats: Mapping[str, int]) -> dict[str, int]:
    """Kernel ``rtnl_link_stats64`` counters -> Skydive ``InterfaceMetric`` (zeros left out)."""
    out: dict[str, int] = {}
    for key, name in STATS_TO_METRIC.items():
        if key in stats:
            value = int(stats[key])
            if value:
                out[name] = value
    return out


def metric_delta(prev: Mapping[str, int], cur: Mapping[str, int]) -> dict[str, int]:
    """``cur - prev`` per counter; a counter that went down was reset, so its delta is ``cur``.

    Only the :data:`METRIC_NAMES` counters are compared (``Start``/``Last`` and other keys
    are ignored); a missing counter is 0 and zero deltas are left out, so ``{}`` means
    "nothing changed".
    """
    out: dict[str, int] = {}
    for name in METRIC_NAMES:
        now = int(cur.get(name, 0))
        delta = now - int(prev.get(name, 0))
        if delta < 0:
            delta = now
        if delta:
            out[name] = delta
    return out


def routing_tables(routes: Iterable[Route], index: int) -> list[dict[str, Any]]:
    """Skydive ``RoutingTables`` of interface ``index``: ``[{"ID", "Src", "Routes"}]``.

    A route is listed when one of its nexthops is on ``index``, with all its nexthops (as
    Skydive lists a multipath route). Routes with the same table, prefix and protocol merge
    (Skydive's ``GetOrCreateRoute``), nexthops with the same IP and ifindex too, keeping the
    lowest priority. ``Src`` is the first preferred source of the table ("" if none). The
    output is sorted (tables by ID, routes by address, nexthops by ifindex/IP), so the same
    routes give the same list in any order. ``[]`` means no ``RoutingTables`` metadata.
    """
    merged: dict[int, dict[tuple[str, int], dict[tuple[int, str], int]]] = {}
    sources: dict[int, list[tuple[tuple[int, int, int], str]]] = {}
    for route in routes:
        if route.deleted or not any(nh.get("IfIndex") == index for nh in route.nexthops):
            continue
        table = merged.setdefault(route.table, {})
        hops = table.setdefault((route.prefix, route.protocol), {})
        for nh in route.nexthops:
            key = (int(nh["IfIndex"]), str(nh.get("IP", "")))
            priority = int(nh.get("Priority", 0))
            hops[key] = min(priority, hops.get(key, priority))
        if route.src:
            sources.setdefault(route.table, []).append((_prefix_order(route.prefix), route.src))
    result: list[dict[str, Any]] = []
    for table_id in sorted(merged):
        entries = []
        for (prefix, protocol), hops in sorted(
            merged[table_id].items(), key=lambda item: (_prefix_order(item[0][0]), item[0][1])
        ):
            nexthops = []
            for (ifindex, ip), priority in sorted(
                hops.items(), key=lambda item: (item[0][0], _ip_order(item[0][1]), item[1])
            ):
                nexthop: dict[str, Any] = {"IfIndex": ifindex, "Priority": priority}
                if ip:
                    nexthop["IP"] = ip
                nexthops.append(nexthop)
            entries.append({"Prefix": prefix, "Protocol": protocol, "NextHops": nexthops})
        src = min(sources[table_id])[1] if table_id in sources else ""
        result.append({"ID": table_id, "Src": src, "Routes": entries})
    return result


def _prefix_order(prefix: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(prefix, strict=False)
    return (net.version, int(net.network_address), net.prefixlen)


def _ip_order(ip: str) -> tuple[int, int]:
    if not ip:
        return (0, 0)
    address = ipaddress.ip_address(ip)
    return (address.version, int(address))
