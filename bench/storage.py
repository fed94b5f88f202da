"""The embedded store (pyskydive.storage.embedded): flow ingest, top talkers, ``At()``, disk.

In-process, no server, no root. One :class:`EmbeddedStore` in a temporary directory:

1. **Ingest**: a seeded stream of flow updates (wire dicts as the flow table ships them:
   every section, ``LastUpdateMetric``; flows start in time order over two hours; one update
   in five re-updates one of 50,000 recent flows, 60 s later) is
   handed to ``write_flows`` in chunks of 25,000, 500,000 at a time (``--window``; the
   store's queue holds a window), and the clock stops when ``flush()`` returns: the writer
   thread has committed everything. Generating the dicts is not timed (it is done between the
   timed windows). A window is two of the store's 250,000-flow batches: the store serializes
   one while DuckDB writes the other, and a flush per batch would time that pipeline empty
   (``--window 250000``: the figure of the earlier runs, for comparison). Until 5,000,000
   distinct flows are stored (``--quick``: 500,000). The figure is µs per update (target 10,
   i.e. 100,000 updates/s). The store stages batches as Arrow columns when the C extension is
   built; the same updates then go through the NDJSON fallback, into a store of their own,
   for a second figure (``--no-ndjson`` skips it).
2. **Top-10 talkers** over all stored flows: ``sum(Metric.ABBytes + Metric.BABytes)`` grouped
   by ``(Network.A, Network.B)``, the 10 largest. Median of 5 (after one warm-up); target 1 s.
3. **Disk**: bytes of the directory after ``close()`` (DuckDB checkpoints on close), per
   stored flow, the metric history (one row per update) included.
4. **``graph_at`` one hour back** on a 10,000-node graph (plus 9,999 edges) with two hours of
   history: every node gets revisions at random times (metadata changes: closure + new
   revision), 5 % are deleted and replaced. Median of 5 after one warm-up; target 1 s.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import MIB, SRC, BenchError, Result, run_main

if os.environ.get("BENCH_PYSKYDIVE_SRC"):
    sys.path.insert(0, str(SRC))

from pyskydive.storage.base import Revision
from pyskydive.storage.embedded import EmbeddedStore

NAME = "storage"
SEED = 20261127
EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR_MS = 3_600_000
CHUNK = 25_000
WINDOW = 500_000  # updates handed over between two flush() calls
TOP10 = (
    'SELECT "Network".A, "Network".B, sum("Metric".ABBytes + "Metric".BABytes) AS bytes '
    "FROM flows GROUP BY ALL ORDER BY bytes DESC LIMIT 10"
)


class FlowGen:
    """Seeded flow updates: ``total`` new flows starting in time order over two hours (as a
    flow table ships them), plus re-updates of recent ones."""

    def __init__(self, seed: int, total: int) -> None:
        self.rng = random.Random(seed)
        self.step = 2 * HOUR_MS / total
        self.sent = 0
        self.recent: list[dict[str, Any]] = []
        self.hosts = [f"10.{i // 250}.{i % 250}.{1 + i % 200}" for i in range(2000)]
        self.tids = [f"{self.rng.getrandbits(128):032x}" for _ in range(100)]

    def _new(self) -> dict[str, Any]:
        rng = self.rng
        self.sent += 1
        start = EPOCH_MS + int(self.sent * self.step) + rng.randrange(60_000)
        last = start + rng.randrange(60_000)
        ab_p, ba_p = rng.randrange(1, 1000), rng.randrange(1000)
        ab_b, ba_b = ab_p * rng.randrange(60, 1500), ba_p * rng.randrange(60, 1500)
        metric = {
            "ABPackets": ab_p,
            "ABBytes": ab_b,
            "BAPackets": ba_p,
            "BABytes": ba_b,
            "Start": start,
            "Last": last,
            "RTT": rng.randrange(100_000),
        }
        a, b = rng.choice(self.hosts), rng.choice(self.hosts[:200])
        return {
            "UUID": f"{rng.getrandbits(128):032x}",
            "LayersPath": "Ethernet/IPv4/TCP",
            "Application": "TCP",
            "TrackingID": f"{rng.getrandbits(128):032x}",
            "L3TrackingID": f"{rng.getrandbits(128):032x}",
            "NodeTID": rng.choice(self.tids),
            "CaptureID": "capture-1",
            "Start": start,
            "Last": last,
            "Metric": metric,
            "LastUpdateMetric": dict(metric),
            "Link": {
                "Protocol": "ETHERNET",
                "A": f"02:00:00:00:{rng.randrange(256):02x}:{rng.randrange(256):02x}",
                "B": f"02:00:00:01:{rng.randrange(256):02x}:{rng.randrange(256):02x}",
                "ID": 0,
            },
            "Network": {"Protocol": "IPV4", "A": a, "B": b, "ID": 0},
            "Transport": {"Protocol": "TCP", "A": rng.randrange(1024, 65536), "B": 443, "ID": 0},
            "TCPMetric": {
                "ABSynStart": start,
                "BASynStart": start + 1,
                "ABFinStart": 0,
                "BAFinStart": 0,
                "ABRstStart": 0,
                "BARstStart": 0,
            },
        }

    def _update(self, old: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        last = old["Last"] + 60_000
        delta = {
            "ABPackets": rng.randrange(100),
            "ABBytes": rng.randrange(100_000),
            "BAPackets": rng.randrange(100),
            "BABytes": rng.randrange(100_000),
            "Start": old["Last"],
            "Last": last,
            "RTT": old["Metric"]["RTT"],
        }
        m = old["Metric"]
        metric = {k: m[k] + delta[k] for k in ("ABPackets", "ABBytes", "BAPackets", "BABytes")}
        metric.update(Start=m["Start"], Last=last, RTT=m["RTT"])
        return {**old, "Last": last, "Metric": metric, "LastUpdateMetric": delta}

    def chunk(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            if self.recent and self.rng.random() < 0.2:
                i = self.rng.randrange(len(self.recent))
                self.recent[i] = self._update(self.recent[i])
                out.append(self.recent[i])
            else:
                flow = self._new()
                out.append(flow)
                if len(self.recent) < 50_000:
                    self.recent.append(flow)
                else:
                    self.recent[self.rng.randrange(50_000)] = flow
        return out


def make_history(nodes: int, seed: int) -> list[list[Revision]]:
    """Two hours of a ``nodes``-node graph as batches of revisions, in time order."""
    rng = random.Random(seed)
    t0 = EPOCH_MS
    events: list[tuple[int, int, Revision]] = []  # (time, order, revision)
    seq = 0

    def lifetime(node_id: str, born: int, dies: int | None) -> None:
        nonlocal seq
        changes = sorted(rng.randrange(born + 1, t0 + 2 * HOUR_MS) for _ in range(3))
        bounds = [born, *(c for c in changes if dies is None or c < dies)]
        for i, start in enumerate(bounds):
            end = bounds[i + 1] if i + 1 < len(bounds) else dies
            element = {
                "ID": node_id,
                "Host": "skbhost",
                "Metadata": {"Name": node_id, "Type": "veth", "MTU": 1500, "Rev": i},
                "CreatedAt": born,
                "UpdatedAt": start,
                "Revision": i + 1,
            }
            events.append((start, seq, Revision("node", node_id, element, start)))
            seq += 1
            if end is not None:
                events.append((end, seq, Revision("node", node_id, element, start, end)))
                seq += 1

    for n in range(nodes):
        node_id = f"node-{n}"
        if rng.random() < 0.05:  # deleted at some point, and replaced
            dies = t0 + rng.randrange(1, 2 * HOUR_MS)
            lifetime(node_id, t0, dies)
            lifetime(f"node-{n}-b", dies, None)
        else:
            lifetime(node_id, t0, None)
        if n:
            e = {"ID": f"edge-{n}", "Parent": "node-0", "Child": node_id, "Metadata": {}}
            events.append((t0, seq, Revision("edge", f"edge-{n}", e, t0)))
            seq += 1
    events.sort()
    return [[r for _, _, r in events[i : i + CHUNK]] for i in range(0, len(events), CHUNK)]


def _median_time(fn: Any, runs: int = 5) -> tuple[float, Any]:
    result = fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _ingest(
    store: EmbeddedStore, target_flows: int, seed: int, window: int
) -> tuple[int, float, list[float]]:
    """Hand the seeded updates to ``store`` a window at a time, each timed until ``flush()``
    returns: (updates, seconds, updates/s of each window)."""
    gen = FlowGen(seed, target_flows)
    updates = 0
    ingest_s = 0.0
    windows: list[float] = []
    while gen.sent < target_flows:
        batch = [gen.chunk(CHUNK) for _ in range(max(1, window // CHUNK))]
        t = time.perf_counter()
        for part in batch:
            store.write_flows(part)
        if not store.flush(600):
            raise BenchError("the store did not drain its queue in 600 s")
        took = time.perf_counter() - t
        ingest_s += took
        updates += sum(map(len, batch))
        windows.append(sum(map(len, batch)) / took)
    status = store.status()
    if status.dropped or status.extra["rejected"]:
        raise BenchError(f"updates lost during ingest: {status}")
    return updates, ingest_s, windows


def _ingest_result(
    metric: str, updates: int, ingest_s: float, windows: list[float], window: int, note: str
) -> Result:
    return Result(
        NAME,
        metric,
        1e6 * ingest_s / updates,
        "µs/update",
        10.0,
        "target 100k/s",
        f"{updates / ingest_s:,.0f} updates/s (first {window // 1000}k {windows[0]:,.0f}/s, "
        f"last {windows[-1]:,.0f}/s), {note}",
    )


def run(
    *,
    quick: bool = False,
    flows: int | None = None,
    nodes: int = 10_000,
    seed: int = SEED,
    window: int = WINDOW,
    ndjson: bool = True,
) -> list[Result]:
    target_flows = flows if flows is not None else (500_000 if quick else 5_000_000)
    results: list[Result] = []
    workdir = Path(tempfile.mkdtemp(prefix="skb-bench-storage-"))
    try:
        store = EmbeddedStore(workdir / "store", queue_size=window)
        staging = "Arrow batches (C)" if store.compiled else "NDJSON (no C extension)"
        updates, ingest_s, windows = _ingest(store, target_flows, seed, window)
        top_s, top = _median_time(lambda: store.sql(TOP10))
        stored = store.sql("SELECT count(*) FROM flows")[0][0]
        history_rows = store.sql("SELECT count(*) FROM metrics")[0][0]
        if len(top) != 10:
            raise BenchError(f"top talkers: {len(top)} rows")

        revisions = 0
        t = time.perf_counter()
        for part in make_history(nodes, seed):
            store.record(part)
            revisions += len(part)
        store.flush(600)
        record_s = time.perf_counter() - t
        at = EPOCH_MS + HOUR_MS
        at_s, (at_nodes, at_edges) = _median_time(lambda: store.graph_at(at))
        if not nodes <= len(at_nodes) <= nodes * 1.05:
            raise BenchError(f"graph_at: {len(at_nodes)} nodes, expected about {nodes}")
        if not store.close(600):
            raise BenchError("close timed out")
        disk = _du(workdir / "store")
        shape = f"{stored:,} flows, {history_rows:,} history rows"
        results.append(
            _ingest_result(
                f"flow update ingest ({'Arrow' if store.compiled else 'NDJSON'})",
                updates,
                ingest_s,
                windows,
                window,
                f"{updates:,} updates to {stored:,} flows, staged as {staging}, seed {seed}",
            )
        )
        if ndjson and store.compiled:  # the fallback path, same updates, a store of its own
            with EmbeddedStore(workdir / "ndjson", queue_size=window, compiled=False) as pure:
                results.append(
                    _ingest_result(
                        "flow update ingest (NDJSON)",
                        *_ingest(pure, target_flows, seed, window),
                        window,
                        "the same updates staged as NDJSON (no C extension, PYSKYDIVE_PURE=1)",
                    )
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return [
        *results,
        Result(NAME, "top-10 talkers (median)", top_s, "s", 1.0, "target", shape),
        Result(
            NAME,
            "disk per stored flow",
            disk / stored,
            "B",
            note=f"{disk / MIB:.0f} MiB, history included ({shape})",
        ),
        Result(
            NAME,
            "graph_at one hour back (median)",
            at_s,
            "s",
            1.0,
            "target",
            f"{len(at_nodes)} nodes, {len(at_edges)} edges of {revisions:,} revisions "
            f"(recorded in {record_s:.1f} s)",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="500,000 flows, not 5,000,000")
    parser.add_argument("--flows", type=int, help="distinct flows to store (5,000,000)")
    parser.add_argument("--nodes", type=int, default=10_000, help="graph nodes (10,000)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--window", type=int, default=WINDOW, help="updates per flush() (500,000)")
    parser.add_argument(
        "--no-ndjson", action="store_true", help="skip the ingest through the NDJSON fallback"
    )
    args = parser.parse_args(argv)
    return run_main(
        lambda: run(
            quick=args.quick,
            flows=args.flows,
            nodes=args.nodes,
            seed=args.seed,
            window=args.window,
            ndjson=not args.no_ndjson,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
