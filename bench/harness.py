"""Shared plumbing of the benchmarks: skydive processes, kernel objects, /proc figures, results.

Every kernel object a benchmark creates is named ``skb…`` and registered with a
:class:`Kernel` *before* it is created, so :meth:`Kernel.cleanup` removes it even when the
creation failed half-way, an assertion fired or the user pressed Ctrl-C (SIGTERM is turned
into ``KeyboardInterrupt`` by :func:`install_signal_handlers`, so ``finally`` blocks run for it
too). Skydive processes are started with ``python -m pyskydive.cli.main`` on free loopback
ports, in their own session, and ended by their PID only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
#: The pyskydive tree under test; BENCH_PYSKYDIVE_SRC=DIR benchmarks another checkout's src/.
SRC = Path(os.environ.get("BENCH_PYSKYDIVE_SRC") or ROOT / "src")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


class BenchError(Exception):
    """A benchmark could not produce its figures (setup failed, product misbehaved)."""


# -- results ----------------------------------------------------------------------------------


@dataclass
class Result:
    """One figure. ``anchor`` is what we compare against (lower is better for every figure)."""

    bench: str
    metric: str
    value: float | None
    unit: str
    anchor: float | None = None
    anchor_source: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.anchor:
            return None
        return self.value / self.anchor

    def as_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "anchor": self.anchor,
            "anchor_source": self.anchor_source,
            "ratio": self.ratio,
            "note": self.note,
        }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value):
        return f"{int(value)}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_table(results: Iterable[Result]) -> str:
    header = ("benchmark", "metric", "ours", "unit", "anchor", "ours/anchor", "note")
    rows = [header]
    for r in results:
        ratio = r.ratio
        rows.append(
            (
                r.bench,
                r.metric,
                _fmt(r.value),
                r.unit,
                _fmt(r.anchor) + (f" ({r.anchor_source})" if r.anchor_source else ""),
                "-" if ratio is None else f"{ratio:.2f}",
                r.note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) for i in range(len(widths))]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(lines)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 1,000 samples is the 990th smallest)."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- signals ------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """SIGTERM (and SIGHUP) behave like Ctrl-C: unwind, running every ``finally``. SIGINT is
    re-armed too, in case it was inherited ignored (a background job of a script)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        signal.signal(signal.SIGHUP, _raise_interrupt)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while cleaning up, so a second Ctrl-C cannot cut it short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def run_main(bench: Callable[[], list[Result]]) -> int:
    """The body of a benchmark module's ``main``: run it, print its table, exit status."""
    install_signal_handlers()
    try:
        results = bench()
    except KeyboardInterrupt:
        print("interrupted (kernel objects and processes cleaned up)", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(format_table(results))
    return 0


# -- small helpers --------------------------------------------------------------------------


def need_root(bench: str) -> None:
    if os.geteuid() != 0:
        raise BenchError(f"{bench} needs root (it creates network namespaces and interfaces)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_tag() -> str:
    """Three hex digits that keep this run's kernel object names apart from another run's."""
    return f"{os.getpid() % 4096:03x}"


def sh(args: list[str], *, check: bool = True, stdin: str | None = None) -> str:
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, step: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy, or raise :class:`BenchError`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(step)


# -- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """CPU time of a process, in seconds: utime + stime of all its threads, plus cutime +
    cstime, the time of the children it has waited for (a helper forked to open a namespace,
    say: that work is the process's own)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of proc(5)): utime, stime, cutime, cstime are 14-17.
    return sum(int(v) for v in fields[11 : 15 if children else 13]) / CLK_TCK


def status_field(pid: int, key: str) -> int:
    """An integer field of /proc/PID/status (``VmRSS`` and ``VmHWM`` are in kB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


def rss_bytes(pid: int, key: str = "VmRSS") -> int:
    """``VmRSS`` (or ``VmHWM``, the peak) of a process, in bytes."""
    return status_field(pid, key) * 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    return status_field(pid, "Threads")


def system_busy_seconds() -> float:
    """CPU time all cores spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class CpuWindow:
    """CPU use of some processes between :meth:`start` and :meth:`stop`, as % of one core
    (:attr:`percent`: with the children they waited for; :attr:`own`: without), and
    :attr:`background`: what everything else on the machine used meanwhile (all cores busy,
    minus those processes and this one), a measure of how noisy the window was."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t0 = 0.0
        self._c0: dict[str, tuple[float, float]] = {}
        self.percent: dict[str, float] = {}
        self.own: dict[str, float] = {}
        self.background = 0.0
        self.seconds = 0.0

    def _read(self) -> dict[str, tuple[float, float]]:
        got = {
            name: (cpu_seconds(pid), cpu_seconds(pid, children=False))
            for name, pid in self.pids.items()
        }
        got[" self"] = (cpu_seconds(os.getpid()), 0.0)
        got[" system"] = (system_busy_seconds(), 0.0)
        return got

    def start(self) -> CpuWindow:
        self._c0 = self._read()
        self._t0 = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        c1 = self._read()
        self.seconds = time.monotonic() - self._t0

        def pct(name: str, i: int = 0) -> float:
            return 100.0 * (c1[name][i] - self._c0[name][i]) / self.seconds

        for name in self.pids:
            self.percent[name] = pct(name)
            self.own[name] = pct(name, 1)
        others = pct(" system") - pct(" self") - sum(self.percent.values())
        self.background = max(0.0, others)
        return self.percent


class RssSampler:
    """Samples VmRSS of some processes every ``interval`` seconds in a thread (max and last)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        self.pids = pids
        self.interval = interval
        self.max: dict[str, int] = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError, BenchError):
                self.max[name] = max(self.max[name], rss_bytes(pid))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# -- kernel objects -------------------------------------------------------------------------


@dataclass
class Kernel:
    """Network namespaces and root-namespace links of one benchmark, always removed.

    Names are recorded *before* the object is made (:meth:`will_create`), so a failure half-way
    through a batch still leaves nothing behind. Links inside a namespace go with it.
    """

    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def will_create(
        self, *, netns: Iterable[str] = (), links: Iterable[str] = (), check: bool = True
    ) -> None:
        for name in (*netns, *links):
            if check and not name.startswith("skb"):
                raise ValueError(f"benchmark kernel objects are named skb*: {name!r}")
        self.netns.extend(n for n in netns if n not in self.netns)
        self.links.extend(n for n in links if n not in self.links)

    def forget(self, *, netns: Iterable[str] = (), links: Iterable[str] = ()) -> None:
        gone_ns, gone_links = set(netns), set(links)
        self.netns = [n for n in self.netns if n not in gone_ns]
        self.links = [n for n in self.links if n not in gone_links]

    @staticmethod
    def batch(lines: Iterable[str], *, force: bool = False) -> None:
        """Run ``ip -batch`` (``-force``: carry on past errors, for deletions)."""
        text = "".join(f"{line}\n" for line in lines)
        if not text:
            return
        args = ["ip", "-force", "-batch", "-"] if force else ["ip", "-batch", "-"]
        proc = subprocess.run(args, input=text, capture_output=True, text=True, check=False)
        if proc.returncode != 0 and not force:
            raise BenchError(f"ip -batch failed: {proc.stderr.strip()}")

    def delete(self, *, netns: Iterable[str] = (), links: Iterable[str] = ()) -> None:
        ns, ln = list(netns), list(links)
        self.batch([f"link del {n}" for n in ln] + [f"netns del {n}" for n in ns], force=True)
        self.forget(netns=ns, links=ln)

    def cleanup(self) -> list[str]:
        """Remove everything registered; return what is still there afterwards (should be [])."""
        with signals_deferred():
            self.batch(
                [f"link del {n}" for n in self.links] + [f"netns del {n}" for n in self.netns],
                force=True,
            )
            left = set(self.netns) & set(list_netns())
            deadline = time.monotonic() + 5.0
            while True:  # a deleted namespace's veth ends vanish asynchronously
                left_links = set(self.links) & set(list_links())
                if not left_links or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.netns.clear()
            self.links.clear()
        return sorted(left | left_links)


def list_netns() -> list[str]:
    """``ip netns list`` names."""
    return [line.split()[0] for line in sh(["ip", "netns", "list"]).splitlines() if line.strip()]


def list_links(netns: str | None = None) -> list[str]:
    """Interface names, in the root namespace or in ``netns``."""
    args = ["ip", "-o", "link", "show"] if netns is None else ["ip", "-n", netns, "-o", "link"]
    names = []
    for line in sh(args, check=netns is None).splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def list_links_all_netns(prefix: str) -> dict[str, list[str]]:
    """Interface names inside every namespace whose name starts with ``prefix`` (one command)."""
    out = sh(["ip", "-all", "netns", "exec", "ip", "-o", "link", "show"], check=False)
    result: dict[str, list[str]] = {}
    current: str | None = None
    for line in out.splitlines():
        if line.startswith("netns: "):
            name = line[len("netns: ") :].strip()
            current = name if name.startswith(prefix) else None
            if current is not None:
                result[current] = []
            continue
        if current is None:
            continue
        parts = line.split(":", 2)
        if len(parts) >= 2:
            result[current].append(parts[1].strip().split("@", 1)[0])
    return result


# -- skydive processes ----------------------------------------------------------------------


class Skydive:
    """One ``skydive <command>`` subprocess with its own ports, host ID and log file."""

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.command = command
        self.env = env
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError(f"{self.command} is not running")
        return self.proc.pid

    @property
    def host_id(self) -> str:
        return self.env["SKYDIVE_HOST_ID"]

    def start(self) -> Skydive:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pyskydive.cli.main", self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C does not reach it; we stop it ourselves
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc is not None else None
            tail = self.log_tail()
            last = tail.strip().splitlines()[-1] if tail.strip() else "(empty log)"
            raise BenchError(
                f"skydive {self.command} exited (status {code}) during the benchmark; "
                f"last log line: {last}\n{tail}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


class Cluster:
    """The skydive processes of one benchmark; :meth:`stop_all` ends every one it started."""

    def __init__(self, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"skb-bench-{name}-"))
        self.procs: list[Skydive] = []
        self.keep_logs = False

    def spawn(self, command: str, *, host_id: str, extra: dict[str, str] | None = None) -> Skydive:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYDIVE_")}
        analyzer_port = free_port()
        env.update(
            SKYDIVE_HOST_ID=host_id,
            SKYDIVE_ANALYZER_LISTEN=f"127.0.0.1:{analyzer_port}",
            SKYDIVE_ANALYZERS=f"127.0.0.1:{analyzer_port}",
            SKYDIVE_AGENT_LISTEN=f"127.0.0.1:{free_port()}",
            SKYDIVE_LOGGING_LEVEL=os.environ.get("SKYDIVE_LOGGING_LEVEL", "INFO"),
            # its own store: captures or rules left in /var/lib/skydive must not run here
            SKYDIVE_ANALYZER_DATA_DIR=str(self.dir / f"data-{len(self.procs)}"),
            PYTHONPATH=os.pathsep.join(
                p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p
            ),
        )
        env.update(extra or {})
        proc = Skydive(command, env, self.dir / f"{command}-{len(self.procs)}.log")
        self.procs.append(proc)
        return proc.start()

    def analyzer(self, host_id: str) -> tuple[Skydive, int]:
        """Start an analyzer and wait for its API; return it and its port."""
        proc = self.spawn("analyzer", host_id=host_id)
        port = int(proc.env["SKYDIVE_ANALYZER_LISTEN"].rsplit(":", 1)[1])

        def up() -> bool:
            proc.check_alive()
            return api_up(port)

        wait_for("the analyzer's API", up, 30)
        return proc, port

    def agent(
        self, host_id: str, analyzer_port: int, extra: dict[str, str] | None = None
    ) -> Skydive:
        """Start an agent connected to the analyzer on ``analyzer_port``; wait until it is."""
        env = {"SKYDIVE_ANALYZERS": f"127.0.0.1:{analyzer_port}", **(extra or {})}
        proc = self.spawn("agent", host_id=host_id, extra=env)

        def connected() -> bool:
            proc.check_alive()
            agents = get_json(analyzer_port, "/api/status").get("Agents") or {}
            return host_id in agents

        try:
            wait_for(f"agent {host_id} to connect", connected, 60)
        except BenchError as exc:
            if not proc.alive():
                raise
            lines = proc.log_tail(20000).strip().splitlines()
            started = any(" started: " in line for line in lines)
            raise BenchError(
                f"{exc}; the agent is running but "
                + ("never connected" if started else "never finished starting")
                + f"; its last log line: {lines[-1] if lines else '(empty log)'}"
            ) from None
        return proc

    def stop_all(self) -> None:
        with signals_deferred():
            for proc in reversed(self.procs):  # agents before their analyzer
                proc.stop()
        if self.keep_logs:
            print(f"(skydive logs kept in {self.dir})", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tails(self) -> str:
        return "\n".join(f"---- {p.log_path.name}\n{p.log_tail()}" for p in self.procs)


@contextlib.contextmanager
def cluster(name: str) -> Iterator[Cluster]:
    c = Cluster(name)
    try:
        yield c
    except BaseException:
        c.keep_logs = True
        raise
    finally:
        c.stop_all()


def api_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def get_json(port: int, path: str, timeout: float = 30) -> dict[str, Any]:
    r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout)
    r.raise_for_status()
    data = r.json()
    if not isinstance(data, dict):
        raise BenchError(f"GET {path}: expected a JSON object")
    return data
