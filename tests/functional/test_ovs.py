"""Open vSwitch in the topology: a real private ovsdb-server + ovs-vswitchd (userspace datapath),
a real agent with the netlink, netns and ovsdb probes, assertions on the analyzer's graph.

Bridges and ports are named ``sko…`` and deleted after each test (``ovs`` fixture); veths and
namespaces go through the ``kernel`` fixture.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from conftest import (
    Cluster,
    Kernel,
    Pair,
    PrivateOvs,
    Topology,
    sh,
    start_pair,
    uid,
    wait_topology,
)


def ovs_pair(cluster: Cluster, ovs: PrivateOvs) -> Pair:
    return start_pair(
        cluster,
        extra={
            "SKYDIVE_AGENT_TOPOLOGY_PROBES": "netlink,netns,ovsdb",
            "SKYDIVE_OVS_OVSDB": ovs.remote,
        },
    )


def gremlin(port: int, query: str) -> Any:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/topology", json={"GremlinQuery": query}, timeout=10
    )
    r.raise_for_status()
    return r.json()


def one(topo: Topology, **md: Any) -> dict[str, Any] | None:
    return topo.one(**md)


def owner(topo: Topology, node: dict[str, Any] | None) -> dict[str, Any] | None:
    if node is None:
        return None
    parents = topo.parents(node["ID"], "ownership")
    return parents[0] if len(parents) == 1 else None


def l2(
    topo: Topology, parent: dict[str, Any] | None, child: dict[str, Any] | None, **md: Any
) -> bool:
    if parent is None or child is None:
        return False
    return any(
        e["Parent"] == parent["ID"] and e["Child"] == child["ID"]
        for e in topo.edges_between(parent["ID"], child["ID"], RelationType="layer2", **md)
    )


def interfaces(topo: Topology, name: str) -> list[dict[str, Any]]:
    """Nodes called ``name`` that are not OVS bridges or ports (an OVS port and its interface
    usually share a name)."""
    return [
        n for n in topo.find(Name=name) if n["Metadata"]["Type"] not in ("ovsbridge", "ovsport")
    ]


def test_bridge_port_internal_interface(cluster: Cluster, ovs: PrivateOvs) -> None:
    pair = ovs_pair(cluster, ovs)
    br, port = uid("skobr"), uid("skoin")
    ovs.vsctl(f"add-br {br} -- set bridge {br} datapath_type=netdev external_ids:team=net")
    ovs.vsctl(f"add-port {br} {port} -- set interface {port} type=internal")

    def ready(t: Topology) -> bool:
        bridge = one(t, Name=br, Type="ovsbridge")
        p = one(t, Name=port, Type="ovsport")
        ifaces = interfaces(t, port)
        return (
            len(ifaces) == 1
            and owner(t, bridge) is not None
            and owner(t, bridge)["ID"] == pair.agent.host_id  # type: ignore[index]
            and owner(t, p) == bridge
            and l2(t, bridge, p)
            and l2(t, p, ifaces[0])
            and ifaces[0]["Metadata"].get("IfIndex") is not None
            and owner(t, ifaces[0]) is not None
            and owner(t, ifaces[0])["ID"] == pair.agent.host_id  # type: ignore[index]
        )

    topo = wait_topology(pair.port, f"{br} -> {port} -> internal {port}", ready, timeout=20)
    bridge = one(topo, Name=br, Type="ovsbridge")
    assert bridge is not None
    assert bridge["Metadata"]["ExtID"] == {"team": "net"}
    assert bridge["Metadata"]["Ovs"]["DatapathType"] == "netdev"
    (iface,) = interfaces(topo, port)
    md = iface["Metadata"]
    assert md["Type"] == "internal"
    assert md["Driver"] == "openvswitch"
    assert isinstance(md["OfPort"], int) and md["OfPort"] > 0
    assert md["UUID"] and md["TID"]
    # The same path through Gremlin.
    found = gremlin(
        pair.port,
        f"G.V().Has('Name', '{br}', 'Type', 'ovsbridge').Out('Name', '{port}', 'Type', 'ovsport')"
        f".Out('Type', 'internal').Dedup().Values('Name')",
    )
    assert found == [port]


def test_patch_ports_join_two_bridges(cluster: Cluster, ovs: PrivateOvs) -> None:
    pair = ovs_pair(cluster, ovs)
    a, b, pa, pb = uid("skoba"), uid("skobb"), uid("skopa"), uid("skopb")
    ovs.vsctl(
        f"add-br {a} -- set bridge {a} datapath_type=netdev"
        f" -- add-br {b} -- set bridge {b} datapath_type=netdev"
        f" -- add-port {a} {pa} -- set interface {pa} type=patch options:peer={pb}"
        f" -- add-port {b} {pb} -- set interface {pb} type=patch options:peer={pa}"
    )

    def ready(t: Topology) -> bool:
        ia, ib = one(t, Name=pa, Type="patch"), one(t, Name=pb, Type="patch")
        ba, bb = one(t, Name=a, Type="ovsbridge"), one(t, Name=b, Type="ovsbridge")
        return (
            ia is not None
            and ib is not None
            and owner(t, ia) == ba
            and owner(t, ib) == bb
            and l2(t, one(t, Name=pa, Type="ovsport"), ia)
            and len(t.edges_between(ia["ID"], ib["ID"], RelationType="layer2", Type="patch")) == 1
        )

    wait_topology(pair.port, f"{pa} <-patch-> {pb}", ready, timeout=20)
    assert gremlin(
        pair.port,
        f"G.V().Has('Name', '{pa}', 'Type', 'patch').Both('Type', 'patch').Values('Name')",
    ) == [pb]


def test_tunnel_ports_are_owned_by_their_bridge(cluster: Cluster, ovs: PrivateOvs) -> None:
    pair = ovs_pair(cluster, ovs)
    br = uid("skobr")
    tunnels = {kind: uid(f"sko{kind[:2]}") for kind in ("vxlan", "geneve", "gre")}
    cmd = f"add-br {br} -- set bridge {br} datapath_type=netdev"
    for i, (kind, name) in enumerate(tunnels.items()):
        cmd += (
            f" -- add-port {br} {name} -- set interface {name} type={kind}"
            f" options:remote_ip=192.0.2.{i + 1} options:local_ip=192.0.2.100"
        )
    ovs.vsctl(cmd)

    def ready(t: Topology) -> bool:
        bridge = one(t, Name=br, Type="ovsbridge")
        return bridge is not None and all(
            owner(t, one(t, Name=name, Type=kind)) == bridge
            and l2(t, one(t, Name=name, Type="ovsport"), one(t, Name=name, Type=kind))
            for kind, name in tunnels.items()
        )

    topo = wait_topology(pair.port, f"vxlan, geneve and gre ports of {br}", ready, timeout=20)
    for i, (kind, name) in enumerate(tunnels.items()):
        md = topo.one(Name=name, Type=kind)["Metadata"]  # type: ignore[index]
        assert md["RemoteIP"] == f"192.0.2.{i + 1}"
        assert md["LocalIP"] == "192.0.2.100"
        assert md["Ovs"]["Options"]["remote_ip"] == f"192.0.2.{i + 1}"


def test_bond_port_with_two_interfaces(cluster: Cluster, ovs: PrivateOvs, kernel: Kernel) -> None:
    pair = ovs_pair(cluster, ovs)
    br, bond = uid("skobr"), uid("skobd")
    v1, v2 = kernel.link_name(), kernel.link_name()
    sh(f"ip link add {v1} type veth peer name {v1}p && ip link add {v2} type veth peer name {v2}p")
    ovs.vsctl(
        f"add-br {br} -- set bridge {br} datapath_type=netdev"
        f" -- add-bond {br} {bond} {v1} {v2} bond_mode=active-backup"
    )

    def ready(t: Topology) -> bool:
        port = one(t, Name=bond, Type="ovsport")
        ends = [one(t, Name=v, Type="veth") for v in (v1, v2)]
        return (
            port is not None
            and port["Metadata"].get("BondMode") == "active-backup"
            and all(
                end is not None
                and l2(t, port, end)
                and "UUID" in end["Metadata"]
                and owner(t, end) is not None
                and owner(t, end)["ID"] == pair.agent.host_id  # type: ignore[index]
                for end in ends
            )
        )

    topo = wait_topology(pair.port, f"bond {bond} with {v1} and {v2}", ready, timeout=20)
    assert all(len(interfaces(topo, v)) == 1 for v in (v1, v2))


def test_internal_port_moved_into_a_namespace(
    cluster: Cluster, ovs: PrivateOvs, kernel: Kernel
) -> None:
    pair = ovs_pair(cluster, ovs)
    ns = kernel.add_netns()
    br, port = uid("skobr"), uid("skoin")
    ovs.vsctl(
        f"add-br {br} -- set bridge {br} datapath_type=netdev"
        f" -- add-port {br} {port} -- set interface {port} type=internal"
    )

    def merged_under(owner_name: str) -> Any:
        def pred(t: Topology) -> bool:
            ifaces = interfaces(t, port)
            if len(ifaces) != 1:
                return False
            o = owner(t, ifaces[0])
            return (
                o is not None
                and o["Metadata"]["Name"] == owner_name
                and ifaces[0]["Metadata"]["Type"] == "internal"
                and "UUID" in ifaces[0]["Metadata"]
                and l2(t, one(t, Name=port, Type="ovsport"), ifaces[0])
            )

        return pred

    wait_topology(pair.port, f"{port} in the root namespace", merged_under(pair.agent.host_id), 20)
    sh(f"ip link set {port} netns {ns}")
    topo = wait_topology(pair.port, f"{port} inside {ns}", merged_under(ns), 20)
    (iface,) = interfaces(topo, port)
    assert owner(topo, iface)["Metadata"]["Type"] == "netns"  # type: ignore[index]


def test_veth_on_a_bridge_is_one_node(cluster: Cluster, ovs: PrivateOvs, kernel: Kernel) -> None:
    pair = ovs_pair(cluster, ovs)
    br = uid("skobr")
    veth = kernel.link_name()
    sh(f"ip link add {veth} type veth peer name {veth}p")
    ovs.vsctl(f"add-br {br} -- set bridge {br} datapath_type=netdev -- add-port {br} {veth}")

    def ready(t: Topology) -> bool:
        ifaces = interfaces(t, veth)
        o = owner(t, ifaces[0]) if len(ifaces) == 1 else None
        return (
            o is not None
            and o["ID"] == pair.agent.host_id
            and ifaces[0]["Metadata"]["Type"] == "veth"
            and "UUID" in ifaces[0]["Metadata"]
            and l2(t, one(t, Name=veth, Type="ovsport"), ifaces[0])
        )

    topo = wait_topology(pair.port, f"ovsport {veth} -> veth {veth}", ready, timeout=20)
    (iface,) = interfaces(topo, veth)
    # The veth keeps its netlink life: its peer edge is still there.
    peer = one(topo, Name=f"{veth}p")
    assert peer is not None
    assert topo.edges_between(iface["ID"], peer["ID"], Type="veth")


def test_bridge_deletion_removes_its_subgraph(cluster: Cluster, ovs: PrivateOvs) -> None:
    pair = ovs_pair(cluster, ovs)
    br, port, patch = uid("skobr"), uid("skoin"), uid("skopa")
    ovs.vsctl(
        f"add-br {br} -- set bridge {br} datapath_type=netdev"
        f" -- add-port {br} {port} -- set interface {port} type=internal"
        f" -- add-port {br} {patch} -- set interface {patch} type=patch options:peer=nowhere"
    )
    topo = wait_topology(
        pair.port,
        f"{br} with its ports",
        lambda t: (
            one(t, Name=patch, Type="patch") is not None
            and one(t, Name=port, Type="internal") is not None
        ),
        timeout=20,
    )
    uuids = {n["Metadata"]["UUID"] for n in topo.nodes if "UUID" in n["Metadata"]}
    ovs.vsctl(f"del-br {br}")
    topo = wait_topology(
        pair.port,
        f"{br} and everything under it to leave",
        lambda t: not any(n["Metadata"].get("UUID") in uuids for n in t.nodes),
        timeout=20,
    )
    assert not topo.find(Name=br)
    assert not topo.find(Name=patch)
    assert not topo.find(Name=port)
    assert all(e["Parent"] in topo.by_id and e["Child"] in topo.by_id for e in topo.edges)


def test_ovsdb_server_restart_resyncs(cluster: Cluster, ovs: PrivateOvs) -> None:
    pair = ovs_pair(cluster, ovs)
    keep, gone, after = uid("skobk"), uid("skobg"), uid("skoba")
    gone_port = uid("skopg")
    ovs.vsctl(
        f"add-br {keep} -- set bridge {keep} datapath_type=netdev"
        f" -- add-br {gone} -- set bridge {gone} datapath_type=netdev"
        f" -- add-port {gone} {gone_port} -- set interface {gone_port} type=patch"
    )
    topo = wait_topology(
        pair.port,
        f"{keep}, {gone} and {gone_port}",
        lambda t: bool(
            t.find(Name=keep, Type="ovsbridge") and t.find(Name=gone_port, Type="patch")
        ),
        timeout=20,
    )
    gone_uuid = topo.one(Name=gone, Type="ovsbridge")["Metadata"]["UUID"]  # type: ignore[index]

    # While the server is down, the database loses a bridge behind the agent's back.
    ovs.kill("ovsdb-server")
    ovs.run(
        "ovsdb-tool",
        "transact",
        ovs.db,
        json.dumps(
            [
                "Open_vSwitch",
                {
                    "op": "mutate",
                    "table": "Open_vSwitch",
                    "where": [],
                    "mutations": [["bridges", "delete", ["uuid", gone_uuid]]],
                },
            ]
        ),
    )
    ovs.start_server()
    ovs.vsctl(f"add-br {after} -- set bridge {after} datapath_type=netdev")

    def converged(t: Topology) -> bool:
        return (
            t.one(Name=keep, Type="ovsbridge") is not None
            and t.one(Name=after, Type="ovsbridge") is not None
            and not t.find(Name=gone)
            and not t.find(Name=gone_port)
        )

    topo = wait_topology(pair.port, "the graph to follow the restarted server", converged, 30)
    bridges = [n for n in topo.find(Type="ovsbridge") if n["Metadata"]["Name"].startswith("sko")]
    assert sorted(b["Metadata"]["Name"] for b in bridges) == sorted([keep, after])


def test_node_types_with_ovs_netlink_and_netns(
    cluster: Cluster, ovs: PrivateOvs, kernel: Kernel
) -> None:
    pair = ovs_pair(cluster, ovs)
    ns = kernel.add_netns()
    veth = kernel.link_name()
    sh(f"ip link add {veth} type veth peer name {veth}p netns {ns}")
    linux_bridge = kernel.link_name()
    sh(f"ip link add {linux_bridge} type bridge")
    br, port = uid("skobr"), uid("skoin")
    ovs.vsctl(
        f"add-br {br} -- set bridge {br} datapath_type=netdev"
        f" -- add-port {br} {port} -- set interface {port} type=internal"
    )
    wanted = {
        "host",
        "netns",
        "ovsbridge",
        "ovsport",
        "veth",
        "device",
        "internal",
        "tun",
        "bridge",
    }
    topo = wait_topology(
        pair.port,
        f"node types {sorted(wanted)}",
        lambda t: wanted <= {n["Metadata"]["Type"] for n in t.nodes},
        timeout=20,
    )
    # ovs-netdev is the userspace datapath's own tap (tun); the bridge's internal port is merged.
    assert topo.find(Name="ovs-netdev", Type="tun")
    assert len(interfaces(topo, br)) == 1
