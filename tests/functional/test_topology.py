"""Live host topology through an analyzer: real namespaces and links, seen via GET /api/topology.

Each test starts its own analyzer + agent pair, changes the kernel with iproute2 and waits for
the analyzer's graph to show what a user would check.
"""

from __future__ import annotations

import functools
import subprocess
from typing import Any

import pytest
from conftest import (
    Cluster,
    Kernel,
    Pair,
    Topology,
    sh,
    start_pair,
    topology,
    uid,
    wait_for,
    wait_node,
    wait_topology,
)

HOST_TYPES = {"host", "netns"}


def owners(topo: Topology, node_id: str) -> list[str]:
    return [p["ID"] for p in topo.parents(node_id, "ownership")]


def node_id(topo: Topology, name: str) -> str:
    """The ID of the one node called ``name``, or "" when there is none (or several)."""
    node = topo.one(Name=name)
    return node["ID"] if node else ""


def layer2(topo: Topology, parent: str, child: str, **md: Any) -> list[dict[str, Any]]:
    """layer2 edges from ``parent`` to ``child`` (direction checked)."""
    return [
        e
        for e in topo.edges_between(parent, child, RelationType="layer2", **md)
        if e["Parent"] == parent and e["Child"] == child
    ]


def test_namespace_appears_owned_by_host_and_leaves_with_its_interfaces(
    pair: Pair, kernel: Kernel
) -> None:
    ns = kernel.add_netns()
    inner = uid()  # lives and dies in the namespace
    sh(f"ip -n {ns} link add {inner} type veth peer name {inner}p")

    netns = wait_node(pair.port, Name=ns, Type="netns")
    assert netns["Metadata"]["Path"] == f"/var/run/netns/{ns}"
    topo = wait_topology(
        pair.port,
        f"{inner}, {inner}p and lo inside {ns}",
        lambda t: (
            all(owners(t, node_id(t, name)) == [netns["ID"]] for name in (inner, f"{inner}p"))
            and any(owners(t, n["ID"]) == [netns["ID"]] for n in t.find(Name="lo"))
        ),
    )
    assert owners(topo, netns["ID"]) == [pair.agent.host_id]
    owned = {n["ID"] for n in topo.nodes if owners(topo, n["ID"]) == [netns["ID"]]}
    assert len(owned) == 3  # lo and the veth pair

    sh(f"ip netns del {ns}")
    topo = wait_topology(
        pair.port,
        f"{ns} and its interfaces to leave",
        lambda t: netns["ID"] not in t.by_id and not owned & t.by_id.keys(),
    )
    assert not topo.find(Name=ns)
    assert not topo.find(Name=inner)
    # Nothing left dangling: every edge joins two nodes that exist.
    assert all(e["Parent"] in topo.by_id and e["Child"] in topo.by_id for e in topo.edges)


def test_veth_across_namespaces_is_one_layer2_edge(pair: Pair, kernel: Kernel) -> None:
    ns = kernel.add_netns()
    out, inside = kernel.link_name(), uid()
    sh(f"ip link add {out} type veth peer name {inside} netns {ns}")

    netns = wait_node(pair.port, Name=ns, Type="netns")
    topo = wait_topology(
        pair.port,
        f"the veth edge between {out} and {inside}",
        lambda t: bool(
            node_id(t, out)
            and node_id(t, inside)
            and t.edges_between(node_id(t, out), node_id(t, inside), Type="veth")
        ),
    )
    a, b = topo.one(Name=out), topo.one(Name=inside)
    assert a is not None and b is not None
    assert a["Metadata"]["Type"] == "veth" and b["Metadata"]["Type"] == "veth"
    between = topo.edges_between(a["ID"], b["ID"])
    assert len(between) == 1
    assert between[0]["Metadata"]["RelationType"] == "layer2"
    assert between[0]["Metadata"]["Type"] == "veth"
    # No other veth edge hangs off either end.
    for end in (a["ID"], b["ID"]):
        veths = [
            e for e in topo.edges if end in (e["Parent"], e["Child"]) and e["Metadata"].get("Type")
        ]
        assert len(veths) == 1
    assert owners(topo, b["ID"]) == [netns["ID"]]
    assert owners(topo, a["ID"]) == [pair.agent.host_id]


def test_bridge_port_edge_follows_master(pair: Pair, kernel: Kernel) -> None:
    br, port = kernel.link_name(), kernel.link_name()
    sh(f"ip link add {br} type bridge")
    sh(f"ip link add {port} type veth peer name {port}p")
    sh(f"ip link set {port} master {br}")

    def linked(t: Topology) -> bool:
        b, p = t.one(Name=br), t.one(Name=port)
        return bool(b and p and layer2(t, b["ID"], p["ID"]))

    topo = wait_topology(pair.port, f"{br} -> {port} layer2 edge", linked)
    b, p = topo.one(Name=br), topo.one(Name=port)
    assert b is not None and p is not None
    assert b["Metadata"]["Type"] == "bridge"
    assert len(layer2(topo, b["ID"], p["ID"])) == 1
    assert len(owners(topo, p["ID"])) == 1

    sh(f"ip link set {port} nomaster")
    topo = wait_topology(pair.port, f"{port} to leave {br}", lambda t: not linked(t))
    # Both nodes are still there, the same ones.
    assert node_id(topo, br) == b["ID"]
    assert node_id(topo, port) == p["ID"]
    assert not topo.edges_between(b["ID"], p["ID"])


def test_macvlan_is_linked_to_its_parent(pair: Pair, kernel: Kernel) -> None:
    veth, br = kernel.link_name(), kernel.link_name()
    mv1, mv2 = kernel.link_name(), kernel.link_name()
    sh(f"ip link add {veth} type veth peer name {veth}p")
    sh(f"ip link add {mv1} link {veth} type macvlan mode bridge")
    sh(f"ip link add {br} type bridge")
    sh(f"ip link add {mv2} link {br} type macvlan mode bridge")

    def linked(t: Topology) -> bool:
        v, m1, b, m2 = (node_id(t, n) for n in (veth, mv1, br, mv2))
        return bool(v and m1 and b and m2 and layer2(t, v, m1) and layer2(t, b, m2))

    topo = wait_topology(pair.port, "macvlan -> parent layer2 edges", linked)
    for parent, child in ((veth, mv1), (br, mv2)):
        p, c = topo.one(Name=parent), topo.one(Name=child)
        assert p is not None and c is not None
        assert c["Metadata"]["Type"] == "macvlan"
        assert len(layer2(topo, p["ID"], c["ID"])) == 1
        assert owners(topo, c["ID"]) == [pair.agent.host_id]


def test_vxlan_and_tap_types(pair: Pair, kernel: Kernel) -> None:
    vx, tap = kernel.link_name(), kernel.link_name()
    sh(f"ip link add {vx} type vxlan id 42 dstport 4789 dev lo")
    sh(f"ip tuntap add {tap} mode tap")

    vx_node = wait_node(pair.port, Name=vx)
    tap_node = wait_node(pair.port, Name=tap)
    assert vx_node["Metadata"]["Type"] == "vxlan"
    assert tap_node["Metadata"]["Type"] == "tun"
    topo = topology(pair.port)
    for node in (vx_node, tap_node):
        assert owners(topo, node["ID"]) == [pair.agent.host_id]
        assert isinstance(node["Metadata"]["IfIndex"], int)


def test_rename_mac_and_mtu_change_keep_the_node(pair: Pair, kernel: Kernel) -> None:
    name = kernel.link_name()
    sh(f"ip link add {name} type veth peer name {name}p")
    node = wait_node(pair.port, Name=name)
    ifindex = node["Metadata"]["IfIndex"]

    new = kernel.link_name()
    sh(f"ip link set {name} down")
    sh(f"ip link set {name} name {new}")
    renamed = wait_node(pair.port, Name=new)
    assert renamed["ID"] == node["ID"]
    assert renamed["Metadata"]["IfIndex"] == ifindex
    assert not topology(pair.port).find(Name=name)

    mac = "02:00:5e:10:20:30"
    sh(f"ip link set {new} address {mac}")
    changed = wait_node(pair.port, Name=new, MAC=mac)
    assert changed["ID"] == node["ID"]

    sh(f"ip link set {new} mtu 1400")
    changed = wait_node(pair.port, Name=new, MTU=1400)
    assert changed["ID"] == node["ID"]
    assert changed["Revision"] > node["Revision"]
    topo = topology(pair.port)
    assert len(topo.find(Name=new)) == 1
    assert owners(topo, node["ID"]) == [pair.agent.host_id]


def test_addresses_added_and_removed(pair: Pair, kernel: Kernel) -> None:
    name = kernel.link_name()
    sh(f"ip link add {name} type veth peer name {name}p")
    wait_node(pair.port, Name=name)

    sh(f"ip addr add 10.231.7.1/24 dev {name}")
    sh(f"ip addr add 10.231.8.1/16 dev {name}")
    sh(f"ip addr add fd00:231::1/64 dev {name} nodad")

    def md() -> dict[str, Any]:
        node = topology(pair.port).one(Name=name)
        return node["Metadata"] if node else {}

    wait_for(
        "both IPv4 and the IPv6 address",
        lambda: (
            {"10.231.7.1/24", "10.231.8.1/16"} <= set(md().get("IPV4", []))
            and "fd00:231::1/64" in md().get("IPV6", [])
        ),
    )

    sh(f"ip addr del 10.231.7.1/24 dev {name}")
    sh(f"ip addr del fd00:231::1/64 dev {name}")
    wait_for(
        "the removed addresses to leave",
        lambda: (
            md().get("IPV4") == ["10.231.8.1/16"] and "fd00:231::1/64" not in md().get("IPV6", [])
        ),
    )

    sh(f"ip addr del 10.231.8.1/16 dev {name}")
    wait_for("no IPv4 left", lambda: md() and not md().get("IPV4"))


def test_every_interface_has_exactly_one_owner(pair: Pair, kernel: Kernel) -> None:
    br = kernel.link_name()
    sh(f"ip link add {br} type bridge")
    expected: dict[str, str] = {br: pair.agent.host_id}  # name -> owner name or host ID
    spaces = [kernel.add_netns() for _ in range(3)]
    for i, ns in enumerate(spaces):
        out, inside, mv = kernel.link_name(), uid(), uid()
        sh(f"ip link add {out} type veth peer name {inside} netns {ns}")
        sh(f"ip link set {out} master {br}")
        sh(f"ip -n {ns} link add {mv} link {inside} type macvlan mode bridge")
        sh(f"ip -n {ns} addr add 10.232.{i}.1/24 dev {inside}")
        sh(f"ip -n {ns} link set {inside} up")
        expected.update({out: pair.agent.host_id, inside: ns, mv: ns})
    tap = kernel.link_name()
    sh(f"ip tuntap add {tap} mode tap")
    expected[tap] = pair.agent.host_id

    def converged(t: Topology) -> bool:
        return all(t.one(Name=n) for n in expected) and all(t.one(Name=ns) for ns in spaces)

    wait_topology(pair.port, "all the links and namespaces", converged, timeout=20)

    def problems(t: Topology) -> list[str]:
        bad = []
        for n in t.nodes:
            parents = t.parents(n["ID"], "ownership")
            kind = n["Metadata"]["Type"]
            if kind == "host":
                if parents:
                    bad.append(f"host {n['ID']} has owners")
            elif len(parents) != 1:
                bad.append(f"{n['Metadata']['Name']} ({kind}) has {len(parents)} owners")
            elif kind == "netns" and parents[0]["Metadata"]["Type"] != "host":
                bad.append(f"netns {n['Metadata']['Name']} owned by a {kind}")
            elif kind not in HOST_TYPES and parents[0]["Metadata"]["Type"] not in HOST_TYPES:
                bad.append(f"{n['Metadata']['Name']} owned by a {parents[0]['Metadata']['Type']}")
        return bad

    for port in (pair.port, pair.agent.agent_port):
        topo = wait_topology(port, "one owner per node", lambda t: not problems(t), timeout=10)
        for name, owner in expected.items():
            node = topo.one(Name=name)
            assert node is not None, name
            (parent,) = topo.parents(node["ID"], "ownership")
            assert parent["ID"] == owner or parent["Metadata"]["Name"] == owner, name
        # Exactly one host node of this agent, and no duplicate IDs.
        assert len(topo.find(Type="host", Name=pair.agent.host_id)) == 1
        assert len(topo.by_id) == len(topo.nodes)


def test_interface_metrics_are_polled(cluster: Cluster, kernel: Kernel) -> None:
    pair = start_pair(cluster, extra={"SKYDIVE_AGENT_TOPOLOGY_NETLINK_METRICS_UPDATE": "1"})
    ns1, ns2 = kernel.add_netns(), kernel.add_netns()
    a, b = uid(), uid()
    sh(f"ip -n {ns1} link add {a} type veth peer name {b} netns {ns2}")
    sh(f"ip -n {ns1} addr add 10.233.0.1/24 dev {a}")
    sh(f"ip -n {ns2} addr add 10.233.0.2/24 dev {b}")
    sh(f"ip -n {ns1} link set {a} up")
    sh(f"ip -n {ns2} link set {b} up")
    wait_node(pair.port, Name=a)
    wait_node(pair.port, Name=b)

    # No ping on the machine: a few UDP datagrams do the same (ARP both ways, then the UDP
    # packets and the ICMP port-unreachable replies).
    send = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "[s.sendto(b'skydive', ('10.233.0.2', 9)) for _ in range(5)]"
    )
    sh(f'ip netns exec {ns1} python3 -c "{send}"')

    def metadata(name: str) -> dict[str, Any]:
        node = topology(pair.port).one(Name=name)
        return node["Metadata"] if node else {}

    def metric(name: str, more_than: int = 0) -> dict[str, Any] | None:
        m = metadata(name).get("Metric")
        return m if m and m.get("RxPackets", 0) > 0 and m.get("TxPackets", 0) > more_than else None

    first = {}
    for name in (a, b):
        m = wait_for(f"Rx and Tx packets on {name}", functools.partial(metric, name), timeout=15)
        assert m["TxBytes"] > 0 and m["RxBytes"] > 0
        assert isinstance(m["Start"], int) and isinstance(m["Last"], int)
        assert m["Last"] >= m["Start"] > 0
        first[name] = m

    # More traffic: the totals grow and LastUpdateMetric gives the last period's share.
    sh(f'ip netns exec {ns1} python3 -c "{send}"')
    m = wait_for(
        f"{a}'s Tx counter to grow",
        functools.partial(metric, a, first[a]["TxPackets"]),
        timeout=15,
    )
    assert m["Start"] == first[a]["Start"]
    assert m["Last"] > first[a]["Last"]

    def delta() -> dict[str, Any] | None:
        md = metadata(a)
        last = md.get("LastUpdateMetric")
        return md if last and last.get("TxPackets", 0) > 0 else None

    md = wait_for(f"{a}'s LastUpdateMetric", delta)
    last, total = md["LastUpdateMetric"], md["Metric"]
    assert last["Last"] == total["Last"]
    assert total["Start"] <= last["Start"] < last["Last"]
    assert 0 < last["TxPackets"] <= total["TxPackets"] - first[a]["TxPackets"]


def test_agent_survives_many_namespaces(pair: Pair, kernel: Kernel) -> None:
    """Each namespace gets a netlink socket opened inside it; the agent must keep running."""
    spaces = []
    for _ in range(8):  # one at a time, as they come and go on a real host
        spaces.append(kernel.add_netns())
        wait_node(pair.port, Name=spaces[-1], Type="netns")
        assert pair.agent.proc is not None and pair.agent.proc.poll() is None, "agent exited"
    topo = topology(pair.port)
    assert all(topo.one(Name=ns, Type="netns") for ns in spaces)
    for ns in spaces:
        sh(f"ip netns del {ns}")
    wait_topology(
        pair.port,
        "the namespaces to leave",
        lambda t: not any(t.find(Name=ns) for ns in spaces),
    )
    assert pair.agent.proc is not None and pair.agent.proc.poll() is None, "agent exited"
    assert pair.agent.host_id in topology(pair.port).by_id


def churn(kernel: Kernel, bridge: str, count: int) -> list[str]:
    """Create ``count`` namespaces, each with a veth into ``bridge``, then delete them all."""
    spaces = [kernel.add_netns() for _ in range(count)]
    for ns in spaces:
        out = uid()
        sh(f"ip link add {out} type veth peer name eth0 netns {ns}")
        sh(f"ip link set {out} master {bridge}")
    for ns in spaces:
        sh(f"ip netns del {ns}")
    return spaces


def test_namespace_churn_leaves_exactly_what_exists(pair: Pair, kernel: Kernel) -> None:
    br = kernel.link_name()
    sh(f"ip link add {br} type bridge")
    keep = kernel.add_netns()
    sh(f"ip link add {kernel.link_name()} type veth peer name eth0 netns {keep}")
    wait_node(pair.port, Name=keep, Type="netns")
    gone: list[str] = []
    for _ in range(3):
        gone += churn(kernel, br, 10)

    # The kernel destroys a deleted namespace (and the veth ends) asynchronously.
    wait_for(
        f"the kernel to drop every port of {br}",
        lambda: not sh(f"ip -br link show master {br}").stdout.strip(),
        timeout=30,
    )

    def settled(t: Topology) -> bool:
        bridge = t.one(Name=br)
        return (
            bridge is not None
            and not any(e["Parent"] == bridge["ID"] for e in t.edges)
            and not any(t.find(Name=ns) for ns in gone)
            and bool(t.one(Name=keep))
        )

    topo = wait_topology(pair.port, "the churned objects to leave", settled, timeout=30)
    assert pair.agent.proc is not None and pair.agent.proc.poll() is None, "agent exited"
    # Nothing stale: no edge dangles, no ID repeats, the kept namespace is whole.
    assert all(e["Parent"] in topo.by_id and e["Child"] in topo.by_id for e in topo.edges)
    assert len(topo.by_id) == len(topo.nodes)
    netns = topo.one(Name=keep)
    assert netns is not None
    inside = [n for n in topo.nodes if owners(topo, n["ID"]) == [netns["ID"]]]
    assert sorted(n["Metadata"]["Name"] for n in inside) == ["eth0", "lo"]
    wait_for(
        "the analyzer to mirror the agent",
        lambda: (
            {n["ID"] for n in topology(pair.port).nodes}
            == {n["ID"] for n in topology(pair.agent.agent_port).nodes}
        ),
    )


@pytest.mark.slow
def test_agent_starts_while_namespaces_churn(cluster: Cluster, kernel: Kernel) -> None:
    prefix = uid("sktc")  # namespaces {prefix}0..9, made and removed by a shell loop
    names = [f"{prefix}{i}" for i in range(10)]
    kernel.netns.extend(names)  # removed at teardown whatever happens
    loop = subprocess.Popen(
        [
            "bash",
            "-c",
            f"for round in $(seq 15); do for n in {' '.join(names)}; do ip netns add $n; "
            "ip link add v$n type veth peer name eth0 netns $n; done; "
            f"for n in {' '.join(names)}; do ip netns del $n; done; done",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        pair = start_pair(cluster)
    finally:
        loop.wait(timeout=120)
    keep = kernel.add_netns()
    wait_node(pair.port, Name=keep, Type="netns", timeout=30)
    wait_topology(
        pair.port,
        "no trace of the churned namespaces",
        lambda t: (
            not any(n["Metadata"]["Name"].startswith(prefix) for n in t.nodes)
            and not any(n["Metadata"]["Name"].startswith(f"v{prefix}") for n in t.nodes)
        ),
        timeout=30,
    )
    assert pair.agent.proc is not None and pair.agent.proc.poll() is None, "agent exited"
    wait_for(
        "the analyzer to mirror the agent",
        lambda: (
            {n["ID"] for n in topology(pair.port).nodes}
            == {n["ID"] for n in topology(pair.agent.agent_port).nodes}
        ),
    )
