"""Event latency: a tap interface appears in the kernel → NodeAdded at an analyzer subscriber.

Set-up: one ``skydive analyzer`` process, one ``skydive agent`` process connected to it (default
probes: netlink, netns, ethtool), and this process as a WebSocket subscriber of the analyzer.

One cycle: ``t0`` is read immediately before the call that creates tap ``skblTTTNNNN``; the
subscriber thread stamps every message the moment ``recv()`` hands it over, and the latency is
the stamp of the NodeAdded whose ``Metadata.Name`` is that name minus ``t0``. The tap is then
deleted and the cycle waits for the matching NodeDeleted (also timed) before the next one.

The tap is created the way ``ip tuntap add NAME mode tap`` does it, without the fork/exec:
``TUNSETIFF`` + ``TUNSETPERSIST`` ioctls on ``/dev/net/tun`` (``--method ioctl``, the default;
the kernel sends RTM_NEWLINK during ``TUNSETIFF``). ``--method pyroute2`` uses
``IPRoute().link("add", kind="tuntap")`` and ``--method ip`` runs ``ip tuntap add`` (both add
their own overhead to the figure; the table shows the median time spent in the call itself).

Anchor (issue #2): the original Skydive, on this machine, p50 2.4 ms and p99 3.2 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from harness import (
    BenchError,
    CpuWindow,
    Kernel,
    Result,
    Skydive,
    cluster,
    median,
    need_root,
    percentile,
    run_main,
    run_tag,
    signals_deferred,
)

NAME = "latency"
ANCHOR_P50_MS = 2.4
ANCHOR_P99_MS = 3.2
ANCHOR_SOURCE = "original Skydive, issue #2"

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000

EVENT_TIMEOUT = 10.0


# -- creating and deleting a tap ------------------------------------------------------------


def _tun_attach(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def _ioctl_add(name: str) -> None:
    fd = _tun_attach(name)
    try:
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)


def _ioctl_del(name: str) -> None:
    fd = _tun_attach(name)  # re-attach to the persistent device...
    try:
        fcntl.ioctl(fd, TUNSETPERSIST, 0)  # ...make it transient...
    finally:
        os.close(fd)  # ...and closing the last fd removes it


class _Pyroute2:
    def __init__(self) -> None:
        from pyroute2 import IPRoute

        self.ipr = IPRoute()

    def add(self, name: str) -> None:
        self.ipr.link("add", ifname=name, kind="tuntap", mode="tap")

    def delete(self, name: str) -> None:
        self.ipr.link("del", ifname=name)

    def close(self) -> None:
        self.ipr.close()


def _ip_add(name: str) -> None:
    subprocess.run(["ip", "tuntap", "add", name, "mode", "tap"], check=True)


def _ip_del(name: str) -> None:
    subprocess.run(["ip", "link", "del", name], check=True)


# -- the subscriber -------------------------------------------------------------------------


class _Listener:
    """A subscriber of the analyzer; a thread stamps and queues NodeAdded/NodeDeleted by name."""

    def __init__(self, ws: ClientConnection, prefix: str) -> None:
        self.prefix = prefix
        self.events: queue.Queue[tuple[str, str, float]] = queue.Queue()
        self.error: BaseException | None = None
        self.ws = ws
        self.ws.send(orjson.dumps({"Namespace": "Graph", "Type": "SyncRequest", "Obj": {}}))
        deadline = time.monotonic() + 30
        while True:
            msg = orjson.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("Type") == "SyncReply":
                break
        self._needle = prefix.encode()
        self._thread = threading.Thread(target=self._run, name="subscriber", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        recv = self.ws.recv
        put = self.events.put
        clock = time.perf_counter
        try:
            while True:
                raw = recv(decode=False)
                stamp = clock()
                if self._needle not in raw:
                    continue
                msg = orjson.loads(raw)
                kind = msg.get("Type")
                if kind not in ("NodeAdded", "NodeDeleted"):
                    continue
                name = (msg.get("Obj") or {}).get("Metadata", {}).get("Name", "")
                if isinstance(name, str) and name.startswith(self.prefix):
                    put((kind, name, stamp))
        except ConnectionClosed as exc:
            self.error = exc
        except BaseException as exc:
            self.error = exc

    def wait(self, kind: str, name: str, timeout: float) -> float | None:
        """The stamp of event ``kind`` for ``name``; None if it does not come in time."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                got_kind, got_name, stamp = self.events.get(timeout=min(left, 1.0))
            except queue.Empty:
                if self.error is not None:
                    raise BenchError(f"subscriber connection lost: {self.error!r}") from None
                continue
            if got_kind == kind and got_name == name:
                return stamp

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self._thread.join(timeout=5)


class _KernelWatch:
    """Our own rtnetlink listener: when did the kernel announce each new link? (The floor that
    no netlink-based agent can beat, stamped the same way as the subscriber's messages.)"""

    RTMGRP_LINK = 1
    RTM_NEWLINK = 16
    IFLA_IFNAME = 3

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.first_seen: dict[str, float] = {}
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._sock.bind((0, self.RTMGRP_LINK))
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtnetlink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        clock = time.perf_counter
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # ENOBUFS after a burst: keep listening
                if self._stop.is_set():
                    return
                continue
            stamp = clock()
            for name in self._new_links(data):
                if name.startswith(self.prefix):
                    self.first_seen.setdefault(name, stamp)

    @classmethod
    def _new_links(cls, data: bytes) -> list[str]:
        names = []
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=LH", data, off)
            if length < 16:
                break
            end = min(off + length, len(data))
            attr = off + 16 + 16  # nlmsghdr, ifinfomsg
            while kind == cls.RTM_NEWLINK and attr + 4 <= end:
                alen, atype = struct.unpack_from("=HH", data, attr)
                if alen < 4:
                    break
                if atype & 0x3FFF == cls.IFLA_IFNAME:
                    names.append(data[attr + 4 : attr + alen].split(b"\0", 1)[0].decode())
                    break
                attr += (alen + 3) & ~3
            off += (length + 3) & ~3
        return names

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


def _warnings(log: str, keep: int = 3) -> list[str]:
    """The last distinct WARNING/ERROR messages of a skydive log."""
    found: list[str] = []
    for line in reversed(log.splitlines()):
        if " WARNING " in line or " ERROR " in line:
            text = line.split(": ", 1)[-1]
            if text not in found:
                found.append(text)
            if len(found) == keep:
                break
    return found


# -- the benchmark --------------------------------------------------------------------------


@dataclass
class _Samples:
    """Milliseconds per measured cycle, and the events that never came."""

    added: list[float] = field(default_factory=list)
    deleted: list[float] = field(default_factory=list)
    call: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    share: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)


def _cycles(
    listener: _Listener,
    watch: _KernelWatch,
    agent: Skydive,
    kernel: Kernel,
    ops: tuple[Callable[[str], None], Callable[[str], None]],
    *,
    prefix: str,
    warmup: int,
    cycles: int,
) -> _Samples:
    add, delete = ops
    got = _Samples()
    run_of_misses = 0
    for i in range(warmup + cycles):
        name = f"{prefix}{i:04d}"
        kernel.will_create(links=[name])
        t0 = time.perf_counter()
        add(name)
        t_call = time.perf_counter()
        t1 = listener.wait("NodeAdded", name, EVENT_TIMEOUT)
        t2 = time.perf_counter()
        delete(name)
        t3 = listener.wait("NodeDeleted", name, EVENT_TIMEOUT if t1 else 1.0)
        kernel.forget(links=[name])
        seen = watch.first_seen.pop(name, None)
        if t1 is None or t3 is None:
            agent.check_alive()
            got.missed.append(f"{name}: {'NodeAdded' if t1 is None else 'NodeDeleted'}")
            run_of_misses += 1
            if run_of_misses >= 3 or len(got.missed) > 10:
                raise BenchError(
                    f"events stopped reaching the subscriber ({got.missed[-3:]}); "
                    f"agent warnings: {_warnings(agent.log_tail(20000))}"
                )
            continue
        run_of_misses = 0
        if i >= warmup:
            got.added.append((t1 - t0) * 1e3)
            got.deleted.append((t3 - t2) * 1e3)
            got.call.append((t_call - t0) * 1e3)
            if seen is not None:
                got.floor.append((seen - t0) * 1e3)
                got.share.append((t1 - seen) * 1e3)
    return got


def run(
    *,
    quick: bool = False,
    cycles: int | None = None,
    warmup: int | None = None,
    method: str = "ioctl",
) -> list[Result]:
    need_root(NAME)
    cycles = cycles if cycles is not None else (100 if quick else 1000)
    warmup = warmup if warmup is not None else (5 if quick else 20)
    tag = run_tag()
    prefix = f"skbl{tag}"
    helper: _Pyroute2 | None = None
    ops: tuple[Callable[[str], None], Callable[[str], None]]
    if method == "ioctl":
        ops = (_ioctl_add, _ioctl_del)
    elif method == "pyroute2":
        helper = _Pyroute2()
        ops = (helper.add, helper.delete)
    elif method == "ip":
        ops = (_ip_add, _ip_del)
    else:
        raise BenchError(f"unknown method {method!r} (ioctl, pyroute2, ip)")

    kernel = Kernel()
    try:
        with cluster(NAME) as c:
            analyzer, port = c.analyzer(f"skbla{tag}")
            agent = c.agent(f"skblg{tag}", port)
            watch = _KernelWatch(prefix)
            url = f"ws://127.0.0.1:{port}/ws/subscriber"
            try:
                with connect(url, max_size=None, open_timeout=10) as ws:
                    listener = _Listener(ws, prefix)
                    window = CpuWindow({"agent": agent.pid, "analyzer": analyzer.pid}).start()
                    got = _cycles(
                        listener,
                        watch,
                        agent,
                        kernel,
                        ops,
                        prefix=prefix,
                        warmup=warmup,
                        cycles=cycles,
                    )
                    window.stop()
                    listener.close()
            finally:
                watch.close()
    finally:
        with signals_deferred():
            if helper is not None:
                helper.close()
            left = kernel.cleanup()
        if left:
            print(f"latency: could not remove {left}", file=sys.stderr)

    if not got.added:
        raise BenchError("no complete cycle")
    n = f"n={len(got.added)}"
    missed = f"; {len(got.missed)} missed: {got.missed[:3]}" if got.missed else ""
    p50, p99 = percentile(got.added, 50), percentile(got.added, 99)
    return [
        Result(NAME, "add→NodeAdded p50", p50, "ms", ANCHOR_P50_MS, ANCHOR_SOURCE, n + missed),
        Result(NAME, "add→NodeAdded p99", p99, "ms", ANCHOR_P99_MS, ANCHOR_SOURCE, n),
        Result(NAME, "add→NodeAdded max", max(got.added), "ms", note=n),
        Result(NAME, "del→NodeDeleted p50", percentile(got.deleted, 50), "ms", note="no anchor"),
        Result(NAME, "del→NodeDeleted p99", percentile(got.deleted, 99), "ms", note="no anchor"),
        Result(
            NAME,
            f"{method} add call (median)",
            median(got.call),
            "ms",
            note="time inside the creating call, included above",
        ),
        Result(
            NAME,
            "add→our own RTM_NEWLINK (median)",
            median(got.floor) if got.floor else None,
            "ms",
            note="the kernel's part: the floor for any netlink-based agent",
        ),
        Result(
            NAME,
            "own RTM_NEWLINK→NodeAdded p50",
            percentile(got.share, 50) if got.share else None,
            "ms",
            note="skydive's part (agent, link, analyzer, subscriber)",
        ),
        Result(
            NAME,
            "own RTM_NEWLINK→NodeAdded p99",
            percentile(got.share, 99) if got.share else None,
            "ms",
            note=f"n={len(got.share)}",
        ),
        Result(
            NAME,
            "background CPU during the run",
            window.background,
            "%",
            note=f"other processes, % of one core (noise); agent {window.percent['agent']:.0f}%, "
            f"analyzer {window.percent['analyzer']:.0f}%",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="100 cycles instead of 1,000")
    parser.add_argument("--cycles", type=int, help="measured add/delete cycles")
    parser.add_argument("--warmup", type=int, help="unmeasured cycles first")
    parser.add_argument("--method", choices=("ioctl", "pyroute2", "ip"), default="ioctl")
    args = parser.parse_args(argv)
    return run_main(
        lambda: run(quick=args.quick, cycles=args.cycles, warmup=args.warmup, method=args.method)
    )


if __name__ == "__main__":
    sys.exit(main())
