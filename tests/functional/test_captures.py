"""On-demand captures end to end: a real analyzer and agent, a Linux bridge between two
namespaces, traffic from real sockets, flows read back through Gremlin.

The lab: bridge ``sktbr…`` in the root namespace; two namespaces, each with a veth whose host
end is on the bridge (10.77.N.1 and 10.77.N.2). Captures are created with the REST API; the
analyzer tells the agent to start them; the agent ships flows every second (flow.update 1).
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    Cluster,
    Kernel,
    Pair,
    api_up,
    sh,
    start_agent,
    start_pair,
    topology,
    wait_for,
    wait_node,
)

pytestmark = pytest.mark.slow

TRAFFIC = str(Path(__file__).with_name("traffic.py"))


@dataclass
class Lab:
    ns1: str
    ns2: str
    bridge: str
    host1: str  # host end of ns1's veth (on the bridge)
    host2: str
    ip1: str
    ip2: str

    def run(self, ns: str, *args: object) -> None:
        cmd = ["ip", "netns", "exec", ns, sys.executable, TRAFFIC, *map(str, args)]
        subprocess.run(cmd, check=True, timeout=60)

    def background(self, ns: str, *args: object) -> subprocess.Popen[str]:
        cmd = ["ip", "netns", "exec", ns, sys.executable, TRAFFIC, *map(str, args)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    def udp(self, count: int, replies: int, port: int = 5000) -> None:
        echo = self.background(self.ns2, "udp-echo", port, count, replies)
        self.run(self.ns1, "udp-send", self.ip2, port, count)
        echo.communicate(timeout=20)
        assert echo.returncode == 0

    def tcp(self, port: int = 5001) -> None:
        server = self.background(self.ns2, "tcp-serve", port)
        self.run(self.ns1, "tcp-connect", self.ip2, port)
        server.communicate(timeout=20)
        assert server.returncode == 0


def make_lab(kernel: Kernel) -> Lab:
    subnet = f"10.77.{secrets.randbelow(200) + 20}"
    bridge = kernel.link_name()
    sh(f"ip link add {bridge} type bridge && ip link set {bridge} up")
    names = []
    for i in (1, 2):
        ns = kernel.add_netns()
        host = kernel.link_name()
        sh(f"ip link add {host} type veth peer name eth0 netns {ns}")
        sh(f"ip link set {host} master {bridge} up")
        sh(f"ip -n {ns} addr add {subnet}.{i}/24 dev eth0")
        sh(f"ip -n {ns} link set eth0 up && ip -n {ns} link set lo up")
        names.append((ns, host))
    return Lab(
        names[0][0], names[1][0], bridge, names[0][1], names[1][1], f"{subnet}.1", f"{subnet}.2"
    )


def api(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def gremlin(port: int, query: str) -> Any:
    r = httpx.post(f"{api(port)}/topology", json={"GremlinQuery": query}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def create_capture(port: int, **fields: Any) -> dict[str, Any]:
    r = httpx.post(f"{api(port)}/capture", json=fields, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def captures_of(port: int, name: str) -> list[dict[str, Any]]:
    node = topology(port).one(Name=name)
    return list(node["Metadata"].get("Captures", [])) if node else []


def wait_active(port: int, name: str, capture_id: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        for c in captures_of(port, name):
            if c["ID"] == capture_id:
                assert c["State"] == "active", c
                return c
        return None

    return wait_for(f"capture {capture_id} active on {name}", probe, timeout=20)


def wait_flows(port: int, query: str, done: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    seen: list[Any] = []

    def probe() -> list[dict[str, Any]] | None:
        flows = gremlin(port, query)
        seen[:] = [flows]
        return flows if done(flows) else None

    try:
        return wait_for(f"flows {query}", probe, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last flows: {seen}") from None


def flow_pair(cluster: Cluster) -> Pair:
    return start_pair(cluster, extra={"SKYDIVE_FLOW_UPDATE": "1"})


def test_capture_on_two_points_gives_exact_flows(cluster: Cluster, kernel: Kernel) -> None:
    lab = make_lab(kernel)
    pair = flow_pair(cluster)
    port = pair.port
    n1 = wait_node(port, Name=lab.host1)
    n2 = wait_node(port, Name=lab.host2)
    capture = create_capture(
        port, GremlinQuery=f"G.V().Has('Name', Within('{lab.host1}', '{lab.host2}'))"
    )
    cid = capture["UUID"]
    for name in (lab.host1, lab.host2):
        entry = wait_active(port, name, cid)
        assert entry["Type"] == "afpacket"  # the default on a kernel interface

    lab.run(lab.ns1, "icmp", lab.ip2, 3)
    lab.udp(count=5, replies=2)
    lab.tcp()

    icmp = wait_flows(
        port,
        "G.Flows().Has('LayersPath', 'Ethernet/IPv4/ICMPv4')",
        lambda fs: (
            len(fs) == 2
            and all((f["Metric"]["ABPackets"], f["Metric"]["BAPackets"]) == (3, 3) for f in fs)
        ),
    )
    for f in icmp:
        assert (f["Network"]["A"], f["Network"]["B"]) == (lab.ip1, lab.ip2)
        assert (f["Metric"]["ABPackets"], f["Metric"]["BAPackets"]) == (3, 3)
        assert f["ICMP"]["ID"] == 0x5344 and f["ICMP"]["Type"] == "ECHO"
        assert f["CaptureID"] == cid
    assert {f["NodeTID"] for f in icmp} == {n1["Metadata"]["TID"], n2["Metadata"]["TID"]}
    assert len({f["TrackingID"] for f in icmp}) == 1  # one flow, seen at two points
    assert len({f["UUID"] for f in icmp}) == 2

    udp = wait_flows(
        port,
        "G.Flows().Has('Transport.Protocol', 'UDP', 'Transport', 5000)",
        lambda fs: (
            len(fs) == 2
            and all((f["Metric"]["ABPackets"], f["Metric"]["BAPackets"]) == (5, 2) for f in fs)
        ),
    )
    for f in udp:
        assert (f["Transport"]["A"], f["Transport"]["B"]) == (5001, 5000)
        assert (f["Metric"]["ABPackets"], f["Metric"]["BAPackets"]) == (5, 2)
        assert f["LayersPath"] == "Ethernet/IPv4/UDP"
    assert udp[0]["TrackingID"] == udp[1]["TrackingID"]

    tcp = wait_flows(
        port,
        "G.Flows().Has('Transport.Protocol', 'TCP', 'Transport', 5001)",
        # both points saw the FIN, and (after their last updates) the same packets
        lambda fs: (
            len(fs) == 2
            and all(f.get("FinishType") == "TCP_FIN" for f in fs)
            and fs[0]["Metric"]
            == {
                **fs[1]["Metric"],
                "Start": fs[0]["Metric"]["Start"],
                "Last": fs[0]["Metric"]["Last"],
                "RTT": fs[0]["Metric"]["RTT"],
            }
        ),
    )
    assert tcp[0]["Metric"]["ABPackets"] == tcp[1]["Metric"]["ABPackets"] > 0
    assert tcp[0]["Metric"]["BAPackets"] == tcp[1]["Metric"]["BAPackets"] > 0
    assert all(f["Network"]["A"] == lab.ip1 for f in tcp)

    # V().Flows(): the flows of one capture point only
    mine = gremlin(port, f"G.V().Has('Name', '{lab.host1}').Flows().Has('Transport', 5000)")
    assert [f["NodeTID"] for f in mine] == [n1["Metadata"]["TID"]]
    # the node shows what it counted
    entry = wait_active(port, lab.host1, cid)
    assert entry["PacketsReceived"] >= 6 + 7
    assert entry["PacketsDropped"] == 0

    # deleting the capture stops it: its entry leaves the node
    assert httpx.delete(f"{api(port)}/capture/{cid}", timeout=10).status_code == 200
    wait_for(
        "Captures gone",
        lambda: not captures_of(port, lab.host1) and not captures_of(port, lab.host2),
        timeout=20,
    )


def test_bpf_filter_is_honoured(cluster: Cluster, kernel: Kernel) -> None:
    lab = make_lab(kernel)
    port = flow_pair(cluster).port
    wait_node(port, Name=lab.host1)
    cid = create_capture(port, GremlinQuery=f"G.V().Has('Name', '{lab.host1}')", BPFFilter="udp")[
        "UUID"
    ]
    wait_active(port, lab.host1, cid)
    lab.run(lab.ns1, "icmp", lab.ip2, 2)
    lab.udp(count=3, replies=1)
    flows = wait_flows(
        port,
        f"G.Flows().Has('CaptureID', '{cid}')",
        lambda fs: any(f["Metric"]["ABPackets"] == 3 for f in fs),
    )
    time.sleep(1.5)  # one more update: an ICMP flow would have shown by now
    flows = gremlin(port, f"G.Flows().Has('CaptureID', '{cid}')")
    assert [f["LayersPath"] for f in flows] == ["Ethernet/IPv4/UDP"]
    assert captures_of(port, lab.host1)[0]["BPFFilter"] == "udp"


def test_bad_captures_are_refused(cluster: Cluster, kernel: Kernel) -> None:
    lab = make_lab(kernel)
    pair = flow_pair(cluster)
    port = pair.port
    wait_node(port, Name=lab.host1)
    query = f"G.V().Has('Name', '{lab.host1}')"
    r = httpx.post(
        f"{api(port)}/capture", json={"GremlinQuery": query, "BPFFilter": "udp and prt 53"}
    )
    assert r.status_code == 400 and "BPFFilter" in r.text and "syntax error" in r.text
    r = httpx.post(f"{api(port)}/capture", json={"GremlinQuery": query, "Type": "ebpf"})
    assert r.status_code == 400 and "Type" in r.text
    host_query = f"G.V().Has('Type', 'host', 'Name', '{pair.agent.host_id}')"
    r = httpx.post(f"{api(port)}/capture", json={"GremlinQuery": host_query, "Type": "afpacket"})
    assert r.status_code == 400 and "cannot run on a host node" in r.text, r.text
    assert httpx.get(f"{api(port)}/capture").json() == {}


def test_capture_resumes_when_the_interface_comes_back(cluster: Cluster, kernel: Kernel) -> None:
    lab = make_lab(kernel)
    port = flow_pair(cluster).port
    wait_node(port, Name=lab.host1)
    cid = create_capture(port, GremlinQuery=f"G.V().Has('Name', '{lab.host1}')")["UUID"]
    wait_active(port, lab.host1, cid)
    sh(f"ip link del {lab.host1}")
    wait_for("the veth gone", lambda: topology(port).one(Name=lab.host1) is None, timeout=20)
    sh(f"ip link add {lab.host1} type veth peer name eth0 netns {lab.ns1}")
    sh(f"ip link set {lab.host1} master {lab.bridge} up")
    sh(f"ip -n {lab.ns1} addr add {lab.ip1}/24 dev eth0 && ip -n {lab.ns1} link set eth0 up")
    wait_active(port, lab.host1, cid)
    lab.run(lab.ns1, "icmp", lab.ip2, 2)
    wait_flows(
        port,
        f"G.V().Has('Name', '{lab.host1}').Flows().Has('LayersPath', 'Ethernet/IPv4/ICMPv4')",
        lambda fs: len(fs) == 1 and fs[0]["Metric"]["BAPackets"] == 2,
    )


def test_probe_path_capture(cluster: Cluster, kernel: Kernel) -> None:
    """A capture written as the seed's probe path (`*/NAME[Type=veth]`) starts like a query."""
    lab = make_lab(kernel)
    port = flow_pair(cluster).port
    wait_node(port, Name=lab.host1)
    cid = create_capture(port, GremlinQuery=f"*/{lab.host1}[Type=veth]")["UUID"]
    wait_active(port, lab.host1, cid)


def test_live_capture_pcapsocket_and_api_pcap_agree(
    cluster: Cluster, kernel: Kernel, tmp_path: Path
) -> None:
    """The same packets as live flows (afpacket), through a pcapsocket capture and through
    POST /api/pcap: the same flows (identity, orientation, counts, finish)."""
    lab = make_lab(kernel)
    port = flow_pair(cluster).port
    wait_node(port, Name=lab.host1)
    live = create_capture(port, GremlinQuery=f"G.V().Has('Name', '{lab.host1}')")["UUID"]
    wait_active(port, lab.host1, live)
    dump = tmp_path / "traffic.pcap"
    tcpdump = subprocess.Popen(
        ["tcpdump", "-i", lab.host1, "--immediate-mode", "-U", "-w", str(dump), "-s", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tcpdump.stderr is not None
        assert "listening on" in tcpdump.stderr.readline()
        lab.run(lab.ns1, "icmp", lab.ip2, 2)
        lab.udp(count=4, replies=3)
        lab.tcp()
        time.sleep(0.5)
    finally:
        tcpdump.terminate()
        tcpdump.communicate(timeout=10)
    body = dump.read_bytes()

    socket_capture = create_capture(
        port, GremlinQuery=f"G.V().Has('Name', '{lab.host2}')", Type="pcapsocket"
    )["UUID"]
    address = wait_active(port, lab.host2, socket_capture)["PCAPSocket"]
    host, _, socket_port = address.rpartition(":")
    with socket.create_connection((host, int(socket_port)), timeout=10) as conn:
        conn.sendall(body)
    uploaded = httpx.post(f"{api(port)}/pcap", content=body, timeout=30).json()["CaptureID"]

    def summary(flows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted(
            (
                f["LayersPath"],
                f["TrackingID"],
                f["L3TrackingID"],
                str(f.get("Network")),
                str(f.get("Transport")),
                str(f.get("ICMP")),
                f["Metric"]["ABPackets"],
                f["Metric"]["ABBytes"],
                f["Metric"]["BAPackets"],
                f["Metric"]["BABytes"],
                # a file's flows end with the file (TIMEOUT); the live ones are still live
                f.get("FinishType", "").replace("TIMEOUT", ""),
            )
            for f in flows
            if f["LayersPath"].startswith("Ethernet/IPv4")  # IPv6 router chatter is timing
        )

    def of(capture_id: str) -> list[tuple[Any, ...]]:
        return summary(gremlin(port, f"G.Flows().Has('CaptureID', '{capture_id}')"))

    expected = of(uploaded)
    assert len(expected) >= 3  # ICMP, UDP, TCP
    wait_for("the pcapsocket flows", lambda: of(socket_capture) == expected, timeout=20)
    # live flows: every update carries the latest state; wait until the TCP FIN shows
    try:
        wait_for("the live flows", lambda: of(live) == expected, timeout=20)
    except AssertionError:
        assert of(live) == expected  # show the difference


def test_captures_and_flows_survive_an_analyzer_restart(
    cluster: Cluster, kernel: Kernel, tmp_path: Path
) -> None:
    """The capture is stored; the agent keeps capturing while the analyzer is away and sends
    what it queued when the analyzer is back."""
    lab = make_lab(kernel)
    store = {"SKYDIVE_ANALYZER_DATA_DIR": str(tmp_path / "analyzer-data")}
    analyzer = cluster.spawn("analyzer", extra=store)
    port = analyzer.analyzer_port
    wait_for("the analyzer API", lambda: api_up(port), timeout=20)
    start_agent(cluster, analyzer, extra={"SKYDIVE_FLOW_UPDATE": "1"})
    wait_node(port, Name=lab.host1)
    cid = create_capture(port, GremlinQuery=f"G.V().Has('Name', '{lab.host1}')")["UUID"]
    wait_active(port, lab.host1, cid)
    assert analyzer.stop() == 0

    lab.run(lab.ns1, "icmp", lab.ip2, 4)  # while no analyzer listens
    time.sleep(1.5)  # at least one flow update queued on the agent

    cluster.spawn("analyzer", analyzer_port=port, extra=store)  # the same port and store
    wait_for("the analyzer back", lambda: topology(port).one(Name=lab.host1), timeout=30)
    flows = wait_flows(
        port,
        f"G.Flows().Has('CaptureID', '{cid}', 'LayersPath', 'Ethernet/IPv4/ICMPv4')",
        lambda fs: len(fs) == 1 and fs[0]["Metric"]["BAPackets"] == 4,
        timeout=30,
    )
    assert flows[0]["Network"]["A"] == lab.ip1
    wait_active(port, lab.host1, cid)


def test_flows_over_udp(cluster: Cluster, kernel: Kernel) -> None:
    """flow.protocol udp: the agent sends its flow batches as datagrams to the analyzer's port."""
    lab = make_lab(kernel)
    pair = start_pair(cluster, extra={"SKYDIVE_FLOW_UPDATE": "1", "SKYDIVE_FLOW_PROTOCOL": "udp"})
    port = pair.port
    wait_node(port, Name=lab.host1)
    cid = create_capture(port, GremlinQuery=f"G.V().Has('Name', '{lab.host1}')")["UUID"]
    wait_active(port, lab.host1, cid)
    lab.run(lab.ns1, "icmp", lab.ip2, 3)
    wait_flows(
        port,
        f"G.Flows().Has('CaptureID', '{cid}', 'LayersPath', 'Ethernet/IPv4/ICMPv4')",
        lambda fs: len(fs) == 1 and fs[0]["Metric"]["BAPackets"] == 3,
    )
    links = httpx.get(f"http://127.0.0.1:{pair.agent.agent_port}/api/status").json()["FlowLinks"]
    assert [link["Sent"] > 0 for link in links.values()] == [True]
    ingest = httpx.get(f"{api(port)}/status").json()["Flows"]["FromAgents"]
    assert ingest["Flows"] > 0 and ingest["Rejected"] == 0
