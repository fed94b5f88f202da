"""sFlow v5 datagrams → flow table: ours (``feed_sflow``, compiled and pure) against sfacctd.

Input: a seeded pcap of sFlow v5 datagrams (Ethernet/IPv4/UDP to port 6343), made like Open
vSwitch's (``ovs-vsctl ... header=128``): compact flow samples of two records each, an
extended switch record (0:1001) and a sampled header (0:1, Ethernet, the first 128 bytes of a
frame of :mod:`gen_pcap`'s conversations, 2,000 of them), as many samples as fit in a
1,400-byte datagram (7), and every 20th datagram also carries a generic interface counter
sample (0:1), as OVS's counter polling does. 500,000 flow samples (``--quick``: 100,000).

* ours: ``python3 bench/sflow.py --worker compiled|pure FILE`` cuts the UDP payloads out of the
  pcap first (not timed), then times :func:`pyskydive.flow.fast.feed_sflow` over every
  datagram at the packet's own time, a table tick once per second of it, and the final flush
  of every flow as its wire dict;
* ``sfacctd`` (pmacct) with ``pcap_savefile: FILE`` and the ``print`` plugin (5-tuple, MACs,
  VLAN). Like pmacctd it sleeps 2 s before reading a savefile and hands records to its plugin
  process through a pipe, so its figure is samples / CPU seconds (user + system, all its
  processes); the note gives the wall time.

Figures are ns per flow sample (lower is better) against sfacctd; the note gives samples/s and
the speed ratio. Both run pinned to one CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_pcap
from flows import _cpu, _timed, _worker_env
from harness import BenchError, Result, run_main

NAME = "sflow"
HERE = Path(__file__).resolve().parent
HEADER = 128
SAMPLES_PER_DATAGRAM = 7
COUNTERS_EVERY = 20
_GENERIC = struct.Struct(">IIQIIQIIIIIIQIIIIII")  # 0:1 generic interface counters


def _udp_frame(payload: bytes, seq: int) -> bytes:
    src, dst = bytes((192, 0, 2, 1)), bytes((192, 0, 2, 2))
    udp = struct.pack("!HHHH", 40000, 6343, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), seq & 0xFFFF, 0x4000, 64, 17, 0)
    eth = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
    return eth + ip + src + dst + udp


def generate(path: Path, samples: int, seed: int = 1) -> Path:
    rng = random.Random(seed)
    convs = [gen_pcap._Conv(rng, i) for i in range(2000)]
    seqs = [0] * len(convs)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    ts = gen_pcap.T0_NS
    done = 0
    dgram_seq = 0
    while done < samples:
        body = []
        count = min(SAMPLES_PER_DATAGRAM, samples - done)
        for _ in range(count):
            c = rng.randrange(len(convs))
            frame, wire = convs[c].frame(rng.random() < 0.6, seqs[c], False)
            seqs[c] += 1
            head = frame[:HEADER]
            pad = b"\x00" * (-len(head) % 4)
            raw = struct.pack(">IIII", 1, wire + 4, 4, len(head)) + head + pad
            switch = struct.pack(">IIII", 0, 0, 0, 0)
            recs = (
                struct.pack(">II", 1001, len(switch))
                + switch
                + struct.pack(">II", 1, len(raw))
                + raw
            )
            done += 1
            sample = struct.pack(">IIIIIIII", done, 3, 1, 0, 0, 2, 3, 2) + recs
            body.append(struct.pack(">II", 1, len(sample)) + sample)
        if dgram_seq % COUNTERS_EVERY == 0:
            gen = _GENERIC.pack(2, 6, 10_000_000_000, 1, 3, *([1000] * 14))
            rec = struct.pack(">II", 1, len(gen)) + gen
            cs = struct.pack(">III", dgram_seq, 2, 1) + rec
            body.append(struct.pack(">II", 2, len(cs)) + cs)
        dgram_seq += 1
        head = struct.pack(">II4sIIII", 5, 1, bytes((10, 0, 0, 1)), 0, dgram_seq, 1000, len(body))
        frame = _udp_frame(head + b"".join(body), dgram_seq)
        sec, ns = divmod(ts, 1_000_000_000)
        out.append(struct.pack("<IIII", sec, ns // 1000, len(frame), len(frame)) + frame)
        ts += 100_000  # 10,000 datagrams per second
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"".join(out))
    tmp.replace(path)
    return path


def cached(samples: int, seed: int = 1) -> Path:
    path = gen_pcap.cache_dir() / f"sflow-s{seed}-n{samples}.pcap"
    if not path.exists():
        generate(path, samples, seed)
    return path


def _sfacctd(pcap: Path, tmp: Path) -> tuple[float, str]:
    conf = tmp / "sfacctd.conf"
    conf.write_text(
        "daemonize: false\n"
        f"pcap_savefile: {pcap}\n"
        "plugins: print\n"
        "aggregate: src_mac, dst_mac, vlan, src_host, dst_host, src_port, dst_port, proto\n"
        "print_output: csv\n"
        f"print_output_file: {tmp / 'sfacct.csv'}\n"
        "print_refresh_time: 3600\n"
        "plugin_buffer_size: 102400\n"
        "plugin_pipe_size: 10240000\n"
    )
    wall, cpu, _ = _timed(["sfacctd", "-f", str(conf)])
    lines = (tmp / "sfacct.csv").read_text().count("\n") - 1 if (tmp / "sfacct.csv").exists() else 0
    return cpu, f"CPU {cpu:.2f}s (wall {wall:.1f}s incl. its 2 s savefile sleep); {lines} rows"


def run(quick: bool = False, samples: int | None = None) -> list[Result]:
    samples = samples or (100_000 if quick else 500_000)
    pcap = cached(samples)
    pcap.read_bytes()
    anchor: float | None = None
    rows: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="skb-bench-sflow-") as d:
        if shutil.which("sfacctd") is None:
            rows.append(Result(NAME, "sfacctd", None, "ns/sample", note="not installed (pmacct)"))
        else:
            seconds, note = _sfacctd(pcap, Path(d))
            anchor = seconds / samples * 1e9
            rows.append(
                Result(NAME, "sfacctd", anchor, "ns/sample",
                       note=f"{samples / seconds / 1e6:.2f} M samples/s; {note}")
            )  # fmt: skip
    results: list[Result] = []
    for mode in ("compiled", "pure"):
        _w, _c, done = _timed(
            [sys.executable, str(HERE / "sflow.py"), "--worker", mode, str(pcap)],
            env=_worker_env(),
        )
        got = json.loads(done.stdout.strip().splitlines()[-1])
        if got["samples"] != samples:
            raise BenchError(f"ours ({mode}) fed {got['samples']} flow samples of {samples}")
        ns = got["seconds"] / samples * 1e9
        note = f"{samples / got['seconds'] / 1e6:.2f} M samples/s, {got['flows']} flows"
        if anchor:
            note += f"; {anchor / ns:.2f}x sfacctd's speed"
        if mode == "compiled" and not got["compiled"]:
            note = "NOT COMPILED (the extension did not load): " + note
        results.append(
            Result(NAME, f"sFlow → flows, ours ({mode})", ns, "ns/sample", anchor,
                   "sfacctd" if anchor else "", note)
        )  # fmt: skip
    results.extend(rows)
    results[0].note += f" [{samples:,} flow samples in {pcap.name}, CPU {_cpu()}]"
    return results


def _worker(mode: str, path: str) -> dict[str, Any]:
    from pyskydive.flow import FlowTable
    from pyskydive.flow.fast import COMPILED, FLUSH_AFTER_MS, feed_sflow
    from pyskydive.protocols.pcap import PcapReader

    reader = PcapReader()
    datagrams = [
        (rec.timestamp_ns // 1_000_000, rec.data[42:])
        for rec in reader.feed(Path(path).read_bytes())
    ]
    table = FlowTable("bench", "cap", accelerate=mode == "compiled")
    samples = counters = emitted = 0
    ticked = None
    t0 = time.perf_counter()
    now = 0
    for now, dg in datagrams:
        got = feed_sflow(table, dg, now)
        if got.error is not None:
            raise BenchError(f"datagram rejected: {got.error}")
        samples += got.flow_samples
        counters += len(got.counters)
        if ticked is None or now - ticked >= 1000:
            ticked = now
            updated, expired = table.tick(now)
            emitted += len([f.to_wire() for f in updated + expired])
    updated, expired = table.tick(now + FLUSH_AFTER_MS)
    emitted += len([f.to_wire() for f in updated + expired])
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "samples": samples,
        "counters": counters,
        "flows": table.stats.flows_created,
        "emitted": emitted,
        "compiled": COMPILED and table.accelerated,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="100,000 flow samples")
    parser.add_argument("--samples", type=int)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(*args.worker)))
        return 0
    return run_main(lambda: run(quick=args.quick, samples=args.samples))


if __name__ == "__main__":
    sys.exit(main())
