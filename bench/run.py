"""Run the benchmarks and print one table: ``python3 bench/run.py [--quick] [NAME ...]``.

Names: latency, netns_scale, sync, gremlin, ovs, flows, sflow, live, storage, storage_es
(default: all, in that order). A benchmark that fails is reported (with its reason) and the
others still run; the exit status is 1 if any failed.
``--json FILE`` also writes every figure as JSON. Benchmarks report, they never assert.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flows
import gremlin
import latency
import live
import netns_scale
import ovs
import sflow
import storage
import storage_es
import sync
from harness import BenchError, Result, format_table, install_signal_handlers

BENCHMARKS: dict[str, Callable[..., list[Result]]] = {
    latency.NAME: latency.run,
    netns_scale.NAME: netns_scale.run,
    sync.NAME: sync.run,
    gremlin.NAME: gremlin.run,
    ovs.NAME: ovs.run,
    flows.NAME: flows.run,
    sflow.NAME: sflow.run,
    live.NAME: live.run,
    storage.NAME: storage.run,
    storage_es.NAME: storage_es.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    install_signal_handlers()
    try:
        return _run(args.names or list(BENCHMARKS), quick=args.quick, json_path=args.json)
    except KeyboardInterrupt:
        print("interrupted (kernel objects and processes cleaned up)", file=sys.stderr)
        return 130


def _run(names: list[str], *, quick: bool, json_path: str | None) -> int:
    results: list[Result] = []
    failed: list[str] = []
    started = datetime.datetime.now(datetime.UTC)
    for name in names:
        print(f"== {name}{' (quick)' if quick else ''} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            got = BENCHMARKS[name](quick=quick)
        except BenchError as exc:
            failed.append(name)
            got = [Result(name, "FAILED", None, "", note=str(exc).splitlines()[0])]
            print(f"{name}: {exc}", file=sys.stderr)
        except Exception as exc:
            failed.append(name)
            got = [Result(name, "FAILED", None, "", note=f"{type(exc).__name__}: {exc}")]
            traceback.print_exc()
        if name not in failed and any(r.metric == "FAILED" for r in got):
            failed.append(name)  # a part of it could not run (its row says why)
        print(f"   {name} took {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
        results.extend(got)
    load = os.getloadavg()
    print(
        f"# {started:%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        f"{', quick' if quick else ''}"
    )
    print(format_table(results))
    if json_path:
        Path(json_path).write_text(
            json.dumps(
                {
                    "started": started.isoformat(),
                    "quick": quick,
                    "host": platform.node(),
                    "results": [r.as_dict() for r in results],
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
