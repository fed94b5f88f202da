"""Capture probes against real kernel objects: ``ovssflow`` on a private Open vSwitch (userspace
datapath) and ``pcap`` on a veth inside a network namespace.

Most tests run a probe in the test's own event loop (no agent process): the test builds the
:class:`CaptureEnv` the agent would, starts a capture, makes traffic, and checks the flows that
reach the sink. The last one goes through a real analyzer and agent (capture created with the
REST API, flows read back with Gremlin). Every namespace, veth and bridge is named ``sks…`` and
removed at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    Cluster,
    PrivateOvs,
    free_port,
    sh,
    start_pair,
    topology,
    uid,
    wait_for,
    wait_node,
)
from test_captures import create_capture, wait_flows

from pyskydive.api.pcap import PcapIngest
from pyskydive.config import Config
from pyskydive.graph import Graph
from pyskydive.probes.flow.base import CaptureEnv, CaptureSpec, CaptureTarget, PortPool
from pyskydive.probes.flow.ovssflow import OvsSflowCapture
from pyskydive.probes.flow.pcap import PcapCapture
from pyskydive.probes.topology.nsutil import NetnsRunner

pytestmark = pytest.mark.functional

NODE_ID = "sks-node"
TRAFFIC = str(Path(__file__).with_name("traffic.py"))
FRAMES = Path(__file__).parents[1] / "data" / "packets" / "frames.pcap"
SFLOW_BIN = Path(__file__).parents[3] / "shared" / "reference" / "sflow-ovs" / "sflow_samples.bin"


class Sink:
    def __init__(self) -> None:
        self.flows: dict[str, dict[str, Any]] = {}

    def __call__(self, flows: list[dict[str, Any]]) -> None:
        for f in flows:
            self.flows[f["UUID"]] = f

    def with_network(self, a: str, b: str, layers_end: str) -> list[dict[str, Any]]:
        return [
            f
            for f in list(self.flows.values())
            if f["LayersPath"].endswith(layers_end)
            and {f.get("Network", {}).get("A"), f.get("Network", {}).get("B")} == {a, b}
        ]


@dataclass
class Netns:
    """Namespaces and links of one test; ``ip netns del`` takes the veths with them."""

    names: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def add(self) -> str:
        name = uid("sksns")
        sh(f"ip netns add {name}")
        self.names.append(name)
        return name

    def link(self) -> str:
        name = uid("sks")
        self.links.append(name)
        return name

    def cleanup(self) -> None:
        for link in self.links:
            sh(f"ip link del {link}", check=False)
        for name in self.names:
            sh(f"ip netns del {name}", check=False)


@pytest.fixture
def netns() -> Iterator[Netns]:
    n = Netns()
    try:
        yield n
    finally:
        n.cleanup()


def make_env(loop: asyncio.AbstractEventLoop, **config: Any) -> CaptureEnv:
    graph = Graph("sks-host")
    graph.add_node(NODE_ID, {"Name": "sks", "TID": "sks-tid"}, origin="test")
    low = free_port()
    return CaptureEnv(
        config=Config(flow={"update": 1}, **config),
        graph=graph,
        runner=NetnsRunner(),
        loop=loop,
        sflow_ports=PortPool(low, low),
        pcapsocket_ports=PortPool(8100, 8132),
    )


def run(scenario: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await scenario(asyncio.get_running_loop())

    asyncio.run(main())


async def wait_until(what: str, cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def shell(cmd: str) -> str:
    return (await asyncio.get_running_loop().run_in_executor(None, sh, cmd)).stdout


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _icmp_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


def _await_reply(sock: socket.socket, ident: int, seq: int) -> None:
    sock.settimeout(3)
    while True:
        data = sock.recv(2048)
        ihl = (data[0] & 0x0F) * 4
        kind, _code, _sum, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
        if kind == 0 and (rid, rseq) == (ident, seq):
            return


async def ping(env: CaptureEnv, ns: str, dst: str, count: int, ident: int = 0x5A5A) -> None:
    """``count`` echo requests from namespace ``ns``, each answered (no ``ping`` binary here)."""
    sock = await env.runner.run(f"/var/run/netns/{ns}", _icmp_socket)
    loop = asyncio.get_running_loop()
    try:
        for seq in range(count):
            payload = b"sks-ping" * 7
            csum = _checksum(struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload)
            sock.sendto(struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload, (dst, 0))
            await loop.run_in_executor(None, _await_reply, sock, ident, seq)
            await asyncio.sleep(0.1)
    finally:
        sock.close()


def packets(flow: dict[str, Any]) -> tuple[int, int]:
    return flow["Metric"]["ABPackets"], flow["Metric"]["BAPackets"]


# -- ovssflow ---------------------------------------------------------------------------


@pytest.fixture
def bridge(ovs_instance: PrivateOvs) -> Iterator[str]:
    name = uid("sksbr")
    ovs_instance.vsctl(f"add-br {name} -- set bridge {name} datapath_type=netdev")
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            ovs_instance.vsctl(f"--if-exists del-br {name}")


def plug(ovs: PrivateOvs, netns: Netns, br: str, address: str) -> str:
    """A namespace with a veth into ``br``, transmit checksum offload off (DESIGN.md §4)."""
    ns = netns.add()
    outer, inner = netns.link(), netns.link()
    sh(f"ip link add {outer} type veth peer name {inner} netns {ns}")
    sh(f"ip link set {outer} up")
    sh(f"ethtool -K {outer} tx off")
    sh(f"ip -n {ns} link set {inner} up && ip -n {ns} link set lo up")
    sh(f"ip -n {ns} addr add {address}/24 dev {inner}")
    sh(f"ip netns exec {ns} ethtool -K {inner} tx off")
    ovs.vsctl(f"add-port {br} {outer}")
    return ns


def test_ovssflow_sees_every_ping_and_cleans_ovs_up(
    ovs_instance: PrivateOvs, bridge: str, netns: Netns
) -> None:
    ns_a = plug(ovs_instance, netns, bridge, "10.231.7.1")
    plug(ovs_instance, netns, bridge, "10.231.7.2")
    bridge_uuid = ovs_instance.vsctl(f"get bridge {bridge} _uuid").strip()
    sink = Sink()
    capture_id = uid("sks-capture-")

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, ovs={"ovsdb": ovs_instance.remote})
        target = CaptureTarget(
            node_id=NODE_ID,
            tid="sks-tid",
            name=bridge,
            type="ovsbridge",
            metadata={"UUID": bridge_uuid, "Name": bridge, "Type": "ovsbridge"},
        )
        spec = CaptureSpec(id=capture_id, type="ovssflow", sampling_rate=1, polling_interval=1)
        capture = OvsSflowCapture(spec, target, env, sink)
        await capture.start()
        try:
            row = await shell(
                f"ovs-vsctl --db={ovs_instance.remote} --columns=targets,sampling,external_ids "
                f"find sflow external_ids:skydive-capture-id={capture_id}"
            )
            assert capture.address in row and "sampling" in row
            await ping(env, ns_a, "10.231.7.2", 5)

            def five_each_way() -> bool:
                capture.flush()
                icmp = sink.with_network("10.231.7.1", "10.231.7.2", "ICMPv4")
                return sum(sum(packets(f)) for f in icmp) == 10

            await wait_until("10 ICMP packets in the flows", five_each_way)
            await wait_until("the bridge's counters on the node", lambda: _has_sflow(env))
        finally:
            await capture.stop()
        node = env.graph.get_node(NODE_ID)
        assert node is not None and "SFlow" not in node.metadata
        env.runner.close()

    run(scenario)
    icmp = sink.with_network("10.231.7.1", "10.231.7.2", "ICMPv4")
    assert [packets(f) for f in icmp] == [(5, 5)]
    assert icmp[0]["Network"]["A"] == "10.231.7.1"  # the first packet's source
    assert ovs_instance.vsctl(f"get bridge {bridge} sflow").strip() == "[]"
    left = ovs_instance.vsctl(f"find sflow external_ids:skydive-capture-id={capture_id}")
    assert left.strip() == ""


def _has_sflow(env: CaptureEnv) -> bool:
    node = env.graph.get_node(NODE_ID)
    return node is not None and bool(node.metadata.get("SFlow", {}).get("IfMetrics"))


def test_ovssflow_on_a_missing_bridge_is_a_probe_error(ovs_instance: PrivateOvs) -> None:
    from pyskydive.errors import ProbeError

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, ovs={"ovsdb": ovs_instance.remote})
        target = CaptureTarget(
            node_id=NODE_ID,
            tid="sks-tid",
            name="sksgone",
            type="ovsbridge",
            metadata={"UUID": "0d1a7c6e-0000-4000-8000-000000000000"},
        )
        capture = OvsSflowCapture(CaptureSpec(id="sks", type="ovssflow"), target, env, Sink())
        with pytest.raises(ProbeError, match="not in OVSDB"):
            await capture.start()
        assert env.sflow_ports.take() == [env.sflow_ports.low]  # the collector closed again
        env.runner.close()

    run(scenario)
    assert ovs_instance.vsctl("find sflow external_ids:skydive-capture-id=sks").strip() == ""


# -- pcap -------------------------------------------------------------------------------


@dataclass
class VethPair:
    ns_cap: str  # the namespace where the capture runs
    ns_peer: str
    if_cap: str
    addr_cap: str = "10.232.9.1"
    addr_peer: str = "10.232.9.2"


@pytest.fixture
def veth(netns: Netns) -> VethPair:
    ns1, ns2 = netns.add(), netns.add()
    a, b = uid("sks"), uid("sks")
    sh(f"ip link add {a} netns {ns1} type veth peer name {b} netns {ns2}")
    pair = VethPair(ns1, ns2, a)
    for ns, dev, addr in ((ns1, a, pair.addr_cap), (ns2, b, pair.addr_peer)):
        sh(f"ip -n {ns} link set {dev} up && ip -n {ns} addr add {addr}/24 dev {dev}")
    return pair


def _udp_socket(port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    return s


def pcap_target(pair: VethPair) -> CaptureTarget:
    return CaptureTarget(
        node_id=NODE_ID,
        tid="sks-tid",
        name=pair.if_cap,
        type="veth",
        if_index=2,
        netns=f"/var/run/netns/{pair.ns_cap}",
    )


async def send_udp(env: CaptureEnv, pair: VethPair, count: int, port: int = 9999) -> None:
    rx = await env.runner.run(f"/var/run/netns/{pair.ns_cap}", lambda: _udp_socket(port))
    tx = await env.runner.run(f"/var/run/netns/{pair.ns_peer}", _udp_socket)
    try:
        for i in range(count):
            tx.sendto(b"sks%d" % i, (pair.addr_cap, port))
        rx.settimeout(5)
        for _ in range(count):
            await asyncio.get_running_loop().run_in_executor(None, rx.recv, 100)
    finally:
        rx.close()
        tx.close()


def test_pcap_in_a_namespace_counts_every_udp_datagram(veth: VethPair) -> None:
    sink = Sink()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop)
        capture = PcapCapture(CaptureSpec(id="sks-pcap", type="pcap"), pcap_target(veth), env, sink)
        await capture.start()
        try:
            await asyncio.sleep(0.3)  # the first poll is armed
            await send_udp(env, veth, 20)
            await asyncio.sleep(0.5)
        finally:
            await capture.stop()
        env.runner.close()

    run(scenario)
    udp = sink.with_network(veth.addr_peer, veth.addr_cap, "UDP")
    assert [packets(f) for f in udp] == [(20, 0)]
    assert udp[0]["Transport"]["B"] == 9999
    assert udp[0]["Metric"]["ABBytes"] == 20 * (14 + 20 + 8) + sum(
        len(b"sks%d" % i) for i in range(20)
    )


def test_pcap_honours_the_bpf_filter(veth: VethPair) -> None:
    sink = Sink()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop)
        spec = CaptureSpec(id="sks-pcap", type="pcap", bpf_filter="icmp")
        capture = PcapCapture(spec, pcap_target(veth), env, sink)
        await capture.start()
        try:
            await asyncio.sleep(0.3)
            await send_udp(env, veth, 10)
            await ping(env, veth.ns_peer, veth.addr_cap, 3)
            await asyncio.sleep(0.5)
        finally:
            await capture.stop()
        env.runner.close()

    run(scenario)
    assert sink.with_network(veth.addr_peer, veth.addr_cap, "UDP") == []
    icmp = sink.with_network(veth.addr_peer, veth.addr_cap, "ICMPv4")
    assert [packets(f) for f in icmp] == [(3, 3)]
    assert all(f["LayersPath"].endswith("ICMPv4") for f in sink.flows.values())


def test_pcap_reports_an_interface_that_goes_away(veth: VethPair) -> None:
    sink = Sink()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop)
        capture = PcapCapture(CaptureSpec(id="sks-pcap", type="pcap"), pcap_target(veth), env, sink)
        await capture.start()
        try:
            await asyncio.sleep(0.3)
            await send_udp(env, veth, 4)
            await wait_until("the UDP flow", lambda: udp_packets(sink, veth) == [(4, 0)])
            await shell(f"ip -n {veth.ns_cap} link del {veth.if_cap}")
            await wait_until("the capture's error", lambda: bool(capture.error))
        finally:
            await capture.stop()
        env.runner.close()

    run(scenario)
    assert udp_packets(sink, veth) == [(4, 0)]


def udp_packets(sink: Sink, veth: VethPair) -> list[tuple[int, int]]:
    return [packets(f) for f in sink.with_network(veth.addr_peer, veth.addr_cap, "UDP")]


def test_pcap_start_errors_are_one_line() -> None:
    from pyskydive.errors import ProbeError

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop)
        cases = [
            (CaptureTarget(NODE_ID, "t", "sksnothere0", "veth", 5), "", "No such device"),
            (CaptureTarget(NODE_ID, "t", "lo", "device", 1), "udp port (", "invalid BPF filter"),
            (
                CaptureTarget(NODE_ID, "t", "lo", "device", 1, netns="/var/run/netns/sksgone"),
                "",
                "No such file",
            ),
        ]
        for target, bpf, reason in cases:
            spec = CaptureSpec(id="sks", type="pcap", bpf_filter=bpf)
            capture = PcapCapture(spec, target, env, Sink())
            with pytest.raises(ProbeError, match=reason) as err:
                await capture.start()
            assert "\n" not in str(err.value)
            await capture.stop()
        env.runner.close()

    run(scenario)


# -- end to end: an agent and an analyzer -----------------------------------------------------


@pytest.mark.slow
def test_ovssflow_capture_through_the_api(
    cluster: Cluster, ovs_instance: PrivateOvs, bridge: str, netns: Netns
) -> None:
    ns_a = plug(ovs_instance, netns, bridge, "10.231.8.1")
    plug(ovs_instance, netns, bridge, "10.231.8.2")
    low = free_port()
    port = start_pair(
        cluster,
        extra={
            "SKYDIVE_AGENT_TOPOLOGY_PROBES": "netlink,netns,ovsdb",
            "SKYDIVE_OVS_OVSDB": ovs_instance.remote,
            "SKYDIVE_FLOW_UPDATE": "1",
            "SKYDIVE_AGENT_FLOW_SFLOW_PORT_MIN": str(low),
            "SKYDIVE_AGENT_FLOW_SFLOW_PORT_MAX": str(low),
        },
    ).port
    wait_node(port, Name=bridge, Type="ovsbridge")
    cid = create_capture(
        port,
        GremlinQuery=f"G.V().Has('Name', '{bridge}', 'Type', 'ovsbridge')",
        Type="ovssflow",
        SamplingRate=1,
        PollingInterval=1,
    )["UUID"]

    def entry() -> dict[str, Any] | None:
        node = topology(port).one(Name=bridge, Type="ovsbridge")
        for c in (node or {}).get("Metadata", {}).get("Captures", []):
            if c["ID"] == cid and c["State"] == "active":
                return dict(c)
        return None

    active = wait_for("the ovssflow capture active on the bridge", entry, timeout=20)
    assert active["Type"] == "ovssflow"
    assert active["SFlowSocket"] == f"127.0.0.1:{low}"
    assert ovs_instance.vsctl(f"get bridge {bridge} sflow").strip() != "[]"
    subprocess.run(
        ["ip", "netns", "exec", ns_a, sys.executable, TRAFFIC, "icmp", "10.231.8.2", "5"],
        check=True,
        timeout=60,
    )

    def ten_packets(flows: list[dict[str, Any]]) -> bool:
        icmp = [
            f
            for f in flows
            if f["LayersPath"] == "Ethernet/IPv4/ICMPv4"
            and {f["Network"]["A"], f["Network"]["B"]} == {"10.231.8.1", "10.231.8.2"}
        ]
        return [(f["Metric"]["ABPackets"], f["Metric"]["BAPackets"]) for f in icmp] == [(5, 5)]

    wait_flows(port, "G.Flows()", ten_packets)
    wait_for(
        "sFlow counters on the bridge node",
        lambda: (
            (topology(port).one(Name=bridge, Type="ovsbridge") or {})
            .get("Metadata", {})
            .get("SFlow")
        ),
        timeout=20,
    )
    assert httpx.delete(f"http://127.0.0.1:{port}/api/capture/{cid}", timeout=10).is_success
    wait_for(
        "the bridge's sflow cleared",
        lambda: ovs_instance.vsctl(f"get bridge {bridge} sflow").strip() == "[]",
        timeout=20,
    )
    assert ovs_instance.vsctl(f"find sflow external_ids:skydive-capture-id={cid}").strip() == ""


@pytest.mark.slow
def test_pcapsocket_capture_through_the_api(cluster: Cluster) -> None:
    low = free_port()
    pair = start_pair(
        cluster,
        extra={
            "SKYDIVE_FLOW_UPDATE": "1",
            "SKYDIVE_AGENT_FLOW_PCAPSOCKET_MIN_PORT": str(low),
            "SKYDIVE_AGENT_FLOW_PCAPSOCKET_MAX_PORT": str(low),
        },
    )
    port, host = pair.port, pair.agent.host_id
    cid = create_capture(
        port, GremlinQuery=f"G.V().Has('Name', '{host}', 'Type', 'host')", Type="pcapsocket"
    )["UUID"]

    def entry() -> dict[str, Any] | None:
        node = topology(port).one(Name=host, Type="host")
        for c in (node or {}).get("Metadata", {}).get("Captures", []):
            if c["ID"] == cid and c["State"] == "active":
                return dict(c)
        return None

    active = wait_for("the pcapsocket capture active on the host", entry, timeout=20)
    assert active["PCAPSocket"] == f"127.0.0.1:{low}"
    data = FRAMES.read_bytes()
    with socket.create_connection(("127.0.0.1", low), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""
    want = PcapIngest("oracle")
    want.feed(data)
    want.finish()
    n = len(want.flows)
    flows = wait_flows(port, f"G.Flows().Has('CaptureID', '{cid}')", lambda fs: len(fs) == n)

    def total(fs: Iterable[dict[str, Any]]) -> int:
        return sum(f["Metric"]["ABPackets"] + f["Metric"]["BAPackets"] for f in fs)

    assert total(flows) == total(want.flows.values())  # inner (tunnelled) flows count too
    assert {f["NodeTID"] for f in flows} == {topology(port).by_id[host]["Metadata"]["TID"]}


@pytest.mark.slow
@pytest.mark.skipif(not SFLOW_BIN.exists(), reason="reference OVS sFlow datagrams not found")
def test_sflow_capture_through_the_api(cluster: Cluster) -> None:
    low = free_port()
    pair = start_pair(
        cluster,
        extra={
            "SKYDIVE_FLOW_UPDATE": "1",
            "SKYDIVE_AGENT_FLOW_SFLOW_PORT_MIN": str(low),
            "SKYDIVE_AGENT_FLOW_SFLOW_PORT_MAX": str(low),
        },
    )
    port, host = pair.port, pair.agent.host_id
    cid = create_capture(
        port, GremlinQuery=f"G.V().Has('Name', '{host}', 'Type', 'host')", Type="sflow"
    )["UUID"]

    def host_md() -> dict[str, Any]:
        return dict((topology(port).one(Name=host, Type="host") or {}).get("Metadata", {}))

    def active() -> bool:
        return any(c["ID"] == cid and c["State"] == "active" for c in host_md().get("Captures", []))

    wait_for("the sflow capture active on the host", active, timeout=20)
    assert [c["SFlowSocket"] for c in host_md()["Captures"]] == [f"127.0.0.1:{low}"]
    data, datagrams, off = SFLOW_BIN.read_bytes(), [], 0
    while off < len(data):
        (n,) = struct.unpack_from(">I", data, off)
        datagrams.append(data[off + 4 : off + 4 + n])
        off += 4 + n
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i, dg in enumerate(datagrams):
            s.sendto(dg, ("127.0.0.1", low))
            if i % 10 == 9:
                time.sleep(0.05)

    def udp_flow(flows: list[dict[str, Any]]) -> bool:  # sflowtool: 204 samples of 60720 → 9000
        return [f["Metric"]["ABPackets"] for f in flows] == [204]

    wait_flows(port, f"G.Flows().Has('CaptureID', '{cid}', 'Transport.B', 9000)", udp_flow)
    sflow = wait_for("SFlow counters on the host node", lambda: host_md().get("SFlow"), 20)
    assert set(sflow["IfMetrics"]) == {"33", "35", "37"}
