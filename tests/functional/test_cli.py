"""The ``skydive`` command: config errors, ``config check``, ``version``, allinone, signals."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from conftest import (
    ROOT,
    Cluster,
    Kernel,
    Subscriber,
    api_up,
    free_port,
    sh,
    status,
    topology,
    wait_for,
    wait_node,
    wait_topology,
)

DEFAULT_CONF = ROOT / "etc" / "skydive.yml.default"


def skydive(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``skydive ARGS`` to completion with no SKYDIVE_* variable but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SKYDIVE_")}
    clean["PYTHONPATH"] = str(ROOT / "src")
    # never the real /var/lib/skydive: a fresh data directory per run
    clean["SKYDIVE_ANALYZER_DATA_DIR"] = tempfile.mkdtemp(prefix="skt-cli-data-")
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pyskydive.cli.main", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in text
    return lines[0]


BAD_CONFIGS = [
    pytest.param(
        "analyzer:\n  lisen: 127.0.0.1:8082\n", ["analyzer.lisen", "unknown", "listen"], id="typo"
    ),
    pytest.param("storage_engine: fast\n", ["storage_engine", "unknown"], id="unknown-top"),
    pytest.param(
        "agent:\n  topology:\n    netlink:\n      metrics_update: -3\n",
        ["agent.topology.netlink.metrics_update", "-3"],
        id="bad-number",
    ),
    pytest.param("analyzer:\n  listen: nowhere\n", ["analyzer.listen", "nowhere"], id="bad-addr"),
    pytest.param("logging:\n  level: LOUD\n", ["logging.level", "LOUD"], id="bad-level"),
    pytest.param("agent: 7\n", ["agent", "mapping"], id="bad-type"),
    pytest.param("analyzer:\n  listen: [unclosed\n", ["bad.yml", "line"], id="yaml-syntax"),
    pytest.param("host_id: a\nhost_id: b\n", ["bad.yml", "host_id"], id="duplicate-key"),
    pytest.param("- just\n- a list\n", ["bad.yml", "mapping"], id="not-a-mapping"),
]


@pytest.mark.parametrize(("text", "words"), BAD_CONFIGS)
@pytest.mark.parametrize("command", ["analyzer", "agent", "allinone"])
def test_bad_config_stops_start_up(
    tmp_path: Path, text: str, words: list[str], command: str
) -> None:
    conf = tmp_path / "bad.yml"
    conf.write_text(text)
    r = skydive(command, "--conf", str(conf))
    assert r.returncode == 2
    line = one_line(r.stderr)
    for word in words:
        assert word in line
    assert r.stdout == ""


@pytest.mark.parametrize(("text", "words"), BAD_CONFIGS)
def test_config_check_rejects_bad_file(tmp_path: Path, text: str, words: list[str]) -> None:
    conf = tmp_path / "bad.yml"
    conf.write_text(text)
    r = skydive("config", "check", str(conf))
    assert r.returncode == 2
    line = one_line(r.stderr)
    for word in words:
        assert word in line


def test_bad_environment_value_names_the_variable() -> None:
    r = skydive("agent", env={"SKYDIVE_AGENT_LISTEN": "nonsense"})
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert "SKYDIVE_AGENT_LISTEN" in line and "agent.listen" in line and "nonsense" in line


def test_missing_config_file() -> None:
    r = skydive("analyzer", "--conf", "/nonexistent/skt.yml")
    assert r.returncode == 2
    assert "/nonexistent/skt.yml" in one_line(r.stderr)


def test_config_check_accepts_the_default_file(tmp_path: Path) -> None:
    r = skydive("config", "check", str(DEFAULT_CONF))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    good = tmp_path / "good.yml"
    good.write_text(
        "host_id: sktgood\nanalyzers: ['127.0.0.1:9999']\n"
        "agent:\n  listen: '127.0.0.1:9998'\n  topology:\n    probes: [netlink]\n"
        "    netlink:\n      metrics_update: 5s\n  metadata: {rack: r1}\n"
        "logging:\n  level: debug\n"
    )
    r = skydive("config", "check", str(good))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_version() -> None:
    from pyskydive import __version__

    r = skydive("version")
    assert r.returncode == 0
    assert __version__ in r.stdout
    assert r.stderr == ""
    script = shutil.which("skydive")
    if script is not None:  # the console script of the installed package
        r2 = subprocess.run([script, "version"], capture_output=True, text=True, timeout=60)
        assert r2.returncode == 0 and r2.stdout == r.stdout


@pytest.mark.parametrize(
    ("command", "variable"),
    [
        ("analyzer", "SKYDIVE_ANALYZER_LISTEN"),
        ("agent", "SKYDIVE_AGENT_LISTEN"),
        ("allinone", "SKYDIVE_ANALYZER_LISTEN"),
    ],
)
def test_port_in_use(command: str, variable: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            "SKYDIVE_HOST_ID": "sktbusy",
            "SKYDIVE_ANALYZER_LISTEN": f"127.0.0.1:{free_port()}",
            "SKYDIVE_AGENT_LISTEN": f"127.0.0.1:{free_port()}",
            "SKYDIVE_ANALYZERS": "127.0.0.1:1",
            "SKYDIVE_AGENT_TOPOLOGY_PROBES": "netlink",
            variable: f"127.0.0.1:{port}",
        }
        r = skydive(command, env=env)
    assert r.returncode not in (0, None)
    line = one_line(r.stderr)
    assert str(port) in line
    assert "in use" in line


def test_allinone_serves_the_host_topology(cluster: Cluster, kernel: Kernel) -> None:
    proc = cluster.spawn("allinone")
    port = proc.analyzer_port
    topo = wait_topology(
        port,
        "the host node and lo",
        lambda t: proc.host_id in t.by_id and bool(t.find(Name="lo", Type="device")),
        timeout=30,
    )
    host = topo.by_id[proc.host_id]
    assert host["Metadata"]["Type"] == "host"
    assert host["Metadata"]["Name"] == proc.host_id
    (lo,) = [n for n in topo.find(Name="lo") if topo.parents(n["ID"], "ownership") == [host]]
    assert lo["Metadata"]["IfIndex"] == 1
    assert lo["Metadata"]["MTU"] > 0
    assert "127.0.0.1/8" in lo["Metadata"]["IPV4"]
    assert lo["Metadata"]["State"] == "UP"
    assert httpx.get(f"http://127.0.0.1:{port}/api", timeout=5).json()["Service"] == "analyzer"
    assert api_up(proc.agent_port)
    assert list(status(port)["Agents"]) == [proc.host_id]
    # And it is live.
    tap = kernel.link_name()
    sh(f"ip tuntap add {tap} mode tap")
    assert wait_node(port, Name=tap)["Metadata"]["Type"] == "tun"
    assert wait_node(proc.agent_port, Name=tap)["Metadata"]["Type"] == "tun"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_allinone_stops_cleanly_on_signal(cluster: Cluster, sig: int) -> None:
    proc = cluster.spawn("allinone")
    wait_for(
        "allinone to serve the host node",
        lambda: proc.host_id in topology(proc.analyzer_port).by_id,
        timeout=30,
    )
    # A subscriber held open during shutdown: the server must close it itself.
    with Subscriber(proc.analyzer_port) as sub:
        sub.sync()
        assert proc.stop(sig, timeout=15) == 0
    log = proc.log()
    assert "Traceback" not in log
    assert "shutting down" in log
    # Both listening sockets are closed: the ports can be listened on again (SO_REUSEADDR:
    # the connections the server closed may linger in TIME_WAIT, which is normal TCP).
    for port in (proc.analyzer_port, proc.agent_port):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_agent_without_analyzer_stops_cleanly(cluster: Cluster, sig: int) -> None:
    agent = cluster.spawn("agent", extra={"SKYDIVE_ANALYZERS": f"127.0.0.1:{free_port()}"})
    wait_for("the agent API", lambda: api_up(agent.agent_port), timeout=20)
    link = wait_for(
        "the agent to report the unreachable analyzer",
        lambda: next(iter(status(agent.agent_port)["Analyzers"].values()))["LastError"],
    )
    assert link  # the reason the analyzer cannot be reached
    assert agent.stop(sig, timeout=15) == 0
    assert "Traceback" not in agent.log()
