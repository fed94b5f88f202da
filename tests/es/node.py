"""A real Elasticsearch node for the storage tests, in a JVM, on a loopback port.

Elasticsearch is not packaged by Debian and only Maven Central is reachable, so the node is built
from Maven Central artifacts by ``tests/es/setup.sh`` (the server jar, its netty4 module, a small
launcher and a GET / plugin, see ``pom.xml``) and started here::

    node = EsNode(tmp_dir)      # home, data and logs under tmp_dir
    node.start()                # free loopback port; waits for yellow health
    node.url                    # "http://127.0.0.1:PORT"
    node.kill()                 # SIGKILL: a crash (acknowledged writes survive: translog)
    node.restart()              # same port, same data
    node.stop()                 # SIGTERM: clean shutdown

The JVM is ended by its PID only. It also exits by itself when its standard input (a pipe held
by this object) closes, so a test run that dies does not leave it behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

ES_DIR = Path(__file__).resolve().parent
SETUP = ES_DIR / "setup.sh"

# setup.sh's exit status for "a prerequisite (mvn, a JDK >= 21) is missing"
_UNAVAILABLE = 3

DEFAULT_JVM_OPTIONS = (
    # A small heap is plenty for tests (a node answers with ~300 MiB resident at rest).
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",  # 2 cores: no parallel GC threads to feed
    # C1 only: starts in about half the time, and short test workloads run faster than with C2
    # (measured here: start 3.7 s vs 6.9 s, a 10,000-document bulk 1.6 s vs 3.0 s)
    "-XX:TieredStopAtLevel=1",
    "-Xss1m",
    # from the distribution's jvm.options
    "-Dfile.encoding=UTF-8",
    "-Djava.locale.providers=CLDR",
    "-Des.networkaddress.cache.ttl=60",
    "-Dio.netty.noKeySetOptimization=true",
    "-Dio.netty.recycler.maxCapacityPerThread=0",
    "-Dlog4j.shutdownHookEnabled=false",
    "-Dlog4j2.disable.jmx=true",
    "-Dlog4j2.formatMsgNoLookups=true",
    "--enable-native-access=ALL-UNNAMED",
)


class EsNodeUnavailable(RuntimeError):
    """A prerequisite of the node (mvn, a JDK >= 21) is missing on this machine."""


def build(timeout: float = 900.0) -> Path:
    """Run setup.sh (quick when up to date) and return the build directory.

    Raises EsNodeUnavailable when a prerequisite is missing, RuntimeError when the build fails.
    """
    if shutil.which("bash") is None:
        raise EsNodeUnavailable("bash not found")
    proc = subprocess.run(
        ["bash", str(SETUP)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode == _UNAVAILABLE:
        raise EsNodeUnavailable(proc.stderr.strip() or "tests/es/setup.sh: prerequisite missing")
    if proc.returncode != 0:
        raise RuntimeError(
            f"tests/es/setup.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EsNode:
    """One single-node Elasticsearch cluster in a JVM that this object starts and ends."""

    def __init__(
        self,
        base_dir: Path | str | None = None,
        *,
        port: int | None = None,
        cluster_name: str = "pyskydive-test",
        settings: dict[str, str] | None = None,
        jvm_options: tuple[str, ...] | list[str] = DEFAULT_JVM_OPTIONS,
        build_dir: Path | None = None,
    ) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="esnode-"))
        self.port = port or free_port()
        self.cluster_name = cluster_name
        self.extra_settings = dict(settings or {})
        self.jvm_options = list(jvm_options)
        self.build_dir = build_dir
        self.log_path = self.base_dir / "esnode.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- addresses and state ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- HTTP without a client (the fixtures must not need one) -----------------------------

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 30.0
    ) -> tuple[int, Any]:
        """One HTTP request to the node; returns (status, decoded JSON or None)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def health(self, wait_for_status: str = "yellow", timeout: str = "1s") -> dict[str, Any]:
        status, body = self.request(
            "GET", f"/_cluster/health?wait_for_status={wait_for_status}&timeout={timeout}"
        )
        if status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"cluster health: HTTP {status}: {body}")
        return body

    # -- life cycle ------------------------------------------------------------------------

    def _command(self, build_dir: Path) -> list[str]:
        java = Path((build_dir / "java-home").read_text().strip()) / "bin" / "java"
        classpath = os.pathsep.join(
            [str(build_dir / "classes"), (build_dir / "classpath.txt").read_text().strip()]
        )
        home = self.base_dir / "home"
        settings = {
            "cluster.name": self.cluster_name,
            "node.name": "esnode",
            "path.home": str(home),
            "path.data": str(self.base_dir / "data"),
            "path.logs": str(self.base_dir / "logs"),
            "network.host": "127.0.0.1",
            "http.port": str(self.port),
            "transport.port": "0",
            "discovery.type": "single-node",
            # the machines' disks can be nearly full: do not let watermarks block writes
            "cluster.routing.allocation.disk.threshold_enabled": "false",
            "logger.level": "INFO",
        }
        settings.update(self.extra_settings)
        return [
            str(java),
            *self.jvm_options,
            f"-Djava.io.tmpdir={home / 'tmp'}",
            f"-Desnode.modules={build_dir / 'modules'}",
            *(
                [f"-Des.nativelibs.path={build_dir / 'native'}"]
                if (build_dir / "native").is_dir()
                else []
            ),
            "-Desnode.exitOnStdinEof=true",
            "-cp",
            classpath,
            "org.pyskydive.esnode.EsNode",
            *(f"{k}={v}" for k, v in settings.items()),
        ]

    def start(self, timeout: float = 180.0) -> None:
        """Start the JVM and wait until the cluster is at least yellow."""
        if self.running:
            raise RuntimeError(f"node already running (pid {self.pid})")
        if self.build_dir is None:
            self.build_dir = build()
        (self.base_dir / "home" / "tmp").mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in _reap)
        self._log.write(f"---- esnode start {time.strftime('%H:%M:%S')}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self._command(self.build_dir),
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.base_dir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._reap()
                raise RuntimeError(
                    f"Elasticsearch node exited ({code}) while starting; log:\n{self.log_tail()}"
                )
            try:
                self.health()
                return
            except (OSError, RuntimeError) as e:
                last = e
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"Elasticsearch node not healthy after {timeout}s ({last}); log:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 60.0) -> None:
        """Clean shutdown (SIGTERM: the node flushes and closes its indices)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reap()

    def kill(self) -> None:
        """Simulate a crash: SIGKILL, no flush (acknowledged writes are in the translog)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._reap()

    def restart(self, timeout: float = 180.0) -> None:
        """Stop (if running) and start again on the same port with the same data."""
        self.stop()
        self.start(timeout)

    def cleanup(self) -> None:
        """Stop, and remove the base directory if this object made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _reap(self) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EsNode:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
