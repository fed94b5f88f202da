"""ethtool metadata through real skydive processes: real veth pairs, bridges and taps, in the
root namespace and in network namespaces, checked on the analyzer's GET /api/topology."""

from __future__ import annotations

from typing import Any

import httpx
from conftest import Kernel, Pair, Topology, sh, uid, wait_topology


def add_link(kernel: Kernel) -> str:
    name = uid("ske")
    kernel.links.append(name)
    return name


def add_netns(kernel: Kernel) -> str:
    name = uid("skens")
    kernel.netns.append(name)
    sh(f"ip netns add {name}")
    return name


def node_in(topo: Topology, name: str, owner: str | None = None) -> dict[str, Any] | None:
    """The node called ``name`` owned by the netns ``owner`` (or by anything, if None)."""
    for node in topo.find(Name=name):
        owners = [p["Metadata"].get("Name") for p in topo.parents(node["ID"], "ownership")]
        if owner is None or owners == [owner]:
            return node
    return None


def wait_md(port: int, name: str, what: str, pred: Any, owner: str | None = None) -> dict[str, Any]:
    """Wait until the node ``name`` (in ``owner``) has metadata satisfying ``pred``."""

    def ok(topo: Topology) -> bool:
        node = node_in(topo, name, owner)
        return node is not None and bool(pred(node["Metadata"]))

    topo = wait_topology(port, f"{name}: {what}", ok, timeout=20)
    node = node_in(topo, name, owner)
    assert node is not None
    return node["Metadata"]  # type: ignore[no-any-return]


def test_veth_in_a_namespace_gets_driver_features_speed_and_peer(
    pair: Pair, kernel: Kernel
) -> None:
    ns = add_netns(kernel)
    a, b = uid("ske"), uid("ske")
    sh(f"ip -n {ns} link add {a} type veth peer name {b}")
    sh(f"ip -n {ns} link set {a} up")
    sh(f"ip -n {ns} link set {b} up")

    md = wait_md(pair.port, a, "ethtool metadata", lambda m: "Features" in m, owner=ns)
    peer = wait_md(pair.port, b, "ethtool metadata", lambda m: "Features" in m, owner=ns)
    assert md["Driver"] == "veth"
    assert md["Speed"] == 10000 and md["Duplex"] == "full"
    assert md["Features"]["tx-checksum-ip-generic"] is True
    assert isinstance(md["Features"]["highdma"], bool)
    assert md["PeerIfIndex"] == peer["IfIndex"]
    assert md["EthtoolStats"]["peer_ifindex"] == peer["IfIndex"]

    # Dotted keys reach into the feature map.
    query = f"G.V().Has('Name', '{a}').Values('Features.tx-checksum-ip-generic')"
    r = httpx.post(
        f"http://127.0.0.1:{pair.port}/api/topology", json={"GremlinQuery": query}, timeout=5
    )
    assert r.status_code == 200, r.text
    assert r.json() == [True]


def test_bridge_and_tap_drivers(pair: Pair, kernel: Kernel) -> None:
    bridge, tap = add_link(kernel), add_link(kernel)
    sh(f"ip link add {bridge} type bridge")
    sh(f"ip tuntap add {tap} mode tap")
    md = wait_md(pair.port, bridge, "Driver", lambda m: "Driver" in m)
    assert md["Driver"] == "bridge"
    assert "Features" in md
    md = wait_md(pair.port, tap, "Driver", lambda m: "Driver" in m)
    assert md["Driver"] == "tun"
    assert md["BusInfo"] == "tap"


def test_feature_changes_show_after_a_state_change_or_a_rename(pair: Pair, kernel: Kernel) -> None:
    a = add_link(kernel)
    sh(f"ip link add {a} type veth peer name {a}p")
    sh(f"ip link set {a} up")
    key = "tx-checksum-ip-generic"
    wait_md(pair.port, a, "tx checksumming on", lambda m: m.get("Features", {}).get(key) is True)

    sh(f"ethtool -K {a} tx off")
    sh(f"ip link set {a} down")
    wait_md(pair.port, a, "tx checksumming off", lambda m: m.get("Features", {}).get(key) is False)

    sh(f"ethtool -K {a} tx on")  # no name or state change: not asked yet
    renamed = add_link(kernel)
    sh(f"ip link set {a} name {renamed}")
    md = wait_md(pair.port, renamed, "tx on again", lambda m: m.get("Features", {}).get(key))
    assert md["State"] == "DOWN"


def test_the_same_name_in_two_namespaces_is_asked_in_each(pair: Pair, kernel: Kernel) -> None:
    ns1, ns2 = add_netns(kernel), add_netns(kernel)
    name = uid("ske")
    sh(f"ip -n {ns1} link add {name} type veth peer name {name}p")
    sh(f"ip -n {ns2} link add {name} type bridge")
    sh(f"ip netns exec {ns2} ethtool -K {name} tx off")
    sh(f"ip -n {ns2} link set {name} up")

    in1 = wait_md(pair.port, name, f"Driver in {ns1}", lambda m: "Driver" in m, owner=ns1)
    # first asked when the bridge appears (tx still on), again when it goes up (tx off)
    in2 = wait_md(
        pair.port,
        name,
        f"Driver and tx off in {ns2}",
        lambda m: "Driver" in m and m.get("Features", {}).get("tx-checksum-ip-generic") is False,
        owner=ns2,
    )
    assert in1["Driver"] == "veth"
    assert in2["Driver"] == "bridge"
    assert in1["Features"]["tx-checksum-ip-generic"] is True
    assert in2["Features"]["tx-checksum-ip-generic"] is False
