"""Namespace scale: agent and analyzer cost with 100 namespaces, under churn, and stale nodes.

Set-up: a linux bridge ``skbbrTTT`` and N namespaces ``skbnTTTNNN`` (default 100), each with a
veth pair: ``skbiTTTNNN`` inside (up), ``skbhTTTNNN`` in the root namespace, enslaved to the
bridge (up). Then one ``skydive analyzer`` and one ``skydive agent`` (default probes
netlink,netns,ethtool; ``metrics_update`` left at its default, 30 s) are started, and we wait
until the analyzer's graph holds exactly those objects.

1. At rest: after ``--settle`` seconds, CPU of the agent and the analyzer over ``--rest``
   seconds (utime+stime+cutime+cstime from /proc/PID/stat, so helpers the agent forks
   count; as % of one core; the default window is one metrics period, so it holds one counter
   poll per namespace), and their VmRSS.
2. Churn: ``--cycles`` cycles (default 3) of ``--period`` seconds (default 10): at the start
   of a cycle M namespaces ``skbcTTTNNN`` (default 20) are created, each with a veth into the
   bridge, and at its half they are deleted (``ip netns del``; the veth goes with it). CPU over
   the whole churn, peak VmRSS sampled every 0.5 s.
3. Exactness: after the churn, the analyzer's graph (and the agent's) is compared with the
   kernel (``ip netns list``, ``ip link`` in the root namespace and in each skb* namespace)
   until they agree or ``--converge`` seconds pass. Counted, for skb* objects only: netns
   nodes and interface nodes (keyed by owning namespace and name) that do not exist (stale),
   extra copies of ones that do (duplicates), interfaces with other than one ownership parent,
   duplicate edges, and objects missing from the graph.

Anchors (issue #2, the original Skydive on this machine): agent 1.0 % of a core and 67 MiB at
rest, 4.3 % during the churn; analyzer 73 MiB; 78 stale or duplicate nodes after three cycles.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from harness import (
    MIB,
    BenchError,
    CpuWindow,
    Kernel,
    Result,
    RssSampler,
    cluster,
    get_json,
    list_links,
    list_links_all_netns,
    list_netns,
    need_root,
    open_fds,
    rss_bytes,
    run_main,
    run_tag,
    signals_deferred,
    threads,
)

NAME = "netns_scale"
SOURCE = "original Skydive, issue #2"
ANCHOR_AGENT_CPU_REST = 1.0
ANCHOR_AGENT_RSS_REST = 67.0
ANCHOR_AGENT_CPU_CHURN = 4.3
ANCHOR_ANALYZER_RSS = 73.0
ANCHOR_STALE = 78.0
PREFIX = "skb"


@dataclass(frozen=True)
class Pair:
    """A namespace with a veth pair: ``inner`` in the namespace, ``outer`` on the bridge."""

    netns: str
    outer: str
    inner: str


def _pairs(kind: str, tag: str, count: int) -> list[Pair]:
    ns, outer, inner = {"rest": ("skbn", "skbh", "skbi"), "churn": ("skbc", "skbk", "skbj")}[kind]
    return [
        Pair(f"{ns}{tag}{i:03d}", f"{outer}{tag}{i:03d}", f"{inner}{tag}{i:03d}")
        for i in range(count)
    ]


def create_pairs(kernel: Kernel, bridge: str, pairs: list[Pair]) -> None:
    # A namespace deleted in the previous cycle takes its veth with it asynchronously (the
    # kernel's cleanup_net); its name must be free again before it is reused.
    outer = {p.outer for p in pairs}
    deadline = time.monotonic() + 10.0
    while outer & set(list_links()) and time.monotonic() < deadline:
        time.sleep(0.05)
    kernel.will_create(netns=[p.netns for p in pairs], links=[p.outer for p in pairs])
    lines: list[str] = []
    for p in pairs:
        lines += [
            f"netns add {p.netns}",
            f"link add {p.outer} type veth peer name {p.inner} netns {p.netns}",
            f"link set {p.outer} master {bridge} up",
        ]
    kernel.batch(lines)
    kernel.batch(f"netns exec {p.netns} ip link set {p.inner} up" for p in pairs)


def delete_pairs(kernel: Kernel, pairs: list[Pair]) -> None:
    """``ip netns del`` each (as a container runtime does); the veth pair goes with it."""
    Kernel.batch((f"netns del {p.netns}" for p in pairs), force=True)
    kernel.forget(netns=[p.netns for p in pairs], links=[p.outer for p in pairs])


# -- graph against kernel -------------------------------------------------------------------


@dataclass
class Check:
    stale: int = 0
    duplicates: int = 0
    missing: int = 0
    bad_owner: int = 0
    dup_edges: int = 0
    netns_graph: int = 0
    netns_kernel: int = 0
    links_graph: int = 0
    links_kernel: int = 0
    examples: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        return not (
            self.stale or self.duplicates or self.missing or self.bad_owner or self.dup_edges
        )

    @property
    def wrong(self) -> int:
        """Nodes the graph holds that it should not: stale + duplicate + mis-owned."""
        return self.stale + self.duplicates + self.bad_owner

    def summary(self) -> str:
        return (
            f"stale {self.stale}, duplicate {self.duplicates}, missing {self.missing}, "
            f"bad owner {self.bad_owner}, duplicate edges {self.dup_edges}; netns "
            f"{self.netns_graph}/{self.netns_kernel}, links {self.links_graph}/{self.links_kernel}"
            + (f"; e.g. {', '.join(self.examples)}" if self.examples else "")
        )


def kernel_state() -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """skb* namespaces, and interfaces as (namespace or "", name): root skb* ones, and every
    interface inside an skb* namespace (``lo`` included)."""
    netns = Counter(n for n in list_netns() if n.startswith(PREFIX))
    links: Counter[tuple[str, str]] = Counter(
        ("", name) for name in list_links() if name.startswith(PREFIX)
    )
    for ns, names in list_links_all_netns(PREFIX).items():
        if ns in netns:
            links.update((ns, name) for name in names)
    return netns, links


def graph_state(topo: dict[str, Any]) -> tuple[Counter[str], Counter[tuple[str, str]], int, int]:
    """The same view of a ``GET /api/topology`` answer, plus mis-owned nodes and duplicate
    edges (same parent, child and relation) among skb* elements."""
    nodes = {n["ID"]: n for n in topo.get("Nodes") or []}
    owners: dict[str, list[dict[str, Any]]] = {}
    edge_keys: Counter[tuple[str, str, Any]] = Counter()
    for e in topo.get("Edges") or []:
        relation = (e.get("Metadata") or {}).get("RelationType")
        edge_keys[(e["Parent"], e["Child"], relation)] += 1
        if relation == "ownership" and e["Parent"] in nodes:
            owners.setdefault(e["Child"], []).append(nodes[e["Parent"]])
    netns: Counter[str] = Counter()
    links: Counter[tuple[str, str]] = Counter()
    bad_owner = 0
    skb_ids: set[str] = set()
    for node_id, node in nodes.items():
        md = node.get("Metadata") or {}
        name, kind = str(md.get("Name", "")), md.get("Type")
        if kind == "host":
            continue
        if kind == "netns":
            if name.startswith(PREFIX):
                netns[name] += 1
                skb_ids.add(node_id)
            continue
        parents = owners.get(node_id, [])
        spaces = [
            "" if p["Metadata"].get("Type") == "host" else str(p["Metadata"].get("Name", "?"))
            for p in parents
        ]
        ours = name.startswith(PREFIX) or any(s.startswith(PREFIX) for s in spaces)
        if not ours:
            continue
        skb_ids.add(node_id)
        if len(parents) != 1:
            bad_owner += 1
        links[(spaces[0] if parents else "?", name)] += 1
    dup_edges = sum(
        n - 1 for (parent, child, _), n in edge_keys.items() if n > 1 and {parent, child} & skb_ids
    )
    return netns, links, bad_owner, dup_edges


def _diff(graph: Counter[Any], truth: Counter[Any], examples: list[str]) -> tuple[int, int, int]:
    stale = duplicates = missing = 0
    for key, n in graph.items():
        if key not in truth:
            stale += n
            examples.append(f"stale {key}")
        elif n > truth[key]:
            duplicates += n - truth[key]
            examples.append(f"duplicate {key}")
    for key, n in truth.items():
        if graph.get(key, 0) < n:
            missing += n - graph.get(key, 0)
            examples.append(f"missing {key}")
    return stale, duplicates, missing


def check(port: int) -> Check:
    """Compare the graph served on ``port`` with the kernel (kernel read on both sides of the
    graph read, and retried until both kernel reads agree, so a change in flight is not
    counted)."""
    for _ in range(5):
        before = kernel_state()
        topo = get_json(port, "/api/topology")
        after = kernel_state()
        if before == after:
            break
    else:
        raise BenchError("the kernel kept changing while checking the graph")
    k_netns, k_links = after
    g_netns, g_links, bad_owner, dup_edges = graph_state(topo)
    examples: list[str] = []
    s1, d1, m1 = _diff(g_netns, k_netns, examples)
    s2, d2, m2 = _diff(g_links, k_links, examples)
    return Check(
        stale=s1 + s2,
        duplicates=d1 + d2,
        missing=m1 + m2,
        bad_owner=bad_owner,
        dup_edges=dup_edges,
        netns_graph=sum(g_netns.values()),
        netns_kernel=sum(k_netns.values()),
        links_graph=sum(g_links.values()),
        links_kernel=sum(k_links.values()),
        examples=tuple(examples[:5]),
    )


def converge(port: int, timeout: float) -> tuple[Check, float | None]:
    """Check until the graph is exact; (last check, seconds it took or None on time-out)."""
    t0 = time.monotonic()
    while True:
        result = check(port)
        if result.exact:
            return result, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return result, None
        time.sleep(0.2)


# -- the benchmark --------------------------------------------------------------------------


def _sleep_until(deadline: float) -> None:
    left = deadline - time.monotonic()
    if left > 0:
        time.sleep(left)


def run(
    *,
    quick: bool = False,
    namespaces: int | None = None,
    churn: int | None = None,
    cycles: int = 3,
    period: float | None = None,
    rest: float | None = None,
    settle: float | None = None,
    converge_timeout: float = 30.0,
) -> list[Result]:
    need_root(NAME)
    namespaces = namespaces if namespaces is not None else (20 if quick else 100)
    churn = churn if churn is not None else (5 if quick else 20)
    period = period if period is not None else (4.0 if quick else 10.0)
    rest = rest if rest is not None else (5.0 if quick else 30.0)
    settle = settle if settle is not None else (2.0 if quick else 5.0)
    tag = run_tag()
    bridge = f"skbbr{tag}"
    at_rest = _pairs("rest", tag, namespaces)
    churning = _pairs("churn", tag, churn)
    kernel = Kernel()
    results: list[Result] = []
    try:
        kernel.will_create(links=[bridge])
        Kernel.batch([f"link add {bridge} type bridge", f"link set {bridge} up"])
        create_pairs(kernel, bridge, at_rest)
        with cluster(NAME) as c:
            analyzer, port = c.analyzer(f"skbsa{tag}")
            t_start = time.monotonic()
            agent = c.agent(f"skbsg{tag}", port)
            agent_port = int(agent.env["SKYDIVE_AGENT_LISTEN"].rsplit(":", 1)[1])
            first, took = converge(port, 120.0)
            if took is None:
                raise BenchError(
                    f"the analyzer never showed the {namespaces} namespaces: {first.summary()}"
                )
            t_full = time.monotonic() - t_start
            pids = {"agent": agent.pid, "analyzer": analyzer.pid}

            time.sleep(settle)
            rest_window = CpuWindow(pids).start()
            time.sleep(rest)
            cpu_rest = rest_window.stop()
            rss_rest = {name: rss_bytes(pid) / MIB for name, pid in pids.items()}
            fds_rest = (open_fds(agent.pid), threads(agent.pid))
            agent.check_alive()
            analyzer.check_alive()

            window = CpuWindow(pids)
            with RssSampler(pids) as sampler:
                window.start()
                t_churn = t_last_delete = time.monotonic()
                for cycle in range(cycles):
                    t_cycle = t_churn + cycle * period
                    create_pairs(kernel, bridge, churning)
                    _sleep_until(t_cycle + period / 2)
                    delete_pairs(kernel, churning)
                    t_last_delete = time.monotonic()
                    _sleep_until(t_cycle + period)
                cpu_churn = window.stop()
            rss_churn = {name: n / MIB for name, n in sampler.max.items()}
            agent.check_alive()
            analyzer.check_alive()

            final, took_converge = converge(port, converge_timeout)
            since_delete = time.monotonic() - t_last_delete
            agent_final, _ = converge(agent_port, 5.0)
            rss_after = {name: rss_bytes(pid) / MIB for name, pid in pids.items()}
            fds_after = (open_fds(agent.pid), threads(agent.pid))
    finally:
        with signals_deferred():
            left = kernel.cleanup()
        if left:
            print(f"netns_scale: could not remove {left}", file=sys.stderr)

    conv = (
        f"exact {took_converge:.1f}s after the check began "
        f"({since_delete:.1f}s after the last delete)"
        if took_converge is not None
        else f"NOT exact after {converge_timeout:.0f}s: {final.summary()}"
    )
    setup = f"{namespaces} netns + veth on {bridge}, metrics_update 30 s"
    churn_note = (
        f"{cycles} cycles x {period:g}s, {churn} netns each, {window.seconds:.0f}s window; "
        f"{window.own['agent']:.2f}% excl. children; background {window.background:.0f}%"
    )
    results = [
        Result(
            NAME,
            "agent CPU at rest",
            cpu_rest["agent"],
            "%",
            ANCHOR_AGENT_CPU_REST,
            SOURCE,
            f"{rest:g}s window; {setup}; {rest_window.own['agent']:.2f}% excl. children; "
            f"background {rest_window.background:.0f}%",
        ),
        Result(NAME, "agent RSS at rest", rss_rest["agent"], "MiB", ANCHOR_AGENT_RSS_REST, SOURCE),
        Result(
            NAME,
            "agent CPU during churn",
            cpu_churn["agent"],
            "%",
            ANCHOR_AGENT_CPU_CHURN,
            SOURCE,
            churn_note,
        ),
        Result(NAME, "agent RSS peak during churn", rss_churn["agent"], "MiB"),
        Result(
            NAME,
            "agent RSS after churn",
            rss_after["agent"],
            "MiB",
            note=f"open fds {fds_rest[0]} at rest → {fds_after[0]} after; "
            f"threads {fds_rest[1]} → {fds_after[1]}",
        ),
        Result(
            NAME, "analyzer RSS at rest", rss_rest["analyzer"], "MiB", ANCHOR_ANALYZER_RSS, SOURCE
        ),
        Result(NAME, "analyzer RSS peak during churn", rss_churn["analyzer"], "MiB"),
        Result(NAME, "analyzer RSS after churn", rss_after["analyzer"], "MiB"),
        Result(NAME, "analyzer CPU at rest", cpu_rest["analyzer"], "%"),
        Result(NAME, "analyzer CPU during churn", cpu_churn["analyzer"], "%"),
        Result(
            NAME,
            "stale+duplicate nodes after churn",
            float(final.wrong),
            "nodes",
            ANCHOR_STALE,
            SOURCE,
            final.summary(),
        ),
        Result(NAME, "missing nodes after churn", float(final.missing), "nodes", note=conv),
        Result(
            NAME,
            "agent's own graph: stale+dup",
            float(agent_final.wrong),
            "nodes",
            note=agent_final.summary(),
        ),
        Result(
            NAME,
            f"startup to full graph ({namespaces} netns)",
            t_full,
            "s",
            note="agent start → analyzer graph exact",
        ),
    ]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="20 namespaces, 5 churned, short windows"
    )
    parser.add_argument("--namespaces", type=int, help="namespaces at rest (100)")
    parser.add_argument("--churn", type=int, help="namespaces created and deleted per cycle (20)")
    parser.add_argument("--cycles", type=int, default=3, help="churn cycles (3)")
    parser.add_argument("--period", type=float, help="seconds per churn cycle (10)")
    parser.add_argument("--rest", type=float, help="seconds of the at-rest window (30)")
    parser.add_argument(
        "--settle", type=float, help="seconds between full graph and rest window (5)"
    )
    parser.add_argument(
        "--converge", type=float, default=30.0, help="max seconds to wait for an exact graph"
    )
    args = parser.parse_args(argv)
    return run_main(
        lambda: run(
            quick=args.quick,
            namespaces=args.namespaces,
            churn=args.churn,
            cycles=args.cycles,
            period=args.period,
            rest=args.rest,
            settle=args.settle,
            converge_timeout=args.converge,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
