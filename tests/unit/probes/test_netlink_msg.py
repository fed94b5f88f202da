"""Golden tests of the pure netlink translation core, on real kernel messages.

``tests/data/netlink/*.json`` hold raw rtnetlink messages (hex) recorded from a throwaway
netns by ``tests/data/netlink/record.py`` (or built with pyroute2's encoder for the link
types this kernel lacks), with the expected record. Each message is decoded twice, as
``AsyncIPRoute`` does (``MarshalRtnl.parse``) and as a bare ``ifinfmsg(raw).decode()``, and
link messages are also checked against what iproute2 said of the same interface.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkDecodeError
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pyskydive.errors import ProtocolError
from pyskydive.probes.topology import netlink_msg as nlm
from pyskydive.probes.topology.netlink_msg import Route

DATA = Path(__file__).resolve().parents[2] / "data" / "netlink"
CASES = {path.stem: json.loads(path.read_text()) for path in sorted(DATA.glob("*.json"))}
FUNCTIONS = {
    "link": nlm.link_from_msg,
    "addr": nlm.addr_from_msg,
    "route": nlm.route_from_msg,
    "neigh": nlm.neigh_from_msg,
}
CLASSES = {"link": ifinfmsg, "addr": ifaddrmsg, "route": rtmsg, "neigh": ndmsg}


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def raw(name: str) -> bytes:
    return bytes.fromhex(CASES[name]["hex"])


def from_socket(data: bytes) -> Any:
    """Decode as AsyncIPRoute does (its marshal adds ``event``)."""
    (msg,) = MarshalRtnl().parse(data)
    return msg


def from_bytes(kind: str, data: bytes) -> Any:
    """Decode with the bare message class, as pyroute2's own golden tests do."""
    msg = CLASSES[kind](data)
    msg.decode()
    return msg


def record(name: str) -> Any:
    case = CASES[name]
    return FUNCTIONS[case["kind"]](from_socket(raw(name)))


def test_the_recording_covers_the_brief() -> None:
    kernel = {n for n, c in CASES.items() if c["source"] == "kernel"}
    synthesized = {n for n, c in CASES.items() if c["source"] == "synthesized"}
    assert {
        "link_lo",
        "link_veth",
        "link_veth_netnsid",
        "link_bridge",
        "link_veth_bridge_port",
        "link_macvlan",
        "link_vxlan",
        "link_tap",
        "link_ifb",
        "link_dellink_veth",
        "addr_new_v4_event",
        "addr_del_v4",
        "addr_v6",
        "addr_del_v6",
        "route_default_v4",
        "route_connected_v4",
        "route_multipath_v4",
        "neigh_v4_permanent",
    } <= kernel
    assert {
        "link_dummy",
        "link_bond",
        "link_bond_slave",
        "link_vlan",
        "link_ipvlan",
        "link_gre",
        "link_geneve",
    } <= synthesized
    assert all(
        "lacks the module" in CASES[n]["how"]
        for n in synthesized
        if n.startswith("link_") and "veth" not in n
    )


# -- golden files --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_as_the_socket_yields_it(name: str) -> None:
    case = CASES[name]
    msg = from_socket(raw(name))
    assert msg["header"]["error"] is None
    assert nlm.event_name(msg) == dict.get(msg, "event")
    assert jsonable(FUNCTIONS[case["kind"]](msg)) == case["expected"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_decoded_from_bytes(name: str) -> None:
    case = CASES[name]
    msg = from_bytes(case["kind"], raw(name))
    assert "event" not in msg  # only the marshal adds it: the type comes from the header
    assert jsonable(FUNCTIONS[case["kind"]](msg)) == case["expected"]


IPROUTE2 = {name: case["iproute2"] for name, case in CASES.items() if "iproute2" in case}
INDEX_OF = {entry["ifname"]: entry["ifindex"] for entry in IPROUTE2.values()}


@pytest.mark.parametrize("name", sorted(IPROUTE2))
def test_link_agrees_with_iproute2(name: str) -> None:
    ip = IPROUTE2[name]
    link = record(name)
    md = link.metadata
    assert (link.index, link.name) == (ip["ifindex"], ip["ifname"])
    assert (md["IfIndex"], md["Name"], md["MTU"]) == (ip["ifindex"], ip["ifname"], ip["mtu"])
    assert md["EncapType"] == ip["link_type"]
    assert md["Type"] == (ip["info_kind"] or "device")
    if ip["link_type"] == "ether":
        assert md["MAC"] == ip["address"]
    else:
        assert "MAC" not in md
    # iproute2 hides RUNNING and adds NO-CARRIER (UP without LOWER_UP).
    assert set(md["LinkFlags"]) - {"RUNNING"} == set(ip["flags"]) - {"NO-CARRIER"}
    assert md["State"] == ("UP" if "UP" in ip["flags"] else "DOWN")
    assert link.master_index == (INDEX_OF[ip["master"]] if "master" in ip else None)
    assert link.link_netnsid == ip.get("link_netnsid")
    # iproute2 names the IFLA_LINK device ("link") when it is in the same netns.
    lower = INDEX_OF[ip["link"]] if "link" in ip else ip.get("link_index")
    if md["Type"] == "veth":
        assert link.peer_index == lower and link.parent_index is None
    elif md["Type"] == "vxlan":
        assert link.parent_index == INDEX_OF[ip["info_data"]["link"]]
        assert md["VNI"] == ip["info_data"]["id"]
    else:
        assert link.parent_index == lower
    if md["Type"] == "tun":
        assert md["TunMode"] == ip["info_data"]["type"]


# -- links: the behaviour the golden files pin, spelled out -------------------------------


def test_veth_peer_in_another_netns() -> None:
    link = record("link_veth_netnsid")
    assert (link.peer_index, link.link_netnsid, link.parent_index) == (2, 0, None)
    assert link.metadata["PeerIfIndex"] == 2 and link.metadata["LinkNetNsID"] == 0


@pytest.mark.parametrize("name", ["link_veth_same_index", "link_veth_same_index_old_kernel"])
def test_veth_peer_with_the_same_ifindex(name: str) -> None:
    link = record(name)
    assert link.index == 50 and link.peer_index == 50 and link.link_netnsid == 0


def test_bridge_port_and_its_master() -> None:
    port, bridge = record("link_veth_bridge_port"), record("link_bridge")
    assert port.master_index == bridge.index == port.metadata["MasterIndex"]
    assert port.metadata["Type"] == "veth" and bridge.metadata["Type"] == "bridge"


def test_bridge_module_notices_are_marked_af_bridge() -> None:
    notice, left = record("link_bridge_port_notice"), record("link_bridge_port_left")
    assert notice.family == left.family == nlm.AF_BRIDGE
    assert left.deleted  # an AF_BRIDGE RTM_DELLINK: the port left, the link still exists
    assert record("link_veth_bridge_port").family == 0


def test_ifla_event_hides_the_event_key_from_get() -> None:
    msg = from_socket(raw("link_ifla_event"))
    assert msg.get("event") != "RTM_NEWLINK"  # pyroute2 answers with IFLA_EVENT
    assert nlm.event_name(msg) == "RTM_NEWLINK"
    assert not nlm.link_from_msg(msg).deleted


def test_dellink() -> None:
    link = record("link_dellink_veth")
    assert link.deleted and link.name == "nlrec-del0" and link.metadata["Type"] == "veth"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("link_lo", {"Type": "device", "EncapType": "loopback", "State": "UP"}),
        ("link_tap", {"Type": "tun", "TunMode": "tap", "EncapType": "ether"}),
        ("link_tun", {"Type": "tun", "TunMode": "tun", "EncapType": "none"}),
        ("link_ifb", {"Type": "ifb", "State": "DOWN"}),
        ("link_macvlan", {"Type": "macvlan", "ParentIndex": 3}),
        ("link_vxlan", {"Type": "vxlan", "VNI": 42, "ParentIndex": 3}),
        ("link_dummy", {"Type": "dummy"}),
        ("link_bond", {"Type": "bond", "BondMode": "active-backup"}),
        ("link_bond_slave", {"Type": "device", "MasterIndex": 21}),
        ("link_vlan", {"Type": "vlan", "Vlan": 42, "ParentIndex": 3}),
        ("link_ipvlan", {"Type": "ipvlan", "ParentIndex": 3}),
        ("link_geneve", {"Type": "geneve", "VNI": 4242}),
        ("link_gre", {"Type": "gre", "EncapType": "gre", "MTU": 1476}),
    ],
)
def test_link_metadata(name: str, expected: dict[str, Any]) -> None:
    md = record(name).metadata
    assert {k: md.get(k) for k in expected} == expected
    assert "Driver" not in md  # ethtool's, not ours


def test_no_mac_without_an_l2_address() -> None:
    assert "MAC" not in record("link_lo").metadata
    assert "MAC" not in record("link_tun").metadata
    gre = record("link_gre")  # IFLA_ADDRESS is the tunnel's local IPv4 address
    assert "MAC" not in gre.metadata and gre.parent_index is None  # IFLA_LINK == 0


def test_bond_slave_metadata() -> None:
    slave = record("link_bond_slave").metadata["BondSlave"]
    assert slave["Type"] == "bond" and slave["State"] == "ACTIVE" and slave["MiiStatus"] == "UP"
    assert slave["LinkFailureCount"] == 3 and slave["PermMAC"] == "52:54:00:00:00:22"


def test_link_flags_are_sorted_kernel_names() -> None:
    assert record("link_lo").metadata["LinkFlags"] == ["LOOPBACK", "LOWER_UP", "RUNNING", "UP"]
    assert record("link_tun").metadata["LinkFlags"] == ["MULTICAST", "NOARP", "POINTOPOINT"]


def test_link_metrics_from_stats64() -> None:
    lo = record("link_lo")
    assert lo.metrics and set(lo.metrics) <= set(nlm.METRIC_NAMES)
    assert lo.metrics["RxPackets"] == lo.metrics["TxPackets"] > 0  # loopback: rx == tx
    assert record("link_dummy").metrics == {}  # all counters zero
    assert record("link_bridge_port_notice").metrics is None  # no stats in the message


# -- addresses, routes, neighbours ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cidr", "deleted"),
    [
        ("addr_v4", "10.77.0.1/24", False),
        ("addr_v6", "fd77::1/64", False),
        ("addr_del_v4", "10.77.5.1/24", True),
        ("addr_del_v6", "fd77:5::1/64", True),
        ("addr_peer_v4", "10.77.6.1/32", False),  # IFA_LOCAL, not the peer's IFA_ADDRESS
    ],
)
def test_addr(name: str, cidr: str, deleted: bool) -> None:
    addr = record(name)
    assert (addr.cidr, addr.deleted, addr.index) == (cidr, deleted, 3)


@pytest.mark.parametrize("name", ["route_local_table", "route_cloned"])
def test_ignored_routes(name: str) -> None:
    assert record(name) is None


def test_routes() -> None:
    default = record("route_default_v4")
    assert (default.prefix, default.table, default.protocol) == ("0.0.0.0/0", 254, 3)
    assert default.nexthops == ({"IfIndex": 3, "IP": "10.77.0.254", "Priority": 100},)
    assert record("route_default_v6").prefix == "::/0"
    assert record("route_connected_v4").src == "10.77.0.1"
    assert record("route_table_100").table == 100
    assert record("route_blackhole").nexthops == ()
    multipath = record("route_multipath_v4")
    assert [(h["IfIndex"], h["IP"]) for h in multipath.nexthops] == [
        (3, "10.77.0.2"),
        (6, "10.77.2.2"),
    ]
    deleted = record("route_del_default_v4")
    assert deleted.deleted and deleted.key == default.key


def test_neighbours() -> None:
    v4 = record("neigh_v4_permanent")
    assert (v4.ip, v4.mac, v4.state, v4.deleted) == (
        "10.77.0.2",
        "02:00:00:00:00:02",
        ("NUD_PERMANENT",),
        False,
    )
    router = record("neigh_v6_router")
    assert router.flags == ("NTF_ROUTER",) and router.state == ("NUD_STALE",)
    assert record("neigh_loopback") is None
    for name in ("neigh_del_v4", "neigh_incomplete"):  # no NDA_LLADDR: off the list
        gone = record(name)
        assert gone.deleted and gone.mac == "" and gone.ip.startswith("10.77.0.")
    fdb = record("neigh_fdb_vxlan")  # the all-zero flood entry of a vxlan is kept
    assert (fdb.family, fdb.ip, fdb.mac) == (nlm.AF_BRIDGE, "10.77.0.2", "00:00:00:00:00:00")


# -- routing tables ------------------------------------------------------------------------

ROUTES = [
    record(n)
    for n in (
        "route_connected_v4",
        "route_default_v4",
        "route_multipath_v4",
        "route_table_100",
        "route_blackhole",
        "route_default_v6",
        "route_multipath_v6",
        "route_connected_v6",
    )
]

VA_TABLES = [
    {
        "ID": 100,
        "Src": "",
        "Routes": [
            {"Prefix": "10.55.0.0/16", "Protocol": 3, "NextHops": [{"IfIndex": 3, "Priority": 0}]}
        ],
    },
    {
        "ID": 254,
        "Src": "10.77.0.1",
        "Routes": [
            {
                "Prefix": "0.0.0.0/0",
                "Protocol": 3,
                "NextHops": [{"IfIndex": 3, "Priority": 100, "IP": "10.77.0.254"}],
            },
            {"Prefix": "10.77.0.0/24", "Protocol": 2, "NextHops": [{"IfIndex": 3, "Priority": 0}]},
            {
                "Prefix": "10.99.0.0/16",
                "Protocol": 3,
                "NextHops": [
                    {"IfIndex": 3, "Priority": 0, "IP": "10.77.0.2"},
                    {"IfIndex": 6, "Priority": 0, "IP": "10.77.2.2"},
                ],
            },
            {
                "Prefix": "::/0",
                "Protocol": 3,
                "NextHops": [{"IfIndex": 3, "Priority": 1024, "IP": "fd77::fe"}],
            },
            {"Prefix": "fd77::/64", "Protocol": 2, "NextHops": [{"IfIndex": 3, "Priority": 256}]},
            {
                "Prefix": "fd99::/64",
                "Protocol": 3,
                "NextHops": [
                    {"IfIndex": 3, "Priority": 1024, "IP": "fd77::2"},
                    {"IfIndex": 6, "Priority": 1024, "IP": "fd77:2::2"},
                ],
            },
        ],
    },
]


def test_routing_tables_of_an_interface() -> None:
    assert nlm.routing_tables(ROUTES, 3) == VA_TABLES


def test_routing_tables_do_not_depend_on_order() -> None:
    shuffled = list(ROUTES)
    random.Random(7).shuffle(shuffled)
    assert nlm.routing_tables(reversed(shuffled), 3) == VA_TABLES


def test_routing_tables_list_multipath_routes_on_each_member() -> None:
    (main,) = nlm.routing_tables(ROUTES, 6)
    assert [r["Prefix"] for r in main["Routes"]] == ["10.99.0.0/16", "fd99::/64"]
    assert nlm.routing_tables(ROUTES, 99) == []


def test_routing_tables_merge_like_skydive() -> None:
    def route(prefix: str, gw: str, metric: int, deleted: bool = False) -> Route:
        hop = {"IfIndex": 3, "IP": gw, "Priority": metric}
        return Route(254, 2, prefix, 3, None, (hop,), deleted, metric)

    tables = nlm.routing_tables(
        [
            route("10.1.0.0/16", "10.77.0.9", 300),
            route("10.1.0.0/16", "10.77.0.9", 200),  # same hop, other metric: one hop
            route("10.1.0.0/16", "10.77.0.8", 300),  # another hop of the same route
            route("10.2.0.0/16", "10.77.0.9", 100, deleted=True),
        ],
        3,
    )
    assert tables == [
        {
            "ID": 254,
            "Src": "",
            "Routes": [
                {
                    "Prefix": "10.1.0.0/16",
                    "Protocol": 3,
                    "NextHops": [
                        {"IfIndex": 3, "Priority": 300, "IP": "10.77.0.8"},
                        {"IfIndex": 3, "Priority": 200, "IP": "10.77.0.9"},
                    ],
                }
            ],
        }
    ]


# -- metrics -------------------------------------------------------------------------------

SKYDIVE_METRICS = [  # the brief's list, in rtnl_link_stats64 order
    "RxPackets",
    "TxPackets",
    "RxBytes",
    "TxBytes",
    "RxErrors",
    "TxErrors",
    "RxDropped",
    "TxDropped",
    "Multicast",
    "Collisions",
    "RxLengthErrors",
    "RxOverErrors",
    "RxCrcErrors",
    "RxFrameErrors",
    "RxFifoErrors",
    "RxMissedErrors",
    "TxAbortedErrors",
    "TxCarrierErrors",
    "TxFifoErrors",
    "TxHeartbeatErrors",
    "TxWindowErrors",
    "RxCompressed",
    "TxCompressed",
]


def test_metrics_from_stats_names() -> None:
    kernel = [name for name, _ in ifinfmsg.ifstats64.fields]
    metrics = nlm.metrics_from_stats({name: i + 1 for i, name in enumerate(kernel)})
    assert list(metrics) == SKYDIVE_METRICS == list(nlm.METRIC_NAMES)
    assert list(metrics.values()) == list(range(1, 24))


def test_metrics_from_stats_leaves_zeros_and_unknown_keys_out() -> None:
    stats = {"rx_packets": 0, "tx_bytes": 7, "rx_nohandler": 5, "header": 1}
    assert nlm.metrics_from_stats(stats) == {"TxBytes": 7}


def test_metrics_from_stats_takes_pyroute2_stats() -> None:
    stats = from_socket(raw("link_lo")).get_attr("IFLA_STATS64")
    assert nlm.metrics_from_stats(stats) == record("link_lo").metrics


def test_metric_delta() -> None:
    prev = {"RxPackets": 10, "TxPackets": 5, "RxBytes": 1000, "Start": 1, "Last": 2}
    cur = {"RxPackets": 15, "TxPackets": 3, "TxBytes": 64, "Start": 1, "Last": 9}
    # TxPackets went down: the counter was reset, so the delta is the new value.
    assert nlm.metric_delta(prev, cur) == {"RxPackets": 5, "TxPackets": 3, "TxBytes": 64}
    assert nlm.metric_delta(cur, cur) == {}
    assert nlm.metric_delta({}, {"RxBytes": 4}) == {"RxBytes": 4}


# -- malformed input -----------------------------------------------------------------------


def _translate(kind: str, msg: Any) -> None:
    """Translation may succeed or raise ProtocolError; anything else fails the test."""
    with contextlib.suppress(ProtocolError):
        FUNCTIONS[kind](msg)


def _variants(data: bytes) -> list[bytes]:
    """The message cut at every length, with nlmsg_len fixed to match."""
    cuts = (data[:n] for n in range(16, len(data)))
    return [len(cut).to_bytes(4, "little") + cut[4:] for cut in cuts]


def _decodings(kind: str, data: bytes) -> list[Any]:
    """What pyroute2 makes of ``data`` (both ways); nothing where pyroute2 itself fails.

    pyroute2 raises (e.g. ``struct.error``) on a message cut inside its fixed header, before
    any translation; the kernel never sends such a message.
    """
    out = []
    with contextlib.suppress(Exception):
        out += list(MarshalRtnl().parse(data))
    with contextlib.suppress(Exception):
        out.append(from_bytes(kind, data))
    return out


@pytest.mark.parametrize(
    "name",
    [
        "link_dellink_veth",
        "addr_peer_v4",
        "route_multipath_v6",
        "neigh_v6_router",
        "link_bond_slave",
    ],
)
def test_truncated_messages(name: str) -> None:
    kind = CASES[name]["kind"]
    decoded = 0
    for data in _variants(raw(name)):
        for msg in _decodings(kind, data):
            decoded += 1
            _translate(kind, msg)
    assert decoded > len(raw(name)) // 2  # most cuts reach the translation


@pytest.mark.parametrize(
    "name", ["link_veth_netnsid", "route_multipath_v4", "neigh_fdb_vxlan", "addr_v6"]
)
def test_corrupted_messages(name: str) -> None:
    kind, data = CASES[name]["kind"], raw(name)
    rng = random.Random(name)
    for _ in range(300):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            corrupt[rng.randrange(16, len(corrupt))] = rng.randrange(256)
        for msg in _decodings(kind, bytes(corrupt)):
            _translate(kind, msg)


def test_a_partly_decoded_message_is_a_protocol_error() -> None:
    # What MarshalRtnl.parse_one_message yields when decode() raises NetlinkDecodeError:
    # the message as far as it got, with the error in its header.
    msg = from_socket(raw("link_veth"))
    msg["header"]["error"] = NetlinkDecodeError(ValueError("cut short"))
    with pytest.raises(ProtocolError, match="undecodable link message"):
        nlm.link_from_msg(msg)


def _with_attr_byte(data: bytes, atype: int, value: int) -> bytes:
    """Overwrite the first payload byte of the top-level link NLA ``atype``."""
    out, offset = bytearray(data), 32  # nlmsghdr + ifinfomsg
    while int.from_bytes(out[offset + 2 : offset + 4], "little") & 0x3FFF != atype:
        offset += (int.from_bytes(out[offset : offset + 2], "little") + 3) & ~3
    out[offset + 4] = value
    return bytes(out)


def test_an_undecodable_attribute_we_do_not_read_is_harmless() -> None:
    data = _with_attr_byte(raw("link_veth"), 16, 0xFF)  # IFLA_OPERSTATE 255: no such state
    msg = from_socket(data)
    assert isinstance(msg.get_attr("IFLA_OPERSTATE"), bytes)  # pyroute2 gave up on it
    assert jsonable(nlm.link_from_msg(msg)) == CASES["link_veth"]["expected"]


def test_an_undecodable_name_is_a_protocol_error() -> None:
    data = _with_attr_byte(raw("link_veth"), 3, 0xFF)  # IFLA_IFNAME: not UTF-8 any more
    with pytest.raises(ProtocolError, match="IFLA_IFNAME"):
        nlm.link_from_msg(from_socket(data))


@pytest.mark.parametrize("thing", [None, "garbage", b"\x00" * 40, 42, {}, {"header": None}, []])
@pytest.mark.parametrize("kind", sorted(FUNCTIONS))
def test_not_a_message(kind: str, thing: Any) -> None:
    with pytest.raises(ProtocolError):
        FUNCTIONS[kind](thing)


def test_link_without_name_or_index() -> None:
    nameless = ifinfmsg()
    nameless["header"]["type"] = 16
    nameless["index"] = 5
    nameless["attrs"] = []
    with pytest.raises(ProtocolError, match="IFLA_IFNAME"):
        nlm.link_from_msg(nameless)
    indexless = ifinfmsg()
    indexless["header"]["type"] = 16
    indexless["attrs"] = [("IFLA_IFNAME", "x")]
    with pytest.raises(ProtocolError, match="index"):
        nlm.link_from_msg(indexless)


def test_wrong_message_type() -> None:
    with pytest.raises(ProtocolError, match="RTM_NEWLINK/RTM_DELLINK"):
        nlm.link_from_msg(from_socket(raw("addr_v4")))
    with pytest.raises(ProtocolError, match="RTM_NEWROUTE"):
        nlm.route_from_msg(from_socket(raw("neigh_v4_permanent")))


def test_hand_built_message_without_header() -> None:
    msg = ifinfmsg()
    msg["index"] = 7
    msg["ifi_type"] = 1
    msg["flags"] = 1
    msg["attrs"] = [
        ("IFLA_IFNAME", "nlrec-x"),
        ("IFLA_LINK", 7),  # == own index: no parent
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth")]}),
    ]
    link = nlm.link_from_msg(msg)
    assert (link.deleted, link.metadata["State"], link.peer_index) == (False, "UP", 7)


# -- purity --------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["netlink_msg", "netlink_metadata"])
def test_the_core_does_no_io(module: str) -> None:
    source = Path(nlm.__file__).with_name(f"{module}.py").read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {
        "__future__",
        "collections",
        "dataclasses",
        "ipaddress",
        "struct",
        "typing",
        "pyskydive",
    }
