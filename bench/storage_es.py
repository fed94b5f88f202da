"""The Elasticsearch store (pyskydive.storage.elasticsearch): flow ingest against raw ``_bulk``.

One Elasticsearch node (tests/es/node.py: the test node, built from Maven Central jars, in a
JVM on a loopback port, in a temporary directory removed at the end) and two index prefixes
set up by :class:`ElasticsearchStore` (same templates, same mapping):

* **ours**: the seeded flow updates of bench/storage.py (``FlowGen``: every section,
  ``LastUpdateMetric``, one update in five a re-update) handed to ``write_flows`` in chunks
  of 25,000; the clock stops when ``flush()`` returns (written and refreshed). Generating the
  dicts is not timed; serialising them is (the store does it).
* **raw** (the anchor): the same updates as the same documents (the flow state, doc id its
  UUID; the metric history row, doc id ``UUID:Start:Last``) sent as ``_bulk`` requests of
  the same size, one after the other, through the official client, from NDJSON bodies
  serialised beforehand (not timed), then a refresh.

Each side ingests ``N`` updates (200,000; ``--quick``: 50,000), 25,000 at a time, the
sides alternating raw, ours, ours, raw, raw, ours... so that the drift of a shared machine
and of the node (JIT, merges, a fuller index) hits both alike. Figures: µs per update
(lower is better), ours/raw; the note gives the rates and the throughput ratio (raw time /
our time; target >= 0.8x). Also the CPU time per update of the node and of this process
while each side ran: what each side costs, whatever the other load of the machine.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, SRC, BenchError, Result, cpu_seconds, run_main

if os.environ.get("BENCH_PYSKYDIVE_SRC"):
    sys.path.insert(0, str(SRC))

import orjson

from pyskydive.storage.elasticsearch import ElasticsearchStore
from storage import SEED, FlowGen

NAME = "storage_es"
CHUNK = 25_000
BULK_DOCS = 10_000
EMBED = ("UUID", "LayersPath", "Application", "TrackingID", "L3TrackingID", "NodeTID")
EMBED_SECTIONS = ("Network", "Transport")


def _node_module() -> Any:
    name = "pyskydive_bench_es_node"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "es" / "node.py")
        if spec is None or spec.loader is None:
            raise BenchError("tests/es/node.py not found")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _raw_bodies(flows: list[dict[str, Any]], prefix: str) -> list[bytes]:
    """The same documents as ours, as plain ``_bulk`` bodies of BULK_DOCS documents."""
    flow_head = orjson.dumps({"index": {"_index": f"{prefix}flow"}})[:-2]
    metric_head = orjson.dumps({"index": {"_index": f"{prefix}metric"}})[:-2]
    lines: list[bytes] = []
    for f in flows:
        lines.append(flow_head + b',"_id":' + orjson.dumps(f["UUID"]) + b"}}\n")
        lines.append(orjson.dumps(f) + b"\n")
        m = f["LastUpdateMetric"]
        doc = {**m, "Flow": {k: f[k] for k in (*EMBED, *EMBED_SECTIONS) if k in f}}
        mid = f"{f['UUID']}:{m['Start']}:{m['Last']}"
        lines.append(metric_head + b',"_id":' + orjson.dumps(mid) + b"}}\n")
        lines.append(orjson.dumps(doc) + b"\n")
    step = 2 * BULK_DOCS
    return [b"".join(lines[i : i + step]) for i in range(0, len(lines), step)]


def _ours(store: ElasticsearchStore, chunks: list[list[dict[str, Any]]]) -> float:
    t = time.perf_counter()
    for part in chunks:
        store.write_flows(part)
    if not store.flush(1800):
        raise BenchError(f"the store did not drain its queue: {store.status()}")
    return time.perf_counter() - t


def _raw(client: Any, bodies: list[bytes], prefix: str) -> float:
    t = time.perf_counter()
    for body in bodies:
        resp = client.bulk(operations=body, filter_path=["errors", "items.*.error"])
        if resp.get("errors"):
            raise BenchError(f"raw _bulk refused documents: {str(resp)[:300]}")
    client.indices.refresh(index=f"{prefix}flow,{prefix}metric")
    return time.perf_counter() - t


def run(
    *,
    quick: bool = False,
    updates: int | None = None,
    seed: int = SEED,
    concurrency: int = 2,
) -> list[Result]:
    import elasticsearch

    total = updates if updates is not None else (50_000 if quick else 200_000)
    half = max(CHUNK, total // 2 // CHUNK * CHUNK)
    node_mod = _node_module()
    workdir = Path(tempfile.mkdtemp(prefix="skb-bench-es-"))
    try:
        try:
            build_dir = node_mod.build()
        except node_mod.EsNodeUnavailable as exc:
            raise BenchError(f"no Elasticsearch node: {exc}") from exc
        node = node_mod.EsNode(workdir / "node", build_dir=build_dir)
        node.start()
        try:
            return _measure(node, elasticsearch, half, seed, concurrency)
        finally:
            node.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _measure(node: Any, elasticsearch: Any, half: int, seed: int, concurrency: int) -> list[Result]:
    ours_prefix, raw_prefix = "skbours_", "skbraw_"
    raw_store = ElasticsearchStore([node.url], index_prefix=raw_prefix)  # same layout
    raw_store.close()
    client = elasticsearch.Elasticsearch(node.url, request_timeout=300)
    store = ElasticsearchStore(
        [node.url], index_prefix=ours_prefix, queue_size=4 * CHUNK, concurrency=concurrency
    )
    gens = {"ours": FlowGen(seed, 2 * half), "raw": FlowGen(seed, 2 * half)}
    took = {"ours": 0.0, "raw": 0.0}
    jvm = {"ours": 0.0, "raw": 0.0}  # CPU seconds of the node
    own = {"ours": 0.0, "raw": 0.0}  # CPU seconds of this process
    pieces = 2 * half // CHUNK
    order = [("raw", "ours", "ours", "raw")[i % 4] for i in range(2 * pieces)]
    try:
        for side in order:  # raw, ours, ours, raw, raw, ours...: drift hits both alike
            chunk = gens[side].chunk(CHUNK)
            bodies = _raw_bodies(chunk, raw_prefix) if side == "raw" else []
            gc.collect()  # the generator's garbage-collection debt is not either side's
            jvm0, own0 = cpu_seconds(node.pid), time.process_time()
            if side == "raw":
                took["raw"] += _raw(client, bodies, raw_prefix)
            else:
                took["ours"] += _ours(store, [chunk])
            jvm[side] += cpu_seconds(node.pid) - jvm0
            own[side] += time.process_time() - own0
        status = store.status()
        if status.dropped or status.extra["rejected"]:
            raise BenchError(f"updates lost: {status}")
        counts = {
            side: client.count(index=f"{prefix}flow")["count"]
            + client.count(index=f"{prefix}metric")["count"]
            for side, prefix in (("ours", ours_prefix), ("raw", raw_prefix))
        }
        if counts["ours"] != counts["raw"]:
            raise BenchError(f"different documents stored: {counts}")
    finally:
        store.close(600)
        client.close()
    n = 2 * half
    docs = counts["ours"]
    rate = {side: n / took[side] for side in took}
    return [
        Result(
            NAME,
            "flow update ingest, ours vs raw _bulk",
            1e6 * took["ours"] / n,
            "µs/update",
            1e6 * took["raw"] / n,
            "raw _bulk",
            f"ours {rate['ours']:,.0f} updates/s ({docs / took['ours']:,.0f} docs/s), "
            f"raw {rate['raw']:,.0f} updates/s ({docs / took['raw']:,.0f} docs/s): "
            f"ours/raw throughput {took['raw'] / took['ours']:.2f}x (target >= 0.8x); "
            f"{n:,} updates, {docs:,} documents each, {CHUNK:,} at a time alternating, "
            f"{concurrency} request(s) in flight, seed {seed}",
        ),
        Result(
            NAME,
            "node CPU per update, ours vs raw",
            1e6 * jvm["ours"] / n,
            "µs/update",
            1e6 * jvm["raw"] / n,
            "raw _bulk",
            "the Elasticsearch JVM's CPU time (/proc/PID/stat) while each side ran",
        ),
        Result(
            NAME,
            "client CPU per update, ours vs raw",
            1e6 * own["ours"] / n,
            "µs/update",
            1e6 * own["raw"] / n,
            "raw _bulk",
            "this process's CPU time: ours serialises in it, raw's bodies were made "
            "beforehand (not counted)",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="50,000 updates, not 200,000")
    parser.add_argument("--updates", type=int, help="flow updates per side (200,000)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--concurrency", type=int, default=2, help="the store's requests in flight (2)"
    )
    args = parser.parse_args(argv)
    return run_main(
        lambda: run(
            quick=args.quick, updates=args.updates, seed=args.seed, concurrency=args.concurrency
        )
    )


if __name__ == "__main__":
    sys.exit(main())
