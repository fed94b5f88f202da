"""``skydive client`` as a user runs it: a real ``python -m pyskydive.cli.main client`` process
against a real analyzer (and agent) on loopback.

Commands whose endpoints land with other parts of the API issue (``POST /api/topology``, the
CRUD resources) skip with the reason while the analyzer answers 404/405 for them, and start
running as soon as the endpoint exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import (
    ROOT,
    Cluster,
    Skydive,
    api_up,
    free_port,
    start_agent,
    wait_for,
)


def client(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``skydive client ARGS`` with no SKYDIVE_* variable but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SKYDIVE_")}
    clean["PYTHONPATH"] = str(ROOT / "src")
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pyskydive.cli.main", "client", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("skydive: error: ")
    return lines[0]


def require_endpoint(port: int, method: str, path: str, body: object = None) -> None:
    url = f"http://127.0.0.1:{port}{path}"
    response = httpx.request(method, url, json=body, timeout=10)
    if response.status_code in (404, 405):
        pytest.skip(f"{method} {path} is not served yet ({response.status_code})")


def start_analyzer(cluster: Cluster) -> Skydive:
    """An analyzer whose resources live in the test's temporary directory."""
    data_dir = cluster.tmp / "analyzer-data"
    analyzer = cluster.spawn("analyzer", extra={"SKYDIVE_ANALYZER_DATA_DIR": str(data_dir)})
    wait_for("the analyzer API", lambda: api_up(analyzer.analyzer_port), timeout=20)
    return analyzer


def test_status(cluster: Cluster) -> None:
    analyzer = start_analyzer(cluster)
    address = f"127.0.0.1:{analyzer.analyzer_port}"
    out = ok(client("--analyzer", address, "status"))
    assert f"Host:    {analyzer.host_id}" in out.splitlines()
    body = json.loads(ok(client("status", "--analyzer", address, "--format", "json")))
    assert (body["Host"], body["Service"]) == (analyzer.host_id, "analyzer")


def test_analyzer_from_env_and_conf(cluster: Cluster, tmp_path: Path) -> None:
    analyzer = start_analyzer(cluster)
    address = f"127.0.0.1:{analyzer.analyzer_port}"
    out = ok(client("status", env={"SKYDIVE_ANALYZERS": f"{address}, 127.0.0.1:1"}))
    assert analyzer.host_id in out
    conf = tmp_path / "client.yml"
    conf.write_text(f"analyzers:\n  - {address}\n")
    assert analyzer.host_id in ok(client("--conf", str(conf), "status"))
    # the environment beats the file, and --analyzer beats both
    bad = client("--conf", str(conf), "status", env={"SKYDIVE_ANALYZERS": "127.0.0.1:1"})
    assert "127.0.0.1:1" in one_error_line(bad, 1)
    assert analyzer.host_id in ok(
        client("--analyzer", address, "status", env={"SKYDIVE_ANALYZERS": "127.0.0.1:1"})
    )


def test_unreachable_analyzer_is_one_line() -> None:
    port = free_port()
    line = one_error_line(client("--analyzer", f"127.0.0.1:{port}", "status"), 1)
    assert (
        line == f"skydive: error: cannot reach the analyzer at 127.0.0.1:{port}: connection refused"
    )


def test_usage_error_exit_2() -> None:
    line = one_error_line(client("node", "create", "--name", "x", "--analyzer", "127.0.0.1:1"), 2)
    assert "a node needs a Type" in line


def test_topology_query(cluster: Cluster) -> None:
    analyzer = start_analyzer(cluster)
    port = analyzer.analyzer_port
    require_endpoint(port, "POST", "/api/topology", {"GremlinQuery": "G.V().Count()"})
    agent = start_agent(cluster, analyzer)
    address = f"127.0.0.1:{port}"
    query = "G.V().Has('Type','host')"
    out = ok(client("--analyzer", address, "topology", "query", query))
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "Name", "Type", "Host"]
    assert [row.split()[0] for row in rows] == [agent.host_id]
    nodes = json.loads(ok(client("--analyzer", address, "--format", "json", "query", query)))
    assert [n["ID"] for n in nodes] == [agent.host_id]
    count = ok(client("--analyzer", address, "query", f"{query}.Count()"))
    assert count == "1\n"
    bad = client("--analyzer", address, "query", "G.V(")
    assert "400" in one_error_line(bad, 1)


def test_capture_lifecycle(cluster: Cluster) -> None:
    analyzer = start_analyzer(cluster)
    require_endpoint(analyzer.analyzer_port, "GET", "/api/capture")
    address = f"127.0.0.1:{analyzer.analyzer_port}"
    query = "G.V().Has('Name', 'skt-client-eth0')"
    created = json.loads(
        ok(
            client(
                "--analyzer", address, "--format", "json", "capture", "create", "--gremlin", query
            )
        )
    )
    uuid = created["UUID"]
    assert created["GremlinQuery"] == query
    listing = ok(client("--analyzer", address, "capture", "list"))
    assert any(line.startswith(uuid) for line in listing.splitlines()[1:])
    dup = client("--analyzer", address, "capture", "create", "--gremlin", query)
    assert "409" in one_error_line(dup, 1)
    assert ok(client("--analyzer", address, "capture", "delete", uuid)) == ""
    gone = client("--analyzer", address, "capture", "get", uuid)
    assert "404" in one_error_line(gone, 1)
