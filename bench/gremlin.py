"""Gremlin on a 100,000-node graph: in-process query times, memory per node, API throughput.

Input (:func:`iter_topology`, seeded): 100 compute hosts of 1,000 nodes and 2,000 edges each,
shaped like an OpenStack/Docker compute node as Skydive shows it: a host node owning its
physical NICs (eth0, eth1 enslaved to bond0), three OVS bridges (br-int, br-tun, br-ex) with
their ovsport nodes and a patch pair, docker0 with 16 containers (netns, lo, eth0 ↔ veth host
end on docker0), 154 VMs wired the hybrid way (tap ← qbr → qvb ↔ qvo ← ovsport ← br-int), and
VXLAN tunnels to the 76 nearest hosts on a ring (ovsport + vxlan interface per remote host, a
layer2 edge between the two ends). Ownership edges form one tree per host; the rest are layer2
edges. Hosts ``compute000`` and ``compute050`` are exactly six hops apart (two tunnels).

1. **In-process**: a :class:`pyskydive.graph.Graph` built here with ``add_node``/``add_edge``;
   each query is evaluated with ``pyskydive.gremlin.evaluate`` repeatedly (after one
   unmeasured run): median and p95. Targets (issue #3): indexed ``Has`` under 5 ms, full scans
   (and the six-hop search, which visits most of the graph) under 100 ms.
2. **Memory**: a fresh subprocess builds the same graph streaming from the generator;
   (VmRSS after - VmRSS before) / nodes, and the live Python heap per node (tracemalloc).
3. **API**: a real ``skydive analyzer``; this process, as an agent, sends the graph in one
   ``Sync`` on ``/ws/agent/topology``; then 8 client threads, each on its own keep-alive HTTP
   connection (a minimal HTTP/1.1 client, so the client side stays cheap), POST
   ``{"GremlinQuery": "G.V().Has('Name', X)"}`` to ``/api/topology`` with X cycling over
   unique names, for 10 s (3 s with ``--quick``): queries/s, p50 and p99. Target: ≥ 500/s.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    MIB,
    SRC,
    BenchError,
    CpuWindow,
    Result,
    cluster,
    cpu_seconds,
    get_json,
    median,
    percentile,
    rss_bytes,
    run_tag,
    wait_for,
)

if os.environ.get("BENCH_PYSKYDIVE_SRC"):  # the in-process part measures that tree too
    sys.path.insert(0, str(SRC))

NAME = "gremlin"
SEED = 20260503
EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TARGET_INDEXED_MS = 5.0
TARGET_SCAN_MS = 100.0
TARGET_QPS = 500.0

HOSTS = 100
CONTAINERS = 16  # per host
VMS = 154  # per host
TUNNEL_REACH = 38  # each host tunnels to the 38 hosts on either side of it on a ring
PATH_FROM, PATH_TO = "compute000", "compute050"  # two tunnels apart: six hops


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _mac(rng: random.Random) -> str:
    octets = [rng.randrange(256) for _ in range(6)]
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{o:02x}" for o in octets)


Wire = dict[str, Any]
Element = tuple[str, Wire]  # ("node" | "edge", its wire form)
_DRIVERS = {"veth": "veth", "tun": "tun", "bridge": "bridge", "vxlan": "vxlan", "bond": "bonding"}


def host_name(h: int) -> str:
    return f"compute{h:03d}"


class _Gen:
    """Element factory of :func:`iter_topology`: IDs, stamps and IfIndex from one seeded RNG."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.stamp = EPOCH_MS
        self.host = ""
        self.origin = ""
        self.ifindex = 0

    def node(self, md: dict[str, Any], node_id: str | None = None) -> dict[str, Any]:
        self.stamp += self.rng.randrange(1, 5)
        md["TID"] = _uuid(self.rng)
        return {
            "ID": node_id or _uuid(self.rng),
            "Metadata": md,
            "Host": self.host,
            "Origin": self.origin,
            "CreatedAt": self.stamp,
            "UpdatedAt": self.stamp,
            "Revision": 1,
        }

    def edge(self, parent: str, child: str, relation: str, kind: str | None = None) -> Element:
        md: dict[str, Any] = {"RelationType": relation}
        if kind:
            md["Type"] = kind
        return "edge", {
            "ID": _uuid(self.rng),
            "Metadata": md,
            "Parent": parent,
            "Child": child,
            "Host": self.host,
            "Origin": self.origin,
            "CreatedAt": self.stamp,
            "UpdatedAt": self.stamp,
            "Revision": 1,
        }

    def iface(self, name: str, kind: str, **extra: Any) -> dict[str, Any]:
        self.ifindex += 1
        lo = name == "lo"
        md: dict[str, Any] = {
            "Name": name,
            "Type": kind,
            "EncapType": "loopback" if lo else "ether",
            "IfIndex": self.ifindex,
            "MTU": 65536 if lo else (1450 if kind in ("tun", "veth") else 1500),
            "MAC": "00:00:00:00:00:00" if lo else _mac(self.rng),
            "State": "UP",
            "LinkFlags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
            "Driver": _DRIVERS.get(kind, "ixgbe"),
        }
        md.update(extra)
        return self.node(md)

    def own(self, parent: dict[str, Any], child: dict[str, Any]) -> Iterator[Element]:
        yield "node", child
        yield self.edge(parent["ID"], child["ID"], "ownership")

    def l2(self, a: dict[str, Any], b: dict[str, Any], kind: str | None = None) -> Element:
        return self.edge(a["ID"], b["ID"], "layer2", kind)

    def ovsport(self, bridge: dict[str, Any], name: str) -> Generator[Element, None, Wire]:
        port = self.node({"Name": name, "Type": "ovsport", "UUID": _uuid(self.rng)})
        yield from self.own(bridge, port)
        yield self.l2(bridge, port)
        return port


def iter_topology(seed: int = SEED) -> Iterator[Element]:
    """Yield ``("node", wire)`` and ``("edge", wire)`` in an order where an edge's ends exist.

    100,000 nodes and 200,000 edges (see the module docstring for the shape).
    """
    g = _Gen(seed)
    rng = g.rng
    # (host, remote) -> ID of host's vxlan interface towards remote, for the cross edges
    vxlan_ifaces: dict[tuple[int, int], str] = {}
    underlay = [f"10.0.{h // 250}.{h % 250 + 1}" for h in range(HOSTS)]

    for h in range(HOSTS):
        host = host_name(h)
        g.host, g.origin, g.ifindex = host, f"agent.{host}", 0

        # the host and its infrastructure: 14 nodes, 22 edges
        hnode = g.node(
            {
                "Name": host,
                "Type": "host",
                "Hostname": host,
                "OS": "linux",
                "Platform": "ubuntu",
                "PlatformVersion": "22.04",
                "KernelVersion": "5.15.0-91-generic",
                "CPUCount": 64,
            },
            node_id=host,
        )
        yield "node", hnode
        yield from g.own(hnode, g.iface("lo", "device"))
        eth0 = g.iface("eth0", "device", IPV4=[f"{underlay[h]}/16"], Speed=25000)
        eth1 = g.iface("eth1", "device", Speed=25000)
        bond0 = g.iface("bond0", "bond", BondMode="802.3ad")
        for i in (eth0, eth1, bond0):
            yield from g.own(hnode, i)
        yield g.l2(bond0, eth0)
        yield g.l2(bond0, eth1)
        bridges = {}
        for b in ("br-int", "br-tun", "br-ex"):
            bridges[b] = g.node({"Name": b, "Type": "ovsbridge", "UUID": _uuid(rng)})
            yield from g.own(hnode, bridges[b])
        port = yield from g.ovsport(bridges["br-ex"], "bond0")
        yield g.l2(port, bond0)
        patch_ifaces = []
        for b, name in (("br-int", "patch-tun"), ("br-tun", "patch-int")):
            port = yield from g.ovsport(bridges[b], name)
            pif = g.node({"Name": name, "Type": "patch", "UUID": _uuid(rng)})
            yield from g.own(hnode, pif)
            yield g.l2(port, pif)
            patch_ifaces.append(pif)
        yield g.l2(patch_ifaces[0], patch_ifaces[1], "patch")
        docker0 = g.iface("docker0", "bridge", IPV4=["172.17.0.1/16"])
        yield from g.own(hnode, docker0)

        # VXLAN tunnels to TUNNEL_REACH hosts on each side: 2 nodes and 4.5 edges per end
        for d in (*range(1, TUNNEL_REACH + 1), *range(-TUNNEL_REACH, 0)):
            remote = (h + d) % HOSTS
            name = "vxlan-" + "".join(f"{int(o):02x}" for o in underlay[remote].split("."))
            port = yield from g.ovsport(bridges["br-tun"], name)
            vif = g.iface(name, "vxlan", RemoteIP=underlay[remote], VNI=rng.randrange(1, 1 << 24))
            yield from g.own(hnode, vif)
            yield g.l2(port, vif)
            vxlan_ifaces[h, remote] = vif["ID"]
            peer = vxlan_ifaces.get((remote, h))
            if peer is not None:
                yield g.edge(peer, vif["ID"], "layer2", "vxlan")

        # containers: 4 nodes, 6 edges each
        for c in range(CONTAINERS):
            cid = rng.getrandbits(64)
            ns = g.node(
                {
                    "Name": f"cni-{_uuid(rng)}",
                    "Type": "netns",
                    "Path": f"/var/run/netns/cni-{cid:016x}",
                    "Container": {"ID": f"{cid:016x}", "Name": f"ctr-{h:03d}-{c:02d}"},
                }
            )
            yield from g.own(hnode, ns)
            host_ifindex, g.ifindex = g.ifindex, 0
            yield from g.own(ns, g.iface("lo", "device"))
            inner = g.iface("eth0", "veth", IPV4=[f"172.17.{c // 250}.{c % 250 + 2}/16"])
            yield from g.own(ns, inner)
            g.ifindex = host_ifindex
            outer = g.iface(f"veth{rng.getrandbits(28):07x}", "veth", PeerIfIndex=2)
            inner["Metadata"]["PeerIfIndex"] = outer["Metadata"]["IfIndex"]
            yield from g.own(hnode, outer)
            yield g.l2(inner, outer, "veth")
            yield g.l2(docker0, outer)

        # VMs, hybrid plug: 5 nodes, 10 edges each
        for _ in range(VMS):
            port_id = _uuid(rng)[:11]
            tap = g.iface(f"tap{port_id}", "tun")
            qbr = g.iface(f"qbr{port_id}", "bridge")
            qvb = g.iface(f"qvb{port_id}", "veth")
            qvo = g.iface(f"qvo{port_id}", "veth")
            qvb["Metadata"]["PeerIfIndex"] = qvo["Metadata"]["IfIndex"]
            qvo["Metadata"]["PeerIfIndex"] = qvb["Metadata"]["IfIndex"]
            for i in (tap, qbr, qvb, qvo):
                yield from g.own(hnode, i)
            yield g.l2(qbr, tap)
            yield g.l2(qbr, qvb)
            yield g.l2(qvb, qvo, "veth")
            port = yield from g.ovsport(bridges["br-int"], f"qvo{port_id}")
            yield g.l2(port, qvo)


@dataclass
class Topology:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)

    @property
    def wire(self) -> dict[str, list[dict[str, Any]]]:
        return {"Nodes": self.nodes, "Edges": self.edges}

    def unique_names(self, prefixes: tuple[str, ...]) -> list[str]:
        """Names held by exactly one node, starting with one of ``prefixes`` (in graph order)."""
        count: dict[str, int] = {}
        for n in self.nodes:
            name = n["Metadata"].get("Name")
            count[name] = count.get(name, 0) + 1
        return [
            n["Metadata"]["Name"]
            for n in self.nodes
            if n["Metadata"]["Name"].startswith(prefixes) and count[n["Metadata"]["Name"]] == 1
        ]

    def hops(self, src_name: str, dst_name: str) -> int:
        """Undirected BFS distance between the nodes named ``src_name`` and ``dst_name``."""
        adj: dict[str, list[str]] = {n["ID"]: [] for n in self.nodes}
        for e in self.edges:
            adj[e["Parent"]].append(e["Child"])
            adj[e["Child"]].append(e["Parent"])
        by_name = {n["Metadata"]["Name"]: n["ID"] for n in self.nodes}
        src, dst = by_name[src_name], by_name[dst_name]
        seen = {src: 0}
        queue = deque([src])
        while queue:
            cur = queue.popleft()
            if cur == dst:
                return seen[cur]
            for nxt in adj[cur]:
                if nxt not in seen:
                    seen[nxt] = seen[cur] + 1
                    queue.append(nxt)
        return -1


def make_topology(seed: int = SEED) -> Topology:
    topo = Topology()
    for kind, wire in iter_topology(seed):
        (topo.nodes if kind == "node" else topo.edges).append(wire)
    return topo


def build_graph(elements: Iterable[Element]) -> Any:
    """A :class:`pyskydive.graph.Graph` from ``(kind, wire)`` pairs, via add_node/add_edge."""
    from pyskydive.graph import Graph

    g = Graph("skbgremlin-analyzer")
    add_node, add_edge = g.add_node, g.add_edge
    for kind, w in elements:
        if kind == "node":
            add_node(
                w["ID"],
                w["Metadata"],
                origin=w["Origin"],
                host=w["Host"],
                created_at=w["CreatedAt"],
                updated_at=w["UpdatedAt"],
                revision=w["Revision"],
            )
        else:
            add_edge(
                w["ID"],
                w["Parent"],
                w["Child"],
                w["Metadata"],
                origin=w["Origin"],
                host=w["Host"],
                created_at=w["CreatedAt"],
                updated_at=w["UpdatedAt"],
                revision=w["Revision"],
            )
    return g


# -- 1. in-process ----------------------------------------------------------------------------


def _import_evaluate(wait: float) -> Callable[..., Any]:
    deadline = time.monotonic() + wait
    while True:
        try:
            from pyskydive.gremlin import evaluate

            return evaluate
        except ImportError as exc:
            if time.monotonic() > deadline:
                raise BenchError(f"pyskydive.gremlin is not importable: {exc}") from None
            time.sleep(5)


def _time_query(
    evaluate: Callable[..., Any],
    graph: Any,
    queries: list[str],
    runs: int,
    budget: float,
) -> tuple[list[float], Any]:
    """Milliseconds of each measured run (cycling over ``queries``), and the first result."""
    first = evaluate(queries[0], graph, timeout=120.0)  # unmeasured: warms caches up
    times: list[float] = []
    t_end = time.monotonic() + budget
    i = 0
    while len(times) < runs and (len(times) < 5 or time.monotonic() < t_end):
        q = queries[i % len(queries)]
        i += 1
        t0 = time.perf_counter()
        evaluate(q, graph, timeout=120.0)
        times.append((time.perf_counter() - t0) * 1000)
    return times, first


def _path_nodes(result: Any) -> int | None:
    """Length (in nodes) of the first path in a ShortestPathTo result, when it has that shape."""
    try:
        path = result[0]
        return len(path) if isinstance(path, list) else None
    except (IndexError, KeyError, TypeError):
        return None


def in_process(topo: Topology, *, quick: bool, wait_import: float) -> list[Result]:
    evaluate = _import_evaluate(wait_import)
    gc.collect()
    t0 = time.perf_counter()
    graph = build_graph(
        itertools.chain((("node", n) for n in topo.nodes), (("edge", e) for e in topo.edges))
    )
    build_s = time.perf_counter() - t0
    n_nodes, n_edges = len(graph.nodes), len(graph.edges)
    out: list[Result] = [
        Result(
            NAME,
            "in-process: build Graph (add_node/add_edge)",
            build_s,
            "s",
            note=f"{n_nodes} nodes, {n_edges} edges, seed {SEED}",
        ),
    ]
    runs, budget = (20, 4.0) if quick else (100, 15.0)
    x_names = topo.unique_names(("qbr",))
    hops = topo.hops(PATH_FROM, PATH_TO)
    cases: list[tuple[str, list[str], float, str]] = [
        (
            "Has('Type','veth').Count()",
            ["G.V().Has('Type', 'veth').Count()"],
            TARGET_INDEXED_MS,
            "indexed",
        ),
        (
            "Has('Name',X).Out().Out()",
            [
                f"G.V().Has('Name', '{x}').Out().Out()"
                for x in x_names[:: max(1, len(x_names) // 64)]
            ],
            TARGET_INDEXED_MS,
            "indexed",
        ),
        (
            f"ShortestPathTo, {hops} hops",
            [f"G.V().Has('Name', '{PATH_FROM}').ShortestPathTo(Metadata('Name', '{PATH_TO}'))"],
            TARGET_SCAN_MS,
            "full-scan",
        ),
        ("V().Count()", ["G.V().Count()"], TARGET_SCAN_MS, "full-scan"),
        # not in the list: a Has on a key without an index really scans every node
        (
            "Has('MTU',1450).Count() (no index)",
            ["G.V().Has('MTU', 1450).Count()"],
            TARGET_SCAN_MS,
            "full-scan",
        ),
    ]
    for label, queries, target, kind in cases:
        try:
            times, first = _time_query(evaluate, graph, queries, runs, budget)
        except Exception as exc:  # a query the evaluator cannot run yet: report, go on
            out.append(
                Result(
                    NAME,
                    f"in-process {label}",
                    None,
                    "ms",
                    target,
                    f"{kind} target",
                    f"ERROR {type(exc).__name__}: {exc}"[:200],
                )
            )
            continue
        if isinstance(first, int):
            shape = f"= {first}"
        elif label.startswith("ShortestPathTo"):
            shape = f"{len(first)} path(s), first of {_path_nodes(first)} nodes"
        else:
            shape = f"{len(first) if isinstance(first, list) else type(first).__name__} results"
        note = f"p95 {percentile(times, 95):.2f} ms, {len(times)} runs, {shape}"
        out.append(
            Result(
                NAME,
                f"in-process {label} (median)",
                median(times),
                "ms",
                target,
                f"{kind} target",
                note,
            )
        )
    return out


# -- 2. memory per node (fresh subprocess) ----------------------------------------------------


def _memory_child(trace: bool) -> None:
    """Run in a fresh interpreter: build the graph streaming, print the figures as JSON."""
    import tracemalloc

    import pyskydive.graph  # noqa: F401 - imported before the "before" reading

    gc.collect()
    if trace:
        tracemalloc.start()
    before = rss_bytes(os.getpid())
    traced0 = tracemalloc.get_traced_memory()[0] if trace else 0
    t0 = time.perf_counter()
    graph = build_graph(iter_topology(SEED))
    took = time.perf_counter() - t0
    gc.collect()
    after = rss_bytes(os.getpid())
    traced = tracemalloc.get_traced_memory()[0] - traced0 if trace else 0
    print(
        json.dumps(
            {
                "nodes": len(graph.nodes),
                "edges": len(graph.edges),
                "rss0": before,
                "rss1": after,
                "traced": traced,
                "seconds": took,
            }
        )
    )


def _run_memory_child(trace: bool) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    args = [sys.executable, __file__, "--memory-child"] + (["--trace"] if trace else [])
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, check=False)
    if proc.returncode != 0:
        raise BenchError(f"memory subprocess failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def memory(*, quick: bool) -> list[Result]:
    got = _run_memory_child(trace=False)
    n = got["nodes"]
    per_node = (got["rss1"] - got["rss0"]) / n
    out = [
        Result(
            NAME,
            "memory: RSS per node (graph build, fresh process)",
            per_node / 1024,
            "KiB",
            note=f"{(got['rss1'] - got['rss0']) / MIB:.0f} MiB for {n} nodes + {got['edges']} "
            f"edges (edges included); generated + built in {got['seconds']:.1f} s",
        ),
    ]
    if not quick:
        traced = _run_memory_child(trace=True)
        out.append(
            Result(
                NAME,
                "memory: Python heap per node (tracemalloc)",
                traced["traced"] / traced["nodes"] / 1024,
                "KiB",
                note=f"{traced['traced'] / MIB:.0f} MiB live after the build",
            )
        )
    return out


# -- 3. through the API -----------------------------------------------------------------------


class _Conn:
    """A minimal keep-alive HTTP/1.1 client: one request at a time, Content-Length bodies."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")

    def post(self, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST /api/topology HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + body)
        status_line = self.rfile.readline()
        if not status_line:
            raise BenchError("the analyzer closed the connection")
        status = int(status_line.split()[1])
        length = -1
        chunked = False
        while True:
            line = self.rfile.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return status, b"".join(parts)
        if length < 0:
            raise BenchError("a response without Content-Length")
        return status, self.rfile.read(length)

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


def _client(
    port: int,
    bodies: list[bytes],
    start: threading.Event,
    measure_from: list[float],
    stop_at: list[float],
    latencies: list[float],
    errors: list[str],
) -> None:
    conn = _Conn(port)
    try:
        start.wait()
        i = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at[0]:
                break
            status, payload = conn.post(bodies[i % len(bodies)])
            t1 = time.perf_counter()
            i += 1
            if status != 200 or not payload.startswith(b"[{"):
                errors.append(f"{status}: {payload[:200]!r}")
                if len(errors) > 20:
                    break
                continue
            if t0 >= measure_from[0]:
                latencies.append(t1 - t0)
    except (OSError, BenchError, ValueError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def _probe_endpoint(port: int) -> str | None:
    """None if POST /api/topology runs a query; else why not."""
    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/topology",
            json={"GremlinQuery": "G.V().Count()"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        return f"POST /api/topology: {type(exc).__name__}: {exc}"
    if r.status_code != 200:
        return f"POST /api/topology answered {r.status_code}: {r.text[:150]}"
    return None


def through_api(topo: Topology, *, quick: bool, clients: int, duration: float) -> list[Result]:
    tag = run_tag()
    n_nodes, n_edges = len(topo.nodes), len(topo.edges)
    names = topo.unique_names(("tap", "qbr", "qvb", "cni-", "veth", "compute"))
    rng = random.Random(SEED)
    rng.shuffle(names)
    with cluster(NAME) as c:
        analyzer, port = c.analyzer(f"skbga{tag}")
        why = _probe_endpoint(port)
        if why is not None:
            return [Result(NAME, "FAILED", None, "", note=f"API part: {why}")]
        rss_empty = rss_bytes(analyzer.pid) / MIB
        t0 = time.perf_counter()
        payload = orjson.dumps({"Namespace": "Graph", "Type": "Sync", "Obj": topo.wire})
        encode_s = time.perf_counter() - t0
        sync_mib = len(payload) / MIB
        with connect(
            f"ws://127.0.0.1:{port}/ws/agent/topology",
            additional_headers={"X-Host-ID": f"skbgremlin{tag}", "X-Client-Type": "skydive-agent"},
            max_size=None,
            open_timeout=30,
            close_timeout=60,
        ) as agent_ws:
            t0 = time.perf_counter()
            agent_ws.send(payload)
            del payload

            def ingested() -> bool:
                analyzer.check_alive()
                status = get_json(port, "/api/status", timeout=120)
                return (
                    int(status.get("Nodes", 0)) >= n_nodes
                    and int(status.get("Edges", 0)) >= n_edges
                )

            wait_for("the analyzer to ingest the Sync", ingested, 600, step=0.1)
            ingest_s = time.perf_counter() - t0
            rss_loaded = rss_bytes(analyzer.pid) / MIB
            # every query must find its node: check a few before the clock runs
            for x in names[:3]:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/api/topology",
                    json={"GremlinQuery": f"G.V().Has('Name', '{x}')"},
                    timeout=60,
                )
                if r.status_code != 200 or len(r.json()) != 1:
                    raise BenchError(f"Has('Name', {x!r}) answered {r.status_code}: {r.text[:200]}")
            per_client = [names[i::clients] for i in range(clients)]
            bodies = [
                [orjson.dumps({"GremlinQuery": f"G.V().Has('Name', '{x}')"}) for x in part]
                for part in per_client
            ]
            start = threading.Event()
            warmup = 0.5 if quick else 1.0
            measure_from = [0.0]
            stop_at = [0.0]
            lat: list[list[float]] = [[] for _ in range(clients)]
            errors: list[str] = []
            threads = [
                threading.Thread(
                    target=_client,
                    args=(port, bodies[i], start, measure_from, stop_at, lat[i], errors),
                    daemon=True,
                )
                for i in range(clients)
            ]
            for t in threads:
                t.start()
            now = time.perf_counter()
            measure_from[0] = now + warmup
            stop_at[0] = now + warmup + duration
            start.set()
            time.sleep(warmup)
            cpu = CpuWindow({"analyzer": analyzer.pid}).start()
            self0 = cpu_seconds(os.getpid(), children=False)
            time.sleep(duration)
            cpu.stop()
            client_cpu = 100.0 * (cpu_seconds(os.getpid(), children=False) - self0) / cpu.seconds
            for t in threads:
                t.join(60)
            analyzer.check_alive()
            rss_after = rss_bytes(analyzer.pid) / MIB
    all_lat = [x * 1000 for part in lat for x in part]
    if errors:
        raise BenchError(f"{len(errors)} failed queries, first: {errors[0]}")
    if not all_lat:
        raise BenchError("no query completed in the measured window")
    qps = len(all_lat) / duration
    return [
        Result(
            NAME,
            f"API: Has('Name',X), {clients} clients",
            qps,
            "queries/s",
            TARGET_QPS,
            "target, higher is better",
            f"{len(all_lat)} queries in {duration:.0f} s; analyzer CPU "
            f"{cpu.percent['analyzer']:.0f} %, clients {client_cpu:.0f} %, background "
            f"{cpu.background:.0f} % of a core",
        ),
        Result(NAME, "API: latency p50", percentile(all_lat, 50), "ms"),
        Result(
            NAME,
            "API: latency p99",
            percentile(all_lat, 99),
            "ms",
            note=f"max {max(all_lat):.1f} ms",
        ),
        Result(
            NAME,
            "API: agent Sync→ingested",
            ingest_s,
            "s",
            note=f"{n_nodes} nodes, {n_edges} edges in one {sync_mib:.0f} MiB message "
            f"(encoded in {encode_s:.1f} s)",
        ),
        Result(
            NAME,
            "API: analyzer RSS empty / loaded / after",
            rss_loaded,
            "MiB",
            note=f"empty {rss_empty:.0f}, loaded {rss_loaded:.0f}, after queries "
            f"{rss_after:.0f} MiB; {(rss_loaded - rss_empty) * MIB / n_nodes / 1024:.1f} "
            "KiB per node",
        ),
    ]


# -- entry points -----------------------------------------------------------------------------


def run(
    *,
    quick: bool = False,
    clients: int = 8,
    duration: float | None = None,
    parts: tuple[str, ...] = ("inproc", "memory", "api"),
    wait_import: float = 0.0,
) -> list[Result]:
    duration = duration if duration is not None else (3.0 if quick else 10.0)
    t0 = time.perf_counter()
    topo = make_topology(SEED)
    gen_s = time.perf_counter() - t0
    print(
        f"   generated {len(topo.nodes)} nodes, {len(topo.edges)} edges in {gen_s:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    results: list[Result] = []
    if "inproc" in parts:
        results += in_process(topo, quick=quick, wait_import=wait_import)
        gc.collect()
    if "memory" in parts:
        results += memory(quick=quick)
    if "api" in parts:
        try:
            results += through_api(topo, quick=quick, clients=clients, duration=duration)
        except BenchError as exc:
            results.append(Result(NAME, "FAILED", None, "", note=f"API part: {exc}"[:300]))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, a 3 s API window")
    parser.add_argument("--clients", type=int, default=8, help="concurrent API clients (8)")
    parser.add_argument("--duration", type=float, help="API window in seconds (10; quick: 3)")
    parser.add_argument(
        "--only",
        action="append",
        choices=("inproc", "memory", "api"),
        help="run only this part (repeatable)",
    )
    parser.add_argument(
        "--wait-import",
        type=float,
        default=0.0,
        help="wait this long for pyskydive.gremlin to become importable",
    )
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(args.trace)
        return 0
    from harness import format_table, install_signal_handlers

    install_signal_handlers()
    try:
        results = run(
            quick=args.quick,
            clients=args.clients,
            duration=args.duration,
            parts=tuple(args.only or ("inproc", "memory", "api")),
            wait_import=args.wait_import,
        )
    except KeyboardInterrupt:
        print("interrupted (processes cleaned up)", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(format_table(results))
    return 1 if any(r.metric == "FAILED" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
