"""Functional test harness: real skydive processes, real kernel objects, always cleaned up.

Every kernel object a test makes is named ``skt…`` and removed at teardown, even when the test
fails. Processes are started with ``python -m pyskydive.cli.main`` on free loopback ports and
ended by their PID. Waiting is done by polling with a deadline (``wait_for``): the deadline only
bounds a failing test, it asserts nothing about speed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest

# The Elasticsearch node's fixtures (es_node, es_prefix, es_client: tests/es/conftest_es.py),
# for every functional test module; the node starts only for tests that use them.
from es_fixtures import es_client, es_node, es_prefix  # noqa: F401
from websockets.sync.client import ClientConnection, connect

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.functional)


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("functional tests need root (network namespaces, interfaces)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` otherwise."""
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
            raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
        time.sleep(0.05)


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def uid(prefix: str = "skt") -> str:
    return f"{prefix}{secrets.token_hex(3)}"


# -- kernel objects ---------------------------------------------------------------------


@dataclass
class Kernel:
    """Creates namespaces and links for one test and removes them all at teardown."""

    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def add_netns(self) -> str:
        name = uid("sktns")
        self.netns.append(name)
        sh(f"ip netns add {name}")
        return name

    def link_name(self) -> str:
        name = uid("skt")
        self.links.append(name)
        return name

    def cleanup(self) -> None:
        for link in self.links:
            sh(f"ip link del {link}", check=False)
        for ns in self.netns:
            sh(f"ip netns del {ns}", check=False)


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    try:
        yield k
    finally:
        k.cleanup()


# -- skydive processes ------------------------------------------------------------------


class Skydive:
    """One ``skydive <command>`` subprocess with its own ports and host ID."""

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.command = command
        self.env = env
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def analyzer_port(self) -> int:
        return int(self.env["SKYDIVE_ANALYZER_LISTEN"].rsplit(":", 1)[1])

    @property
    def agent_port(self) -> int:
        return int(self.env["SKYDIVE_AGENT_LISTEN"].rsplit(":", 1)[1])

    @property
    def host_id(self) -> str:
        return self.env["SKYDIVE_HOST_ID"]

    def start(self) -> Skydive:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed by the child's exit
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyskydive.cli.main", self.command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Cluster:
    """Factory of skydive processes for one test; ends every one it started."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Skydive] = []

    def spawn(
        self,
        command: str,
        *,
        host_id: str | None = None,
        analyzer_port: int | None = None,
        agent_port: int | None = None,
        extra: dict[str, str] | None = None,
        start: bool = True,
    ) -> Skydive:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYDIVE_")}
        analyzer_port = analyzer_port or free_port()
        env.update(
            SKYDIVE_HOST_ID=host_id or uid("skthost"),
            SKYDIVE_ANALYZER_LISTEN=f"127.0.0.1:{analyzer_port}",
            SKYDIVE_ANALYZERS=f"127.0.0.1:{analyzer_port}",
            SKYDIVE_AGENT_LISTEN=f"127.0.0.1:{agent_port or free_port()}",
            SKYDIVE_LOGGING_LEVEL="INFO",
            # Each process its own data directory: tests never touch /var/lib/skydive.
            SKYDIVE_ANALYZER_DATA_DIR=str(self.tmp / f"data-{len(self.procs)}"),
            PYTHONPATH=str(ROOT / "src"),
        )
        env.update(extra or {})
        proc = Skydive(command, env, self.tmp / f"{command}-{len(self.procs)}.log")
        self.procs.append(proc)
        return proc.start() if start else proc

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop(signal.SIGKILL if proc.proc and proc.proc.poll() is None else 0)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        failed = getattr(request.node, "rep_call", None)
        for proc in c.procs:
            proc.stop()
        if failed is not None and failed.failed:
            for proc in c.procs:
                sys.stderr.write(f"---- {proc.log_path.name}\n{proc.log()[-4000:]}\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep


# -- API helpers ------------------------------------------------------------------------


class Topology:
    """A snapshot of ``GET /api/topology`` with lookups by metadata."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.nodes: list[dict[str, Any]] = data.get("Nodes") or []
        self.edges: list[dict[str, Any]] = data.get("Edges") or []
        self.by_id = {n["ID"]: n for n in self.nodes}

    def find(self, **md: Any) -> list[dict[str, Any]]:
        return [n for n in self.nodes if all(n["Metadata"].get(k) == v for k, v in md.items())]

    def one(self, **md: Any) -> dict[str, Any] | None:
        found = self.find(**md)
        return found[0] if len(found) == 1 else None

    def edges_between(self, a: str, b: str, **md: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.edges
            if {e["Parent"], e["Child"]} == {a, b}
            and all(e["Metadata"].get(k) == v for k, v in md.items())
        ]

    def parents(self, node_id: str, relation: str) -> list[dict[str, Any]]:
        return [
            self.by_id[e["Parent"]]
            for e in self.edges
            if e["Child"] == node_id and e["Metadata"].get("RelationType") == relation
        ]


def topology(port: int) -> Topology:
    r = httpx.get(f"http://127.0.0.1:{port}/api/topology", timeout=5)
    r.raise_for_status()
    return Topology(r.json())


def api_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Subscriber:
    """A WebSocket subscriber that records every message it receives."""

    def __init__(self, port: int, path: str = "/ws/subscriber", **headers: str) -> None:
        # legacy=True: a plain connection object (websockets >= 17.1 warns otherwise).
        self.ws: ClientConnection = connect(
            f"ws://127.0.0.1:{port}{path}", additional_headers=headers, open_timeout=5, legacy=True
        )

    def send(self, msg: dict[str, Any] | str) -> None:
        self.ws.send(msg if isinstance(msg, str) else orjson.dumps(msg).decode())

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        return orjson.loads(self.ws.recv(timeout=timeout))  # type: ignore[no-any-return]

    def sync(self) -> dict[str, Any]:
        self.send({"Namespace": "Graph", "Type": "SyncRequest", "Obj": {}})
        while True:
            msg = self.recv()
            if msg["Type"] == "SyncReply":
                return msg

    def until(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Messages received up to and including the first that satisfies ``pred``."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                types = [m["Type"] for m in got][-20:]
                raise AssertionError(f"no matching message within {timeout}s; got {types}")
            try:
                msg = self.recv(timeout=left)
            except TimeoutError:
                continue
            got.append(msg)
            if pred(msg):
                return got

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- composed set-ups -------------------------------------------------------------------


@dataclass
class Pair:
    """An analyzer process and an agent process reporting to it."""

    analyzer: Skydive
    agent: Skydive

    @property
    def port(self) -> int:
        """The analyzer's API port: where most assertions look."""
        return self.analyzer.analyzer_port


def start_analyzer(cluster: Cluster, port: int | None = None) -> Skydive:
    analyzer = cluster.spawn("analyzer", analyzer_port=port)
    wait_for("the analyzer API", lambda: api_up(analyzer.analyzer_port), timeout=20)
    return analyzer


def start_agent(
    cluster: Cluster,
    analyzer: Skydive,
    *,
    host_id: str | None = None,
    extra: dict[str, str] | None = None,
    wait: bool = True,
) -> Skydive:
    agent = cluster.spawn(
        "agent", host_id=host_id, analyzer_port=analyzer.analyzer_port, extra=extra
    )
    if wait:
        wait_for("the agent API", lambda: api_up(agent.agent_port), timeout=20)
        wait_for(
            "the agent's host node on the analyzer",
            lambda: topology(analyzer.analyzer_port).by_id.get(agent.host_id),
            timeout=20,
        )
    return agent


def start_pair(cluster: Cluster, extra: dict[str, str] | None = None) -> Pair:
    analyzer = start_analyzer(cluster)
    return Pair(analyzer, start_agent(cluster, analyzer, extra=extra))


@pytest.fixture
def pair(cluster: Cluster) -> Pair:
    return start_pair(cluster)


def status(port: int) -> dict[str, Any]:
    r = httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=5)
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def wait_node(port: int, timeout: float = 10.0, **md: Any) -> dict[str, Any]:
    """Wait until exactly one node of ``port``'s topology has metadata ``md``; return it."""
    desc = ", ".join(f"{k}={v!r}" for k, v in md.items())
    return wait_for(f"one node with {desc}", lambda: topology(port).one(**md), timeout)


def wait_topology(
    port: int, what: str, pred: Callable[[Topology], bool], timeout: float = 10.0
) -> Topology:
    """Wait until ``pred`` holds of ``port``'s topology; return that snapshot."""

    def probe() -> Topology | None:
        topo = topology(port)
        return topo if pred(topo) else None

    return wait_for(what, probe, timeout)


# -- Open vSwitch -----------------------------------------------------------------------


class PrivateOvs:
    """A private ovsdb-server + ovs-vswitchd (userspace datapath) in a temporary directory.

    Never the system's OVS: its own database, socket and run directory, ended by the PIDs in
    its own pidfiles. Bridges and ports made by tests are named ``sko…``."""

    SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"

    def __init__(self, root: Path) -> None:
        self.dir = root
        self.sock = str(root / "db.sock")
        self.db = str(root / "conf.db")
        self.env = dict(os.environ, OVS_RUNDIR=str(root), OVS_LOGDIR=str(root), OVS_DBDIR=str(root))
        self.env["OVS_SYSCONFDIR"] = str(root)

    @property
    def remote(self) -> str:
        """The value of ``ovs.ovsdb`` that points an agent at this instance."""
        return f"unix:{self.sock}"

    def run(self, *args: str) -> str:
        return subprocess.run(
            list(args), env=self.env, check=True, capture_output=True, text=True, timeout=60
        ).stdout

    def vsctl(self, command: str) -> str:
        """``ovs-vsctl COMMAND`` against this instance (a shell string, for ``--`` chains)."""
        return self.run("sh", "-c", f"ovs-vsctl --timeout=30 --db=unix:{self.sock} {command}")

    def start_server(self) -> None:
        self.run(
            "ovsdb-server",
            self.db,
            f"--remote=punix:{self.sock}",
            f"--pidfile={self.dir}/ovsdb-server.pid",
            "--detach",
            f"--log-file={self.dir}/ovsdb-server.log",
        )

    def start(self) -> PrivateOvs:
        self.run("ovsdb-tool", "create", self.db, self.SCHEMA)
        self.start_server()
        self.run("ovs-vsctl", f"--db=unix:{self.sock}", "--no-wait", "init")
        self.run(
            "ovs-vswitchd",
            f"unix:{self.sock}",
            f"--pidfile={self.dir}/ovs-vswitchd.pid",
            "--detach",
            f"--log-file={self.dir}/ovs-vswitchd.log",
        )
        return self

    def kill(self, daemon: str) -> None:
        """End ``daemon`` (ovsdb-server or ovs-vswitchd) by the PID in its pidfile."""
        try:
            pid = int((self.dir / f"{daemon}.pid").read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.02)
            os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):  # the server may be down
            for bridge in self.vsctl("list-br").split():
                if bridge.startswith("sko"):
                    self.vsctl(f"--if-exists del-br {bridge}")
        self.kill("ovs-vswitchd")
        self.kill("ovsdb-server")


def _has_ovs() -> bool:
    return all(
        shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")
        for tool in ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovsdb-tool")
    )


@pytest.fixture(scope="session")
def ovs_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateOvs]:
    if os.geteuid() != 0:
        pytest.skip("Open vSwitch tests need root")
    if not _has_ovs():
        pytest.skip("Open vSwitch is not installed (apt-get install openvswitch-switch)")
    instance = PrivateOvs(tmp_path_factory.mktemp("ovs")).start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def ovs(ovs_instance: PrivateOvs) -> Iterator[PrivateOvs]:
    """The session's private OVS; the bridges a test made are deleted after it."""
    try:
        yield ovs_instance
    finally:
        if not (ovs_instance.dir / "ovsdb-server.pid").exists():
            ovs_instance.start_server()  # a test that stopped it failed before restarting it
        for bridge in ovs_instance.vsctl("list-br").split():
            if bridge.startswith("sko"):
                ovs_instance.vsctl(f"--if-exists del-br {bridge}")
