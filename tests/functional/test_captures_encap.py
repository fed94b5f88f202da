"""Captures of encapsulated traffic, end to end: VLAN tags added by Open vSwitch (this kernel
has no 8021q module; OVS's userspace datapath tags in software) and a kernel VXLAN tunnel
between two namespaces, whose inner flow carries its outer flow's UUID as ParentUUID.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cluster, Kernel, PrivateOvs, sh, start_pair, uid, wait_node
from test_captures import create_capture, wait_active, wait_flows

pytestmark = pytest.mark.slow

TRAFFIC = str(Path(__file__).with_name("traffic.py"))


def run(ns: str, *args: object) -> None:
    cmd = ["ip", "netns", "exec", ns, sys.executable, TRAFFIC, *map(str, args)]
    subprocess.run(cmd, check=True, timeout=60)


def mac_of(ns: str, dev: str) -> str:
    return sh(f"ip -n {ns} -br link show {dev}").stdout.split()[2]


def test_vlan_tag_from_ovs_shows_in_the_flow(
    cluster: Cluster, kernel: Kernel, ovs: PrivateOvs
) -> None:
    subnet = f"10.79.{secrets.randbelow(200) + 20}"
    bridge = uid("sko")
    ovs.vsctl(f"add-br {bridge} -- set bridge {bridge} datapath_type=netdev")
    ends = []
    for i in (1, 2):
        ns = kernel.add_netns()
        host, inner = kernel.link_name(), uid("skv")
        sh(f"ip link add {host} type veth peer name {inner} netns {ns}")
        sh(f"ip link set {host} up && ip -n {ns} link set {inner} up")
        sh(f"ip -n {ns} addr add {subnet}.{i}/24 dev {inner}")
        for cmd in (f"ethtool -K {host} tx off", f"ip netns exec {ns} ethtool -K {inner} tx off"):
            sh(cmd)
        tag = " tag=10" if i == 1 else ""  # ns1's port is an access port, ns2's a trunk
        ovs.vsctl(f"add-port {bridge} {host}" + (f" -- set port {host}{tag}" if tag else ""))
        ends.append((ns, inner))
    (ns1, dev1), (ns2, dev2) = ends
    # ns2 has no VLAN device: give ns1 its MAC so the datagrams go out without ARP
    sh(f"ip -n {ns1} neigh add {subnet}.2 lladdr {mac_of(ns2, dev2)} dev {dev1}")

    port = start_pair(cluster, extra={"SKYDIVE_FLOW_UPDATE": "1"}).port
    wait_node(port, Name=dev1)
    wait_node(port, Name=dev2)
    cid = create_capture(
        port, GremlinQuery=f"G.V().Has('Name', Within('{dev1}', '{dev2}'))", BPFFilter=""
    )["UUID"]
    wait_active(port, dev1, cid)
    wait_active(port, dev2, cid)
    run(ns1, "udp-send", f"{subnet}.2", 6000, 4)

    flows = wait_flows(
        port,
        "G.Flows().Has('Transport', 6000)",
        lambda fs: len(fs) == 2 and all(f["Metric"]["ABPackets"] == 4 for f in fs),
    )
    by_path = {f["LayersPath"]: f for f in flows}
    assert sorted(by_path) == ["Ethernet/Dot1Q/IPv4/UDP", "Ethernet/IPv4/UDP"]
    assert by_path["Ethernet/Dot1Q/IPv4/UDP"]["Link"]["ID"] == 10
    assert by_path["Ethernet/IPv4/UDP"]["Link"]["ID"] == 0
    # the same flow before and after tagging: one TrackingID
    assert (
        by_path["Ethernet/Dot1Q/IPv4/UDP"]["TrackingID"]
        == (by_path["Ethernet/IPv4/UDP"]["TrackingID"])
    )


def test_vxlan_inner_flow_has_the_outer_flow_as_parent(cluster: Cluster, kernel: Kernel) -> None:
    n = secrets.randbelow(200) + 20
    under, over = f"10.80.{n}", f"192.168.{n}"
    ns1, ns2 = kernel.add_netns(), kernel.add_netns()
    u1, u2 = uid("sku"), uid("sku")
    sh(f"ip -n {ns1} link add {u1} type veth peer name {u2} netns {ns2}")
    vx = {}
    for i, (ns, dev) in enumerate(((ns1, u1), (ns2, u2)), start=1):
        other = 2 if i == 1 else 1
        vx[i] = uid("skx")
        sh(f"ip -n {ns} addr add {under}.{i}/24 dev {dev} && ip -n {ns} link set {dev} up")
        sh(
            f"ip -n {ns} link add {vx[i]} type vxlan id 42 remote {under}.{other} "
            f"local {under}.{i} dstport 4789 dev {dev}"
        )
        sh(f"ip -n {ns} addr add {over}.{i}/24 dev {vx[i]} && ip -n {ns} link set {vx[i]} up")

    port = start_pair(cluster, extra={"SKYDIVE_FLOW_UPDATE": "1"}).port
    wait_node(port, Name=u1)
    wait_node(port, Name=vx[1])
    cid = create_capture(port, GremlinQuery=f"G.V().Has('Name', Within('{u1}', '{vx[1]}'))")["UUID"]
    wait_active(port, u1, cid)
    wait_active(port, vx[1], cid)
    run(ns1, "icmp", f"{over}.2", 3)

    inner = wait_flows(
        port,
        f"G.Flows().Has('Network.A', '{over}.1', 'LayersPath', 'Ethernet/IPv4/ICMPv4')",
        lambda fs: len(fs) == 2 and all(f["Metric"]["BAPackets"] == 3 for f in fs),
    )
    tunnelled = [f for f in inner if f.get("ParentUUID")]
    plain = [f for f in inner if not f.get("ParentUUID")]
    assert len(tunnelled) == 1 and len(plain) == 1
    outer = wait_flows(
        port,
        f"G.Flows().Has('UUID', '{tunnelled[0]['ParentUUID']}')",
        lambda fs: len(fs) == 1,
    )[0]
    assert outer["LayersPath"] == "Ethernet/IPv4/UDP/VXLAN"
    assert outer["Network"]["ID"] == 42
    assert {outer["Network"]["A"], outer["Network"]["B"]} == {f"{under}.1", f"{under}.2"}
    # the same ICMP conversation inside the tunnel and on the VXLAN device: one L3TrackingID
    assert tunnelled[0]["L3TrackingID"] == plain[0]["L3TrackingID"]
    assert (tunnelled[0]["Metric"]["ABPackets"], tunnelled[0]["Metric"]["BAPackets"]) == (3, 3)
