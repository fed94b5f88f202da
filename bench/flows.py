"""pcap → flow table on one core: ours (compiled, pure) against softflowd, nfpcapd, pmacctd.

Input: the seeded capture of :mod:`gen_pcap` (1,000,000 packets over 10,000 conversations;
``--quick``: 200,000 over 2,000). Every contender runs in its own process pinned to one CPU
(``taskset``) on the same file, already in the page cache:

* ours: ``python3 bench/flows.py --worker compiled|pure FILE`` reads the file in 1 MiB chunks
  into :class:`pyskydive.flow.fast.PcapFlowFeeder` (the ``POST /api/pcap`` path: the table
  ticks once per second of packet time, every flow is emitted as its wire dict at the end).
  Timed inside the process, around reading and feeding (interpreter start-up and imports, about
  0.1 s, are left out); the ``pure`` worker makes its table with ``accelerate=False``;
* ``softflowd -r FILE`` (NetFlow v5 export to a closed local port, ``-m`` large enough that no
  flow is expired early, ``-6`` to track IPv6, ``-c none``: with a control socket softflowd
  1.1.0 reading a file may block in ``accept()`` on it, its poll results being uninitialised);
* ``nfpcapd -r FILE -l DIR`` (nfdump; writes nfcapd files);
* ``pmacctd`` with ``pcap_savefile: FILE`` and the ``print`` plugin (5-tuple + MACs + VLAN,
  CSV). pmacctd sleeps 2 s before reading a savefile and hands packets to its plugin process
  through a pipe, so its wall time is not its speed: its figure is packets / CPU seconds (user +
  system of all its processes), and the note gives the wall time.

Figures are ns per packet (lower is better, like every figure here) against softflowd; the note
gives M packets/s and ours/softflowd as a speed ratio (higher is better there). A tool that is
not installed gets a row saying so (``apt-get install softflowd nfdump pmacct``).

Memory: ``--worker memory`` feeds one UDP packet each of N distinct flows (500,000; quick:
50,000) and reports (RSS after - RSS before) / N: the whole cost of a live flow, Python Flow
record and dict entry included, with and without the C table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_pcap
from harness import SRC, BenchError, Result, free_port, run_main

NAME = "flows"
HERE = Path(__file__).resolve().parent


def _cpu() -> str:
    """The CPU every contender is pinned to: the last one this process may use."""
    return str(max(os.sched_getaffinity(0)))


def _pinned(args: list[str]) -> list[str]:
    if shutil.which("taskset"):
        return ["taskset", "-c", _cpu(), *args]
    return args


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(args: list[str], **kw: Any) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall s, CPU s of the process and its children, result)."""
    cpu0 = _children_cpu()
    t0 = time.monotonic()
    done = subprocess.run(_pinned(args), capture_output=True, text=True, timeout=900, **kw)
    wall = time.monotonic() - t0
    cpu = _children_cpu() - cpu0
    if done.returncode != 0:
        raise BenchError(f"{args[0]} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return wall, cpu, done


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.pop("PYSKYDIVE_PURE", None)
    return env


def _ours(mode: str, pcap: Path) -> dict[str, Any]:
    _w, _c, done = _timed(
        [sys.executable, str(HERE / "flows.py"), "--worker", mode, str(pcap)], env=_worker_env()
    )
    got: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return got


def _softflowd(pcap: Path, tmp: Path) -> tuple[float, str]:
    wall, _cpu_s, _ = _timed(
        ["softflowd", "-r", str(pcap), "-n", f"127.0.0.1:{free_port()}", "-m", "2000000", "-6",
         "-d", "-p", str(tmp / "sf.pid"), "-c", "none"]
    )  # fmt: skip
    return wall, f"wall {wall:.2f}s"


def _nfpcapd(pcap: Path, tmp: Path) -> tuple[float, str]:
    out = tmp / "nfcapd"
    out.mkdir()
    wall, cpu, _ = _timed(["nfpcapd", "-r", str(pcap), "-l", str(out)])
    return wall, f"wall {wall:.2f}s, CPU {cpu:.2f}s (threads)"


def _pmacctd(pcap: Path, tmp: Path) -> tuple[float, str]:
    conf = tmp / "pmacctd.conf"
    conf.write_text(
        "daemonize: false\n"
        f"pcap_savefile: {pcap}\n"
        "plugins: print\n"
        "aggregate: src_mac, dst_mac, vlan, src_host, dst_host, src_port, dst_port, proto\n"
        "print_output: csv\n"
        f"print_output_file: {tmp / 'pmacct.csv'}\n"
        "print_refresh_time: 3600\n"
        "plugin_buffer_size: 102400\n"
        "plugin_pipe_size: 10240000\n"
    )
    wall, cpu, _ = _timed(["pmacctd", "-f", str(conf)])
    return cpu, f"CPU {cpu:.2f}s (wall {wall:.1f}s incl. its 2 s savefile sleep)"


_TOOLS = {
    "softflowd": (_softflowd, "softflowd"),
    "nfpcapd": (_nfpcapd, "nfdump"),
    "pmacctd": (_pmacctd, "pmacct"),
}


def run(quick: bool = False, packets: int | None = None, flows: int | None = None) -> list[Result]:
    packets = packets or (200_000 if quick else 1_000_000)
    flows = flows or (2_000 if quick else 10_000)
    pcap = gen_pcap.cached(packets, flows)
    pcap.read_bytes()  # into the page cache for everyone
    setup = f"{packets:,} packets, {flows:,} flows, CPU {_cpu()}"
    results: list[Result] = []
    anchor: float | None = None
    with tempfile.TemporaryDirectory(prefix="skb-bench-flows-") as d:
        tool_rows: list[Result] = []
        for tool, (fn, package) in _TOOLS.items():
            if shutil.which(tool) is None:
                tool_rows.append(
                    Result(NAME, f"{tool}", None, "ns/packet", note=f"not installed ({package})")
                )
                continue
            sub = Path(d) / tool
            sub.mkdir()
            seconds, note = fn(pcap, sub)
            ns = seconds / packets * 1e9
            if tool == "softflowd":
                anchor = ns
            tool_rows.append(
                Result(
                    NAME, tool, ns, "ns/packet", note=f"{packets / seconds / 1e6:.2f} Mpps; {note}"
                )
            )
        for mode in ("compiled", "pure"):
            got = _ours(mode, pcap)
            if got["packets"] != packets:
                raise BenchError(f"ours ({mode}) counted {got['packets']} packets of {packets}")
            ns = got["seconds"] / packets * 1e9
            mpps = packets / got["seconds"] / 1e6
            note = f"{mpps:.2f} Mpps, {got['flows']} flows"
            if anchor:
                note += f"; {anchor / ns:.2f}x softflowd's speed"
            if mode == "compiled" and not got["compiled"]:
                note = "NOT COMPILED (the extension did not load): " + note
            results.append(
                Result(NAME, f"pcap → flows, ours ({mode})", ns, "ns/packet", anchor,
                       "softflowd" if anchor else "", note)
            )  # fmt: skip
        results.extend(tool_rows)
    n_mem = 50_000 if quick else 500_000
    for mode in ("compiled", "pure"):
        _w, _c, done = _timed(
            [sys.executable, str(HERE / "flows.py"), "--worker", "memory", mode, str(n_mem)],
            env=_worker_env(),
        )
        mem = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(
            Result(
                NAME,
                f"memory per live flow ({mode})",
                mem["per_flow"],
                "bytes",
                note=f"RSS delta / {n_mem:,} live flows; "
                f"C table {mem['c_bytes'] / n_mem:.0f} B/flow",
            )
        )
    results[0].note += f" [{setup}]"
    return results


# -- workers (run in their own process) ------------------------------------------------------


def _worker_pcap(mode: str, path: str) -> dict[str, Any]:
    from pyskydive.flow import FlowTable
    from pyskydive.flow.fast import COMPILED, PcapFlowFeeder

    table = FlowTable("bench", "cap", accelerate=mode == "compiled")
    feeder = PcapFlowFeeder(table)
    emitted = 0
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            emitted += len(feeder.feed(chunk))
    emitted += len(feeder.finish())
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "packets": table.stats.packets,
        "flows": table.stats.flows_created,
        "emitted": emitted,
        "compiled": COMPILED and table.accelerated,
    }


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError("no VmRSS")


def _worker_memory(mode: str, n: int) -> dict[str, Any]:
    from pyskydive.flow import FlowTable

    table = FlowTable("bench", "cap", accelerate=mode == "compiled", max_entries=n + 1)
    head = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
    ip = struct.Struct("!BBHHHBBH4s4s")
    udp = struct.Struct("!HHHH")
    frame = bytearray(14 + 20 + 8)
    frame[:14] = head
    base = _rss()
    for i in range(n):
        src = (10 << 24 | i >> 8).to_bytes(4, "big")
        ip.pack_into(frame, 14, 0x45, 0, 28, 0, 0, 64, 17, 0, src, b"\xac\x10\x00\x01")
        udp.pack_into(frame, 34, 1024 + (i & 255), 53000, 8, 0)
        table.feed_frame(frame, 1_700_000_000_000 + i, 64)
    if len(table) != n:
        raise BenchError(f"{len(table)} live flows, wanted {n}")
    grown = _rss() - base
    fast = table._fast
    return {"per_flow": grown / n, "c_bytes": fast.memory() if fast is not None else 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="200,000 packets over 2,000 flows")
    parser.add_argument("--packets", type=int)
    parser.add_argument("--flows", type=int)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == "memory":
            got = _worker_memory(rest[0], int(rest[1]))
        else:
            got = _worker_pcap(kind, rest[0])
        print(json.dumps(got))
        return 0
    return run_main(lambda: run(quick=args.quick, packets=args.packets, flows=args.flows))


if __name__ == "__main__":
    sys.exit(main())
