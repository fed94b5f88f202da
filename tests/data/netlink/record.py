#!/usr/bin/env python3
"""Record the golden rtnetlink messages of ``tests/unit/probes/test_netlink_msg.py``.

Run as root, from the repository root::

    python tests/data/netlink/record.py            # record from the kernel, rewrite *.json
    python tests/data/netlink/record.py --expected  # only recompute "expected" (no root)

Recording builds a throwaway topology in two network namespaces of its own (``nlrec-ns`` and
``nlrec-peer``; nothing is created in the caller's namespace), captures the kernel's messages
with pyroute2's ``AsyncIPRoute`` (dumps, and the multicast events of a bound socket), keeps
the raw bytes of the chosen ones (``msg.data[msg.offset:][:length]``) and deletes both
namespaces. For links it also stores what ``ip -j -d link show`` says, so the test can check
the decoded metadata against iproute2, not only against itself.

Link types this kernel lacks (dummy, bond, 8021q vlan, ipvlan, gre, geneve) are built with
pyroute2's ``ifinfmsg`` encoder, with the attributes the kernel puts in its messages
(``net/core/rtnetlink.c: rtnl_fill_ifinfo``); their files say ``"source": "synthesized"``.

Each ``<name>.json`` is ``{"name", "kind", "source", "how", "hex", "iproute2"?, "expected"}``:
``expected`` is the record :mod:`pyskydive.probes.topology.netlink_msg` made of the message
when it was written (``dataclasses.asdict``, tuples as lists, ``null`` for ``None``), reviewed
by hand then; ``--expected`` rewrites it after a deliberate change of the translation.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "src"))

from pyroute2 import AsyncIPRoute  # noqa: E402
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg  # noqa: E402
from pyroute2.netlink.rtnl.marshal import MarshalRtnl  # noqa: E402

from pyskydive.probes.topology import netlink_msg as nlm  # noqa: E402

NS = "nlrec-ns"
PEER_NS = "nlrec-peer"
INDEX: dict[str, int] = {}  # ifname -> ifindex in NS, from the dump
KINDS: dict[str, Callable[[Any], Any]] = {
    "link": nlm.link_from_msg,
    "addr": nlm.addr_from_msg,
    "route": nlm.route_from_msg,
    "neigh": nlm.neigh_from_msg,
}

# What we build, in order; each line runs as `ip -n nlrec-ns ...` unless it says otherwise.
SETUP = [
    "link set lo up",
    "link add nlrec-va type veth peer name nlrec-vb",
    "link add nlrec-br0 type bridge",
    "link set nlrec-vb master nlrec-br0",
    f"link add nlrec-vx type veth peer name nlrec-vy netns {PEER_NS}",
    f"link add nlrec-s0 index 50 type veth peer name nlrec-s1 netns {PEER_NS} index 50",
    "link add nlrec-mv0 link nlrec-va type macvlan mode bridge",
    "link add nlrec-vxl type vxlan id 42 dev nlrec-va dstport 4789 local 10.77.0.1",
    "tuntap add dev nlrec-tap0 mode tap",
    "tuntap add dev nlrec-tun0 mode tun",
    "link add nlrec-ifb0 type ifb",
    "link set nlrec-va up",
    "link set nlrec-vb up",
    "link set nlrec-br0 up",
    "link set nlrec-mv0 up",
    "addr add 10.77.0.1/24 dev nlrec-va",
    "addr add fd77::1/64 dev nlrec-va nodad",
    "addr add 10.77.2.1/24 dev nlrec-mv0",
    "addr add fd77:2::1/64 dev nlrec-mv0 nodad",
    "route add default via 10.77.0.254 dev nlrec-va metric 100",
    "route add 10.99.0.0/16 nexthop via 10.77.0.2 dev nlrec-va nexthop via 10.77.2.2 dev nlrec-mv0",
    "route add 10.55.0.0/16 dev nlrec-va table 100",
    "route add blackhole 10.66.0.0/16",
    "-6 route add default via fd77::fe dev nlrec-va metric 1024",
    "-6 route add fd99::/64 nexthop via fd77::2 dev nlrec-va nexthop via fd77:2::2 dev nlrec-mv0",
    "neigh add 10.77.0.2 lladdr 02:00:00:00:00:02 dev nlrec-va nud permanent",
    "neigh add 10.77.0.9 dev nlrec-va nud incomplete",
    "-6 neigh add fd77::fe lladdr 02:00:00:00:00:fe dev nlrec-va router nud stale",
]
# Run while a bound socket listens, for the events (DEL* messages, bridge notices...).
EVENTS = [
    "link add nlrec-del0 type veth peer name nlrec-del1",
    "link del nlrec-del0",
    "addr add 10.77.5.1/24 dev nlrec-va",
    "addr del 10.77.5.1/24 dev nlrec-va",
    "addr add fd77:5::1/64 dev nlrec-va nodad",
    "addr del fd77:5::1/64 dev nlrec-va",
    "addr add 10.77.6.1 peer 10.77.6.2/32 dev nlrec-va",
    "route del default via 10.77.0.254 dev nlrec-va metric 100",
    "neigh del 10.77.0.2 dev nlrec-va",
    "!bridge -n nlrec-ns fdb add 02:00:00:00:00:33 dev nlrec-vb master static",
    "!bridge -n nlrec-ns fdb append 00:00:00:00:00:00 dev nlrec-vxl dst 10.77.0.2",
    "link set nlrec-vb nomaster",
]


def sh(command: str) -> str:
    argv = command[1:] if command.startswith("!") else f"ip -n {NS} {command}"
    return subprocess.run(argv, shell=True, check=True, capture_output=True, text=True).stdout


def raw_bytes(msg: Any) -> bytes:
    return bytes(msg.data[msg.offset : msg.offset + msg["header"]["length"]])


async def _drain(ipr: Any, quiet: float = 1.0) -> list[Any]:
    out: list[Any] = []

    async def batch() -> list[Any]:
        return [m async for m in ipr.get()]

    while True:
        try:
            out += await asyncio.wait_for(batch(), quiet)
        except TimeoutError:
            return out


async def capture() -> tuple[list[Any], list[Any], dict[str, Any]]:
    """Build the topology; return (dumped messages, event messages, iproute2 of the links)."""
    for command in SETUP:
        sh(command)
    # Some traffic, so counters and the loopback neighbour exist.
    loopback = "import socket; socket.socket(2, 2).sendto(b'x', ('127.0.0.1', 9))"
    subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", loopback], check=True)
    await asyncio.sleep(2)  # carrier, DAD and routes settle
    async with AsyncIPRoute(netns=NS) as ipr:
        dumped = [m async for m in await ipr.link("dump")]
        dumped += [m async for m in await ipr.addr("dump")]
        dumped += [m async for m in await ipr.route("dump", family=2)]
        dumped += [m async for m in await ipr.route("dump", family=10)]
        dumped += [m async for m in await ipr.neigh("dump")]
    # What iproute2 says, right after the dump (before the events change things).
    shown = {entry["ifname"]: iproute2_link(entry) for entry in json.loads(sh("-j -d link show"))}
    async with AsyncIPRoute(netns=NS) as ipr:
        await ipr.bind()
        for command in EVENTS:
            sh(command)
        events = await _drain(ipr)
    return dumped, events, shown


def iproute2_link(entry: dict[str, Any]) -> dict[str, Any]:
    """The fields of an `ip -j -d link show` entry the test checks."""
    keep = ("ifindex", "ifname", "flags", "mtu", "link_type", "address", "master")
    out = {k: entry[k] for k in keep if k in entry}
    out.update({k: entry[k] for k in ("link", "link_index", "link_netnsid") if k in entry})
    info = entry.get("linkinfo", {})
    out["info_kind"] = info.get("info_kind")
    out["info_data"] = info.get("info_data")
    return out


def link_named(name: str, family: int = 0, event: str = "RTM_NEWLINK") -> Callable[[Any], bool]:
    return lambda m: (
        nlm.event_name(m) == event
        and m["family"] == family
        and m.get_attr("IFLA_IFNAME") == name
        and (event != "RTM_NEWLINK" or m.get_attr("IFLA_EVENT") is None)
    )


def attr_is(event: str, **attrs: Any) -> Callable[[Any], bool]:
    fields = {k: attrs.pop(k) for k in ("family", "table", "flags", "state") if k in attrs}
    return lambda m: (
        nlm.event_name(m) == event
        and all(m[k] == v for k, v in fields.items())
        and all(m.get_attr(k) == v for k, v in attrs.items())
    )


# name -> (kind, where, how, predicate); where is "dump" or "events".
KERNEL_CASES: dict[str, tuple[str, str, str, Callable[[Any], bool]]] = {
    "link_lo": ("link", "dump", "loopback of a fresh netns, up", link_named("lo")),
    "link_veth": ("link", "dump", "veth nlrec-va, peer nlrec-vb", link_named("nlrec-va")),
    "link_veth_bridge_port": (
        "link",
        "dump",
        "veth nlrec-vb enslaved to bridge nlrec-br0 (IFLA_MASTER)",
        link_named("nlrec-vb"),
    ),
    "link_veth_netnsid": (
        "link",
        "dump",
        f"veth nlrec-vx whose peer nlrec-vy is in {PEER_NS} (IFLA_LINK_NETNSID)",
        link_named("nlrec-vx"),
    ),
    "link_veth_same_index": (
        "link",
        "dump",
        f"veth nlrec-s0 ifindex 50, peer nlrec-s1 ifindex 50 in {PEER_NS}: no IFLA_LINK",
        link_named("nlrec-s0"),
    ),
    "link_bridge": ("link", "dump", "bridge nlrec-br0", link_named("nlrec-br0")),
    "link_macvlan": ("link", "dump", "macvlan nlrec-mv0 on nlrec-va", link_named("nlrec-mv0")),
    "link_vxlan": ("link", "dump", "vxlan nlrec-vxl id 42 dev nlrec-va", link_named("nlrec-vxl")),
    "link_tap": ("link", "dump", "ip tuntap add nlrec-tap0 mode tap", link_named("nlrec-tap0")),
    "link_tun": ("link", "dump", "ip tuntap add nlrec-tun0 mode tun", link_named("nlrec-tun0")),
    "link_ifb": ("link", "dump", "ifb nlrec-ifb0", link_named("nlrec-ifb0")),
    "link_dellink_veth": (
        "link",
        "events",
        "ip link del nlrec-del0 (RTM_DELLINK)",
        link_named("nlrec-del0", event="RTM_DELLINK"),
    ),
    "link_bridge_port_notice": (
        "link",
        "events",
        "bridge module's AF_BRIDGE RTM_NEWLINK about port nlrec-vb",
        link_named("nlrec-vb", family=7),
    ),
    "link_bridge_port_left": (
        "link",
        "events",
        "ip link set nlrec-vb nomaster: AF_BRIDGE RTM_DELLINK (the link is not deleted)",
        link_named("nlrec-vb", family=7, event="RTM_DELLINK"),
    ),
    "link_ifla_event": (
        "link",
        "events",
        "RTM_NEWLINK of nlrec-br0 with IFLA_EVENT (features changed when its port left)",
        lambda m: (
            nlm.event_name(m) == "RTM_NEWLINK"
            and m.get_attr("IFLA_IFNAME") == "nlrec-br0"
            and m.get_attr("IFLA_EVENT") is not None
        ),
    ),
    "addr_v4": (
        "addr",
        "dump",
        "10.77.0.1/24 on nlrec-va",
        attr_is("RTM_NEWADDR", IFA_LOCAL="10.77.0.1"),
    ),
    "addr_v6": (
        "addr",
        "dump",
        "fd77::1/64 on nlrec-va",
        attr_is("RTM_NEWADDR", IFA_ADDRESS="fd77::1"),
    ),
    "addr_v6_link_local": (
        "addr",
        "dump",
        "the link-local address of nlrec-va",
        lambda m: (
            nlm.event_name(m) == "RTM_NEWADDR"
            and str(m.get_attr("IFA_ADDRESS")).startswith("fe80:")
            and m["index"] == INDEX["nlrec-va"]
        ),
    ),
    "addr_new_v4_event": (
        "addr",
        "events",
        "ip addr add 10.77.5.1/24",
        attr_is("RTM_NEWADDR", IFA_LOCAL="10.77.5.1"),
    ),
    "addr_del_v4": (
        "addr",
        "events",
        "ip addr del 10.77.5.1/24",
        attr_is("RTM_DELADDR", IFA_LOCAL="10.77.5.1"),
    ),
    "addr_del_v6": (
        "addr",
        "events",
        "ip addr del fd77:5::1/64",
        attr_is("RTM_DELADDR", IFA_ADDRESS="fd77:5::1"),
    ),
    "addr_peer_v4": (
        "addr",
        "events",
        "ip addr add 10.77.6.1 peer 10.77.6.2/32: IFA_LOCAL differs from IFA_ADDRESS",
        attr_is("RTM_NEWADDR", IFA_LOCAL="10.77.6.1"),
    ),
    "route_connected_v4": (
        "route",
        "dump",
        "10.77.0.0/24 dev nlrec-va proto kernel scope link src 10.77.0.1",
        attr_is("RTM_NEWROUTE", table=254, RTA_DST="10.77.0.0"),
    ),
    "route_default_v4": (
        "route",
        "dump",
        "default via 10.77.0.254 dev nlrec-va metric 100",
        attr_is("RTM_NEWROUTE", family=2, table=254, RTA_DST=None, RTA_GATEWAY="10.77.0.254"),
    ),
    "route_multipath_v4": (
        "route",
        "dump",
        "10.99.0.0/16 nexthop via 10.77.0.2 dev nlrec-va nexthop via 10.77.2.2 dev nlrec-mv0",
        attr_is("RTM_NEWROUTE", RTA_DST="10.99.0.0"),
    ),
    "route_table_100": (
        "route",
        "dump",
        "10.55.0.0/16 dev nlrec-va table 100",
        attr_is("RTM_NEWROUTE", RTA_DST="10.55.0.0"),
    ),
    "route_blackhole": (
        "route",
        "dump",
        "blackhole 10.66.0.0/16",
        attr_is("RTM_NEWROUTE", RTA_DST="10.66.0.0"),
    ),
    "route_local_table": (
        "route",
        "dump",
        "local 10.77.0.1 dev nlrec-va table local (ignored)",
        attr_is("RTM_NEWROUTE", table=255, RTA_DST="10.77.0.1"),
    ),
    "route_default_v6": (
        "route",
        "dump",
        "default via fd77::fe dev nlrec-va metric 1024",
        attr_is("RTM_NEWROUTE", family=10, table=254, RTA_DST=None, RTA_GATEWAY="fd77::fe"),
    ),
    "route_multipath_v6": (
        "route",
        "dump",
        "fd99::/64 nexthop via fd77::2 dev nlrec-va nexthop via fd77:2::2 dev nlrec-mv0",
        attr_is("RTM_NEWROUTE", RTA_DST="fd99::"),
    ),
    "route_connected_v6": (
        "route",
        "dump",
        "fd77::/64 dev nlrec-va proto kernel metric 256",
        attr_is("RTM_NEWROUTE", table=254, RTA_DST="fd77::"),
    ),
    "route_del_default_v4": (
        "route",
        "events",
        "ip route del default via 10.77.0.254 (RTM_DELROUTE)",
        attr_is("RTM_DELROUTE", family=2, RTA_DST=None, RTA_GATEWAY="10.77.0.254"),
    ),
    "neigh_v4_permanent": (
        "neigh",
        "dump",
        "10.77.0.2 lladdr 02:00:00:00:00:02 dev nlrec-va nud permanent",
        attr_is("RTM_NEWNEIGH", NDA_DST="10.77.0.2"),
    ),
    "neigh_v6_router": (
        "neigh",
        "dump",
        "fd77::fe lladdr 02:00:00:00:00:fe dev nlrec-va router nud stale",
        attr_is("RTM_NEWNEIGH", NDA_DST="fd77::fe"),
    ),
    "neigh_incomplete": (
        "neigh",
        "dump",
        "10.77.0.9 dev nlrec-va nud incomplete: no lladdr, so deleted=True",
        attr_is("RTM_NEWNEIGH", NDA_DST="10.77.0.9"),
    ),
    "neigh_loopback": (
        "neigh",
        "dump",
        "loopback's own entry after a datagram to 127.0.0.1: NOARP, all-zero lladdr (ignored)",
        lambda m: (
            nlm.event_name(m) == "RTM_NEWNEIGH"
            and m["state"] & 0x40
            and m.get_attr("NDA_LLADDR") == "00:00:00:00:00:00"
        ),
    ),
    "neigh_del_v4": (
        "neigh",
        "events",
        "ip neigh del 10.77.0.2 (RTM_DELNEIGH)",
        attr_is("RTM_DELNEIGH", NDA_DST="10.77.0.2"),
    ),
    "neigh_fdb_static": (
        "neigh",
        "events",
        "bridge fdb add 02:00:00:00:00:33 dev nlrec-vb master static (AF_BRIDGE)",
        attr_is("RTM_NEWNEIGH", family=7, NDA_LLADDR="02:00:00:00:00:33"),
    ),
    "neigh_fdb_vxlan": (
        "neigh",
        "events",
        "bridge fdb append 00:00:00:00:00:00 dev nlrec-vxl dst 10.77.0.2 (AF_BRIDGE)",
        attr_is("RTM_NEWNEIGH", family=7, NDA_DST="10.77.0.2"),
    ),
}


# -- synthesized messages for the link types this kernel lacks --------------------------------


def _stats64(base: int) -> dict[str, int]:
    """rtnl_link_stats64 with packet/byte counters from ``base`` (all zero for 0)."""
    counted = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes")
    names = [f for f, _ in ifinfmsg.ifstats64.fields]
    return {n: (base + i if base and n in counted else 0) for i, n in enumerate(names)}


def _common(name: str, index: int, flags: int, mtu: int = 1500) -> list[tuple[str, Any]]:
    return [
        ("IFLA_IFNAME", name),
        ("IFLA_TXQLEN", 1000),
        ("IFLA_OPERSTATE", "UP" if flags & 0x10000 else "DOWN"),
        ("IFLA_LINKMODE", 0),
        ("IFLA_MTU", mtu),
        ("IFLA_MIN_MTU", 68),
        ("IFLA_MAX_MTU", 65535),
        ("IFLA_GROUP", 0),
        ("IFLA_PROMISCUITY", 0),
        ("IFLA_NUM_TX_QUEUES", 1),
        ("IFLA_NUM_RX_QUEUES", 1),
        ("IFLA_CARRIER", 1 if flags & 0x10000 else 0),
        ("IFLA_QDISC", "noqueue"),
        ("IFLA_CARRIER_CHANGES", 1),
        ("IFLA_PROTO_DOWN", 0),
    ]


def _encode(index: int, flags: int, attrs: list[tuple[str, Any]], ifi_type: int = 1) -> bytes:
    msg = ifinfmsg()
    msg["header"]["type"] = 16  # RTM_NEWLINK
    msg["header"]["flags"] = 2  # NLM_F_MULTI, as in a dump
    msg["header"]["sequence_number"] = 255
    msg["family"] = 0
    msg["ifi_type"] = ifi_type
    msg["index"] = index
    msg["flags"] = flags
    msg["change"] = 0
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def _insert_raw_attrs(data: bytes, raw: bytes) -> bytes:
    """Put hand-made NLAs right after the ifinfomsg header, fixing nlmsg_len."""
    out = data[:32] + raw + data[32:]
    return len(out).to_bytes(4, sys.byteorder) + out[4:]


def _nla(atype: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    pad = (4 - length % 4) % 4
    return (
        length.to_bytes(2, sys.byteorder) + atype.to_bytes(2, sys.byteorder) + payload + b"\0" * pad
    )


UP = 0x1 | 0x2 | 0x40 | 0x1000 | 0x10000  # UP BROADCAST RUNNING MULTICAST LOWER_UP
ETHER_DOWN = 0x2 | 0x1000


def synthesized() -> dict[str, tuple[str, bytes]]:
    ether = [("IFLA_BROADCAST", "ff:ff:ff:ff:ff:ff")]
    cases: dict[str, tuple[str, bytes]] = {}
    cases["link_dummy"] = (
        "ip link add nlrec-dummy0 type dummy",
        _encode(
            20,
            0x2 | 0x80,  # BROADCAST NOARP, down
            [
                *_common("nlrec-dummy0", 20, 0),
                ("IFLA_ADDRESS", "da:7e:00:00:00:20"),
                *ether,
                ("IFLA_STATS64", _stats64(0)),
                ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "dummy")]}),
            ],
        ),
    )
    cases["link_bond"] = (
        "ip link add nlrec-bond0 type bond mode active-backup miimon 100",
        _encode(
            21,
            UP | 0x400,  # + MASTER
            [
                *_common("nlrec-bond0", 21, UP),
                ("IFLA_ADDRESS", "b0:00:00:00:00:21"),
                *ether,
                ("IFLA_STATS64", _stats64(100)),
                (
                    "IFLA_LINKINFO",
                    {
                        "attrs": [
                            ("IFLA_INFO_KIND", "bond"),
                            (
                                "IFLA_INFO_DATA",
                                {
                                    "attrs": [
                                        ("IFLA_BOND_MODE", 1),
                                        ("IFLA_BOND_ACTIVE_SLAVE", 22),
                                        ("IFLA_BOND_MIIMON", 100),
                                        ("IFLA_BOND_UPDELAY", 0),
                                        ("IFLA_BOND_DOWNDELAY", 0),
                                        ("IFLA_BOND_USE_CARRIER", 1),
                                    ]
                                },
                            ),
                        ]
                    },
                ),
            ],
        ),
    )
    cases["link_bond_slave"] = (
        "a NIC nlrec-eth1 (no IFLA_INFO_KIND) enslaved to nlrec-bond0",
        _encode(
            22,
            UP | 0x800,  # + SLAVE
            [
                *_common("nlrec-eth1", 22, UP),
                ("IFLA_MASTER", 21),
                ("IFLA_ADDRESS", "b0:00:00:00:00:21"),
                *ether,
                ("IFLA_STATS64", _stats64(200)),
                (
                    "IFLA_LINKINFO",
                    {
                        "attrs": [
                            ("IFLA_INFO_SLAVE_KIND", "bond"),
                            (
                                "IFLA_INFO_SLAVE_DATA",
                                {
                                    "attrs": [
                                        ("IFLA_BOND_SLAVE_STATE", 0),
                                        ("IFLA_BOND_SLAVE_MII_STATUS", 0),
                                        ("IFLA_BOND_SLAVE_LINK_FAILURE_COUNT", 3),
                                        ("IFLA_BOND_SLAVE_PERM_HWADDR", "52:54:00:00:00:22"),
                                        ("IFLA_BOND_SLAVE_QUEUE_ID", 0),
                                    ]
                                },
                            ),
                        ]
                    },
                ),
            ],
        ),
    )
    cases["link_vlan"] = (
        "ip link add link nlrec-va name nlrec-va.42 type vlan id 42 (nlrec-va is ifindex 3)",
        _encode(
            23,
            UP,
            [
                *_common("nlrec-va.42", 23, UP),
                ("IFLA_LINK", 3),
                ("IFLA_ADDRESS", "0e:00:00:00:00:03"),
                *ether,
                ("IFLA_STATS64", _stats64(300)),
                (
                    "IFLA_LINKINFO",
                    {
                        "attrs": [
                            ("IFLA_INFO_KIND", "vlan"),
                            (
                                "IFLA_INFO_DATA",
                                {
                                    "attrs": [
                                        ("IFLA_VLAN_PROTOCOL", 0x8100),
                                        ("IFLA_VLAN_ID", 42),
                                        ("IFLA_VLAN_FLAGS", {"flags": 1, "mask": 0xFFFFFFFF}),
                                    ]
                                },
                            ),
                        ]
                    },
                ),
            ],
        ),
    )
    cases["link_ipvlan"] = (
        "ip link add link nlrec-va name nlrec-ipv0 type ipvlan mode l2 (nlrec-va is ifindex 3)",
        _encode(
            24,
            UP,
            [
                *_common("nlrec-ipv0", 24, UP),
                ("IFLA_LINK", 3),
                ("IFLA_ADDRESS", "0e:00:00:00:00:03"),
                *ether,
                ("IFLA_STATS64", _stats64(400)),
                (
                    "IFLA_LINKINFO",
                    {
                        "attrs": [
                            ("IFLA_INFO_KIND", "ipvlan"),
                            ("IFLA_INFO_DATA", {"attrs": [("IFLA_IPVLAN_MODE", 0)]}),
                        ]
                    },
                ),
            ],
        ),
    )
    cases["link_geneve"] = (
        "ip link add nlrec-gnv0 type geneve id 4242 remote 10.77.0.2",
        _encode(
            25,
            UP,
            [
                *_common("nlrec-gnv0", 25, UP, mtu=1450),
                ("IFLA_ADDRESS", "6e:00:00:00:00:25"),
                *ether,
                ("IFLA_STATS64", _stats64(500)),
                (
                    "IFLA_LINKINFO",
                    {
                        "attrs": [
                            ("IFLA_INFO_KIND", "geneve"),
                            (
                                "IFLA_INFO_DATA",
                                {
                                    "attrs": [
                                        ("IFLA_GENEVE_ID", 4242),
                                        ("IFLA_GENEVE_REMOTE", "10.77.0.2"),
                                        ("IFLA_GENEVE_TTL", 0),
                                    ]
                                },
                            ),
                        ]
                    },
                ),
            ],
        ),
    )
    # gre: ARPHRD_IPGRE, IFLA_ADDRESS/IFLA_BROADCAST are the 4-byte tunnel endpoints, and
    # IFLA_LINK is 0 (no underlying device) -- which the kernel does send (0 != ifindex).
    gre = _encode(
        26,
        0x1 | 0x10 | 0x40 | 0x80 | 0x10000,  # UP POINTOPOINT RUNNING NOARP LOWER_UP
        [
            *_common("nlrec-gre1", 26, UP, mtu=1476),
            ("IFLA_LINK", 0),
            ("IFLA_STATS64", _stats64(600)),
            (
                "IFLA_LINKINFO",
                {
                    "attrs": [
                        ("IFLA_INFO_KIND", "gre"),
                        (
                            "IFLA_INFO_DATA",
                            {
                                "attrs": [
                                    ("IFLA_GRE_LINK", 0),
                                    ("IFLA_GRE_LOCAL", "10.77.0.1"),
                                    ("IFLA_GRE_REMOTE", "10.77.0.2"),
                                    ("IFLA_GRE_TTL", 0),
                                    ("IFLA_GRE_PMTUDISC", 1),
                                ]
                            },
                        ),
                    ]
                },
            ),
        ],
        ifi_type=778,
    )
    endpoints = _nla(1, bytes([10, 77, 0, 1])) + _nla(2, bytes([10, 77, 0, 2]))
    cases["link_gre"] = (
        "ip link add nlrec-gre1 type gre local 10.77.0.1 remote 10.77.0.2",
        _insert_raw_attrs(gre, endpoints),
    )
    return cases


# -- writing -------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def decode(raw: bytes) -> Any:
    (msg,) = MarshalRtnl().parse(raw)
    return msg


def expected(kind: str, raw: bytes) -> Any:
    return jsonable(KINDS[kind](decode(raw)))


def write(case: dict[str, Any]) -> None:
    case["expected"] = expected(case["kind"], bytes.fromhex(case["hex"]))
    path = HERE / f"{case['name']}.json"
    path.write_text(json.dumps(case, indent=1) + "\n")
    print("wrote", path.name)


def record() -> None:
    if os.geteuid() != 0:
        sys.exit("recording needs root (network namespaces); --expected does not")
    for ns in (NS, PEER_NS):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        dumped, events, shown = asyncio.run(capture())
        for m in dumped:
            if nlm.event_name(m) == "RTM_NEWLINK":
                INDEX[m.get_attr("IFLA_IFNAME")] = m["index"]
        links = {}
        for name, (kind, where, how, pick) in KERNEL_CASES.items():
            pool = dumped if where == "dump" else events
            found = [m for m in pool if pick(m)]
            if not found:
                sys.exit(f"{name}: no message matched ({how})")
            case = {
                "name": name,
                "kind": kind,
                "source": "kernel",
                "how": how,
                "hex": raw_bytes(found[0]).hex(),
            }
            if kind == "link" and where == "dump":
                case["iproute2"] = shown[found[0].get_attr("IFLA_IFNAME")]
            links[name] = case
        for case in links.values():
            write(case)
    finally:
        for ns in (NS, PEER_NS):
            subprocess.run(["ip", "netns", "del", ns], check=False)
    for name, (how, raw) in synthesized().items():
        write(
            {
                "name": name,
                "kind": "link",
                "source": "synthesized",
                "how": how + " -- this kernel lacks the module, so the message was built with "
                "pyroute2's ifinfmsg encoder (see record.py)",
                "hex": raw.hex(),
            }
        )
    derive_cloned()
    derive_veth_without_link()


def derive_veth_without_link() -> None:
    """Older kernels omit IFLA_LINK when it equals the ifindex, even for a peer elsewhere."""
    base = json.loads((HERE / "link_veth_same_index.json").read_text())
    raw = bytes.fromhex(base["hex"])
    kept, offset = [raw[:32]], 32  # nlmsghdr + ifinfomsg
    while offset < len(raw):
        length, atype = struct.unpack_from("=HH", raw, offset)
        size = (length + 3) & ~3
        if atype & 0x3FFF != 5:  # IFLA_LINK
            kept.append(raw[offset : offset + size])
        offset += size
    out = b"".join(kept)
    write(
        {
            "name": "link_veth_same_index_old_kernel",
            "kind": "link",
            "source": "synthesized",
            "how": "link_veth_same_index without its IFLA_LINK attribute, as kernels before "
            "'rtnetlink: always put IFLA_LINK for links with a link-netnsid' send it",
            "hex": (len(out).to_bytes(4, sys.byteorder) + out[4:]).hex(),
        }
    )


def derive_cloned() -> None:
    """A cloned (cache) route: the recorded connected route with RTM_F_CLONED set."""
    base = json.loads((HERE / "route_connected_v6.json").read_text())
    raw = bytearray.fromhex(base["hex"])
    flags = int.from_bytes(raw[24:28], sys.byteorder) | 0x200  # rtmsg.rtm_flags
    raw[24:28] = flags.to_bytes(4, sys.byteorder)
    write(
        {
            "name": "route_cloned",
            "kind": "route",
            "source": "synthesized",
            "how": "route_connected_v6 with RTM_F_CLONED set in rtm_flags (a cache entry; ignored)",
            "hex": raw.hex(),
        }
    )


def refresh_expected() -> None:
    for path in sorted(HERE.glob("*.json")):
        write(json.loads(path.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--expected", action="store_true", help="only recompute expected")
    args = parser.parse_args()
    if args.expected:
        refresh_expected()
    else:
        record()


if __name__ == "__main__":
    main()
