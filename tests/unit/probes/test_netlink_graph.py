"""Netlink messages → graph operations, without root: raw rtnetlink bytes are fed to the
probe's datagram handler (the same path a socket read takes) and the graph is checked."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest

from pyskydive.graph import Graph, Node
from pyskydive.probes.topology.netlink import NetlinkProbe
from pyskydive.probes.topology.nsutil import NetnsRunner
from pyskydive.probes.topology.registry import TopologyContext

RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR = 16, 17, 20, 21
IFF_UP = 0x1
AF_BRIDGE = 7


def _nla(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _msg(msg_type: int, body: bytes, seq: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), msg_type, 0, seq, 0) + body


def link(
    index: int,
    name: str,
    *,
    kind: str | None = None,
    up: bool = True,
    mtu: int = 1500,
    mac: str = "02:00:00:00:00:01",
    master: int | None = None,
    parent: int | None = None,
    vlan: int | None = None,
    deleted: bool = False,
    family: int = 0,
) -> bytes:
    attrs = _nla(3, name.encode() + b"\0") + _nla(4, struct.pack("=I", mtu))
    attrs += _nla(1, bytes(int(x, 16) for x in mac.split(":")))
    if master is not None:
        attrs += _nla(10, struct.pack("=I", master))
    if parent is not None:
        attrs += _nla(5, struct.pack("=i", parent))
    if kind is not None:
        info = _nla(1, kind.encode() + b"\0")
        if vlan is not None:
            info += _nla(0x8002, _nla(1, struct.pack("=H", vlan)))
        attrs += _nla(0x8012, info)
    header = struct.pack("=BxHiII", family, 1, index, IFF_UP if up else 0, 0xFFFFFFFF)
    return _msg(RTM_DELLINK if deleted else RTM_NEWLINK, header + attrs)


def addr(index: int, cidr: str, *, deleted: bool = False) -> bytes:
    ip, plen = cidr.split("/")
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    packed = socket.inet_pton(family, ip)
    body = struct.pack("=BBBBI", family, int(plen), 0, 0, index)
    body += _nla(1, packed) + (_nla(2, packed) if family == socket.AF_INET else b"")
    return _msg(RTM_DELADDR if deleted else RTM_NEWADDR, body)


@pytest.fixture
def probe() -> NetlinkProbe:
    graph = Graph("h1")
    host = graph.add_node("h1", {"Name": "h1", "Type": "host", "TID": "0" * 32}, origin="a")
    ctx = TopologyContext(graph=graph, origin="a", host=host)
    return NetlinkProbe(ctx, host, NetnsRunner(), metrics_update=0)


def node(probe: NetlinkProbe, name: str) -> Node:
    (found,) = probe.ctx.graph.get_nodes({"Name": name})
    return found


def layer2(probe: NetlinkProbe) -> set[tuple[str, str, Any]]:
    g = probe.ctx.graph
    return {
        (g.nodes[e.parent].metadata["Name"], g.nodes[e.child].metadata["Name"], e.get("Type"))
        for e in g.get_edges({"RelationType": "layer2"})
    }


def test_link_becomes_a_node_owned_by_the_host(probe: NetlinkProbe) -> None:
    probe._on_datagram(link(2, "eth0"))
    eth0 = node(probe, "eth0")
    md = eth0.metadata
    assert (md["Type"], md["IfIndex"], md["MTU"], md["State"]) == ("device", 2, 1500, "UP")
    owners = probe.ctx.graph.parents(eth0.id, {"RelationType": "ownership"})
    assert [o.id for o in owners] == ["h1"]
    assert isinstance(md["TID"], str)


def test_rename_mac_and_mtu_change_keep_the_node(probe: NetlinkProbe) -> None:
    probe._on_datagram(link(2, "eth0"))
    before = node(probe, "eth0")
    probe._on_datagram(link(2, "wan0", mtu=9000, mac="02:00:00:00:00:99", up=False))
    after = node(probe, "wan0")
    assert after is before
    assert (after.metadata["MTU"], after.metadata["MAC"]) == (9000, "02:00:00:00:00:99")
    assert after.metadata["State"] == "DOWN"
    assert probe.ctx.graph.get_nodes({"Name": "eth0"}) == []
    assert after.revision == 2


def test_bond_slave_before_master_is_linked_when_the_master_comes(probe: NetlinkProbe) -> None:
    probe._on_datagram(link(3, "eth1", master=5))
    assert layer2(probe) == set()
    probe._on_datagram(link(5, "bond0", kind="bond"))
    assert layer2(probe) == {("bond0", "eth1", None)}
    # nomaster: the same link without IFLA_MASTER
    probe._on_datagram(link(3, "eth1"))
    assert layer2(probe) == set()
    assert "MasterIndex" not in node(probe, "eth1").metadata


def test_vlan_is_linked_to_its_parent(probe: NetlinkProbe) -> None:
    probe._on_datagram(link(2, "eth0") + link(7, "eth0.42", kind="vlan", parent=2, vlan=42))
    vlan = node(probe, "eth0.42")
    assert (vlan.metadata["Type"], vlan.metadata["Vlan"]) == ("vlan", 42)
    assert layer2(probe) == {("eth0", "eth0.42", None)}


def test_veth_pair_announced_half_made_gets_one_edge(probe: NetlinkProbe) -> None:
    # The kernel announces the first end with IFLA_LINK 0 and never updates it.
    probe._on_datagram(link(8, "va", kind="veth", parent=0))
    probe._on_datagram(link(9, "vb", kind="veth", parent=8))
    assert {(a, b) for a, b, _ in layer2(probe)} in ({("va", "vb")}, {("vb", "va")})
    assert {t for _, _, t in layer2(probe)} == {"veth"}
    assert node(probe, "va").metadata["PeerIfIndex"] == 9
    # A later update of either end makes no second edge.
    probe._on_datagram(link(9, "vb", kind="veth", parent=8, mtu=1400))
    assert len(layer2(probe)) == 1


def test_bridge_module_reports_are_ignored_and_dellink_removes(probe: NetlinkProbe) -> None:
    probe._on_datagram(link(4, "br0", kind="bridge") + link(3, "eth1", master=4))
    # The bridge module's AF_BRIDGE DELLINK when a port leaves must not delete the port.
    probe._on_datagram(link(3, "eth1", family=AF_BRIDGE, deleted=True))
    assert node(probe, "eth1")
    probe._on_datagram(link(4, "br0", kind="bridge", deleted=True))
    assert probe.ctx.graph.get_nodes({"Name": "br0"}) == []
    assert layer2(probe) == set()
    assert len(probe.ctx.graph.edges) == 1  # host → eth1 only


def test_addresses_follow_add_and_delete(probe: NetlinkProbe) -> None:
    probe._on_datagram(link(2, "eth0"))
    probe._on_datagram(addr(2, "10.0.0.1/24") + addr(2, "fd00::1/64"))
    probe._on_datagram(addr(2, "10.0.0.2/24"))
    md = node(probe, "eth0").metadata
    assert (md["IPV4"], md["IPV6"]) == (["10.0.0.1/24", "10.0.0.2/24"], ["fd00::1/64"])
    probe._on_datagram(addr(2, "10.0.0.1/24", deleted=True) + addr(2, "fd00::1/64", deleted=True))
    md = node(probe, "eth0").metadata
    assert md["IPV4"] == ["10.0.0.2/24"] and "IPV6" not in md


def test_garbage_is_skipped_and_the_rest_applied(probe: NetlinkProbe) -> None:
    probe._on_datagram(b"\x01\x02\x03")
    probe._on_datagram(link(2, "eth0") + b"\xff" * 7)
    assert node(probe, "eth0")
