"""Sync of a 10,000-node agent graph: time until a new subscriber has the whole SyncReply.

Set-up: one ``skydive analyzer`` process, and this process as a fake agent: it connects to
``/ws/agent/topology`` with ``X-Host-ID`` and sends one ``Sync`` holding a generated host
graph (:func:`make_graph`, seeded: a host node, 100 netns nodes and interface nodes with the
metadata a real agent sends, ownership edges host→netns→interfaces; 10,000 nodes and 9,999
edges by default). The ingest time (Sync sent → ``/api/status`` counts every node and edge)
is reported too.

Then, ``--runs`` times (after one unmeasured run): ``t0``, open a WebSocket to
``/ws/subscriber``, send ``SyncRequest``, receive the ``SyncReply`` and parse it whole
(orjson); ``t1`` once its node list has been checked. The figure is the median of
``t1 - t0``. Target (issue #2): under 1 s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from typing import Any

import orjson
from websockets.sync.client import connect

from harness import (
    MIB,
    BenchError,
    Result,
    cluster,
    get_json,
    rss_bytes,
    run_main,
    run_tag,
    wait_for,
)

NAME = "sync"
TARGET_S = 1.0
SEED = 20260501
EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: fixed, so the input is the same each run

_TYPES = [("veth", 50), ("device", 10), ("tap", 12), ("bridge", 5), ("vlan", 8), ("vxlan", 5)]
_TYPES += [("macvlan", 5), ("bond", 2), ("dummy", 3)]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _mac(rng: random.Random) -> str:
    octets = [rng.randrange(256) for _ in range(6)]
    octets[0] = (octets[0] & 0xFC) | 0x02  # locally administered unicast
    return ":".join(f"{o:02x}" for o in octets)


def make_graph(nodes: int = 10_000, *, host: str, seed: int = SEED) -> dict[str, Any]:
    """A deterministic agent graph of ``nodes`` nodes and ``nodes - 1`` ownership edges."""
    if nodes < 2:
        raise ValueError("a graph needs at least a host and one interface")
    rng = random.Random(seed)
    origin = f"agent.{host}"
    kinds, weights = zip(*_TYPES, strict=True)
    stamp = EPOCH_MS

    def node(metadata: dict[str, Any], node_id: str | None = None) -> dict[str, Any]:
        nonlocal stamp
        stamp += rng.randrange(1, 20)
        return {
            "ID": node_id or _uuid(rng),
            "Metadata": {**metadata, "TID": _uuid(rng)},
            "Host": host,
            "Origin": origin,
            "CreatedAt": stamp,
            "UpdatedAt": stamp,
            "Revision": 1,
        }

    def edge(parent: str, child: str, relation: str = "ownership") -> dict[str, Any]:
        return {
            "ID": _uuid(rng),
            "Metadata": {"RelationType": relation},
            "Parent": parent,
            "Child": child,
            "Host": host,
            "Origin": origin,
            "CreatedAt": stamp,
            "UpdatedAt": stamp,
            "Revision": 1,
        }

    host_node = node(
        {
            "Name": host,
            "Type": "host",
            "Hostname": host,
            "OS": "linux",
            "Platform": "debian",
            "PlatformVersion": "12",
            "KernelVersion": "6.1.0-18-amd64",
            "CPUCount": 2,
        },
        node_id=host,
    )
    out_nodes = [host_node]
    out_edges: list[dict[str, Any]] = []
    owners = [(host_node["ID"], 0)]  # (owner ID, next ifindex)
    for i in range(min(100, (nodes - 1) // 10)):
        ns = node({"Name": f"ns{i:03d}", "Type": "netns", "Path": f"/var/run/netns/ns{i:03d}"})
        out_nodes.append(ns)
        out_edges.append(edge(host_node["ID"], ns["ID"]))
        owners.append((ns["ID"], 0))
    next_index = [1] * len(owners)
    while len(out_nodes) < nodes:
        slot = 0 if len(owners) == 1 or rng.random() < 0.1 else rng.randrange(1, len(owners))
        index = next_index[slot]
        next_index[slot] += 1
        kind = rng.choices(kinds, weights)[0]
        up = rng.random() < 0.9
        md: dict[str, Any] = {
            "Name": "lo" if index == 1 else f"{kind[:4]}{rng.getrandbits(24):06x}",
            "Type": "device" if index == 1 else kind,
            "EncapType": "loopback" if index == 1 else "ether",
            "IfIndex": index,
            "MTU": 65536 if index == 1 else rng.choice((1500, 1500, 1500, 1450, 9000)),
            "MAC": "00:00:00:00:00:00" if index == 1 else _mac(rng),
            "State": "UP" if up else "DOWN",
            "LinkFlags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"] if up else ["BROADCAST"],
        }
        if rng.random() < 0.6:
            md["IPV4"] = [
                f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}/24"
            ]
        if rng.random() < 0.4:
            md["IPV6"] = [f"fe80::{rng.getrandbits(16):x}:{rng.getrandbits(16):x}/64"]
        if kind == "veth":
            md["PeerIfIndex"] = rng.randrange(2, 4000)
        if kind == "vlan":
            md["Vlan"] = rng.randrange(1, 4095)
        if rng.random() < 0.3:
            md["MasterIndex"] = rng.randrange(2, 4000)
        if up and rng.random() < 0.8:
            rx, tx = rng.randrange(10**9), rng.randrange(10**9)
            md["Metric"] = {
                "RxBytes": rx,
                "TxBytes": tx,
                "RxPackets": rx // 800,
                "TxPackets": tx // 800,
                "Start": stamp - 30_000,
                "Last": stamp,
            }
        iface = node(md)
        out_nodes.append(iface)
        out_edges.append(edge(owners[slot][0], iface["ID"]))
    return {"Nodes": out_nodes, "Edges": out_edges}


def _subscriber_sync(port: int, expect_nodes: int) -> tuple[float, int]:
    """One measured run: (seconds from connect to a parsed SyncReply, its size in bytes)."""
    t0 = time.perf_counter()
    with connect(f"ws://127.0.0.1:{port}/ws/subscriber", max_size=None, open_timeout=30) as ws:
        ws.send(orjson.dumps({"Namespace": "Graph", "Type": "SyncRequest", "Obj": {}}))
        while True:
            raw = ws.recv(timeout=60, decode=False)
            msg = orjson.loads(raw)
            if msg.get("Type") == "SyncReply":
                break
        got = len((msg.get("Obj") or {}).get("Nodes") or [])
        t1 = time.perf_counter()
    if got < expect_nodes:
        raise BenchError(f"SyncReply had {got} nodes, expected {expect_nodes}")
    return t1 - t0, len(raw)


def run(
    *, quick: bool = False, nodes: int | None = None, runs: int | None = None, seed: int = SEED
) -> list[Result]:
    nodes = nodes if nodes is not None else 10_000
    runs = runs if runs is not None else (3 if quick else 9)
    tag = run_tag()
    host = f"skbfake{tag}"
    graph = make_graph(nodes, host=host, seed=seed)
    n_nodes, n_edges = len(graph["Nodes"]), len(graph["Edges"])
    payload = orjson.dumps({"Namespace": "Graph", "Type": "Sync", "Obj": graph})
    times: list[float] = []
    with cluster(NAME) as c:
        analyzer, port = c.analyzer(f"skbya{tag}")
        rss_empty = rss_bytes(analyzer.pid) / MIB
        with connect(
            f"ws://127.0.0.1:{port}/ws/agent/topology",
            additional_headers={"X-Host-ID": host, "X-Client-Type": "skydive-agent"},
            max_size=None,
            open_timeout=30,
        ) as agent_ws:
            t0 = time.perf_counter()
            agent_ws.send(payload)

            def ingested() -> bool:
                analyzer.check_alive()
                status = get_json(port, "/api/status")
                nodes_in, edges_in = int(status.get("Nodes", 0)), int(status.get("Edges", 0))
                return nodes_in >= n_nodes and edges_in >= n_edges

            wait_for("the analyzer to ingest the Sync", ingested, 120, step=0.01)
            t_ingest = time.perf_counter() - t0
            try:
                while True:  # the analyzer's capture set for this agent is expected; an error not
                    reply = agent_ws.recv(timeout=0.2)
                    if '"Namespace":"OnDemand"' not in str(reply).replace(" ", ""):
                        raise BenchError(f"the analyzer answered the Sync: {str(reply)[:300]}")
            except TimeoutError:
                pass
            rss_loaded = rss_bytes(analyzer.pid) / MIB
            size = 0
            for i in range(runs + 1):
                took, size = _subscriber_sync(port, n_nodes)
                if i:  # the first run warms the analyzer up
                    times.append(took)
                analyzer.check_alive()
            rss_after = rss_bytes(analyzer.pid) / MIB
    med = statistics.median(times)
    shape = f"{n_nodes} nodes, {n_edges} edges, SyncReply {size / MIB:.1f} MiB, seed {seed}"
    return [
        Result(NAME, "SyncRequest→parsed SyncReply (median)", med, "s", TARGET_S, "target", shape),
        Result(NAME, "SyncRequest→parsed SyncReply (max)", max(times), "s", note=f"{runs} runs"),
        Result(NAME, "agent Sync→ingested", t_ingest, "s", note=f"{len(payload) / MIB:.1f} MiB"),
        Result(NAME, "analyzer RSS, empty", rss_empty, "MiB"),
        Result(NAME, "analyzer RSS, graph loaded", rss_loaded, "MiB"),
        Result(NAME, "analyzer RSS after the syncs", rss_after, "MiB"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 9")
    parser.add_argument("--nodes", type=int, help="nodes in the agent graph (10,000)")
    parser.add_argument("--runs", type=int, help="measured subscriber syncs (9)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    return run_main(lambda: run(quick=args.quick, nodes=args.nodes, runs=args.runs, seed=args.seed))


if __name__ == "__main__":
    sys.exit(main())
