"""Seeded pcap generator of the flow benchmarks: ``python3 bench/gen_pcap.py [--packets N]``.

The capture holds N packets (default 1,000,000) over F conversations (default 10,000), drawn
uniformly at random (seeded) so flows interleave as on a busy link: 60 % TCP (first packet SYN,
second SYN/ACK, last FIN/ACK, the rest ACK or PSH/ACK), 30 % UDP, 10 % ICMP echo (request one
way, reply the other); 15 % of the conversations are IPv6 and 10 % carry an 802.1Q tag. Frames
are captured with a 128-byte snapshot length, as ``tcpdump -s 128`` does: the headers are whole,
the original (wire) length is 64..1514 bytes and the IP length fields match it. Packets are 10 us
apart (100 kpps of packet time, so the flow table ticks about ten times per million packets).

Files are cached by their parameters under ``$XDG_CACHE_HOME/pyskydive-bench`` (or
``~/.cache/pyskydive-bench``): generating a million packets takes a few seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
from pathlib import Path

SNAPLEN = 128
T0_NS = 1_700_000_000 * 1_000_000_000
STEP_NS = 10_000
_REC = struct.Struct("<IIII")
SYN, FIN, PSH, ACK = 0x02, 0x01, 0x08, 0x10


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    d = Path(base) / "pyskydive-bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


class _Conv:
    """One conversation: its header templates, each way."""

    def __init__(self, rng: random.Random, i: int) -> None:
        r = rng.random()
        self.proto = 6 if r < 0.6 else 17 if r < 0.9 else 1
        self.v6 = rng.random() < 0.15
        if self.v6 and self.proto == 1:
            self.proto = 58
        self.vlan = rng.randrange(1, 4095) if rng.random() < 0.1 else None
        self.macs = (
            bytes((2, 0, rng.randrange(256), rng.randrange(256), i >> 8 & 255, i & 255)),
            bytes((2, 1, rng.randrange(256), rng.randrange(256), i >> 8 & 255, i & 255)),
        )
        if self.v6:
            self.ips = (
                b"\xfd\x00" + i.to_bytes(4, "big") + b"\x00" * 9 + b"\x01",
                b"\xfd\x00" + i.to_bytes(4, "big") + b"\x00" * 9 + b"\x02",
            )
        else:
            self.ips = (
                bytes((10, i >> 16 & 255, i >> 8 & 255, i & 255)),
                bytes((172, 16 + (i >> 16 & 15), rng.randrange(256), rng.randrange(1, 255))),
            )
        self.ports = (rng.randrange(1024, 65536), rng.choice((80, 443, 8080, 5201, 9000, 123)))
        self.ident = rng.randrange(65536)
        self.size = rng.choice((64, 90, 200, 576, 1000, 1514))

    def frame(self, forward: bool, seq: int, last: bool) -> tuple[bytes, int]:
        s, d = (0, 1) if forward else (1, 0)
        p = self.proto
        if p == 6:
            flags = SYN if seq == 0 else SYN | ACK if seq == 1 else ACK
            if last and seq > 1:
                flags = FIN | ACK
            elif seq > 1 and seq % 3 == 0:
                flags = PSH | ACK
            l4 = struct.pack(
                "!HHIIBBHHH", self.ports[s], self.ports[d], seq, seq, 5 << 4, flags, 1000, 0, 0
            )
        elif p == 17:
            l4 = struct.pack("!HHHH", self.ports[s], self.ports[d], 0, 0)
        else:
            t = (8 if forward else 0) if p == 1 else (128 if forward else 129)
            l4 = struct.pack("!BBHHH", t, 0, 0, self.ident, seq & 0xFFFF)
        l2 = self.macs[d] + self.macs[s]
        if self.vlan is not None:
            l2 += struct.pack("!HH", 0x8100, self.vlan)
        wire = max(self.size, len(l2) + (40 if self.v6 else 20) + len(l4) + 2)
        l3len = wire - len(l2) - 2
        if p == 17:
            l4 = l4[:4] + struct.pack("!H", l3len - (40 if self.v6 else 20)) + l4[6:]
        if self.v6:
            l3 = struct.pack("!IHBB", 6 << 28, l3len - 40, p, 64) + self.ips[s] + self.ips[d]
            et = 0x86DD
        else:
            l3 = (
                struct.pack("!BBHHHBBH", 0x45, 0, l3len, seq & 0xFFFF, 0x4000, 64, p, 0)
                + self.ips[s]
                + self.ips[d]
            )
            et = 0x0800
        frame = l2 + struct.pack("!H", et) + l3 + l4
        frame += b"\x00" * (min(wire, SNAPLEN) - len(frame))
        return frame, wire


def generate(path: Path, packets: int = 1_000_000, flows: int = 10_000, seed: int = 1) -> Path:
    """Write the capture to ``path`` (see the module docstring)."""
    rng = random.Random(seed)
    convs = [_Conv(rng, i) for i in range(flows)]
    picks = [rng.randrange(flows) for _ in range(packets)]
    totals = [0] * flows
    for c in picks:
        totals[c] += 1
    seen = [0] * flows
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, 1))
        chunk: list[bytes] = []
        ts = T0_NS
        for c in picks:
            conv = convs[c]
            seq = seen[c]
            seen[c] = seq + 1
            forward = seq % 2 == 0 if conv.proto not in (6,) or seq < 2 else rng.random() < 0.6
            frame, wire = conv.frame(forward, seq, seq == totals[c] - 1)
            sec, ns = divmod(ts, 1_000_000_000)
            chunk.append(_REC.pack(sec, ns // 1000, len(frame), wire) + frame)
            ts += STEP_NS
            if len(chunk) >= 65536:
                out.write(b"".join(chunk))
                chunk.clear()
        out.write(b"".join(chunk))
    tmp.replace(path)
    return path


def cached(packets: int = 1_000_000, flows: int = 10_000, seed: int = 1) -> Path:
    """The capture for these parameters, generated on first use."""
    path = cache_dir() / f"flows-s{seed}-p{packets}-f{flows}.pcap"
    if not path.exists():
        generate(path, packets, flows, seed)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--flows", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write here instead of the cache")
    args = parser.parse_args(argv)
    if args.out:
        path = generate(args.out, args.packets, args.flows, args.seed)
    else:
        path = cached(args.packets, args.flows, args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
