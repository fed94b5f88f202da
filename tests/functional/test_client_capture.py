"""``skydive client capture delete`` by probe path and by Gremlin query, as a user runs it: a
real client process against a real analyzer; captures made by the client (``-p``, translated)
and through the API with the probe path itself are both found."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
from conftest import ROOT, Cluster, start_analyzer

PATH = "*[Type=host]/skt-br1[Type=ovsbridge]"
QUERY = "G.V().Has('Type', 'host').Out('Name', 'skt-br1', 'Type', 'ovsbridge')"
OTHER = "G.V().Has('Name', 'skt-eth0')"


def client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYDIVE_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    return subprocess.run(
        [sys.executable, "-m", "pyskydive.cli.main", "client", "--analyzer",
         f"127.0.0.1:{port}", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def captures(port: int) -> dict[str, str]:
    r = httpx.get(f"http://127.0.0.1:{port}/api/capture", timeout=10)
    r.raise_for_status()
    return {u: c["GremlinQuery"] for u, c in r.json().items()}


def create(port: int, *args: str) -> str:
    done = client(port, "--format", "json", "capture", "create", *args)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    return str(json.loads(done.stdout)["UUID"])


def test_capture_delete_by_probe_path_and_query(cluster: Cluster) -> None:
    port = start_analyzer(cluster).analyzer_port
    by_path = create(port, "-p", PATH)
    other = create(port, "--gremlin", OTHER, "--bpf", "icmp")
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/capture",
        json={"GremlinQuery": PATH, "BPFFilter": "tcp"},  # the path as is, by another tool
        timeout=10,
    )
    assert r.status_code in (200, 201), r.text
    raw = r.json()["UUID"]
    assert captures(port) == {by_path: QUERY, other: OTHER, raw: PATH}

    done = client(port, "capture", "delete", PATH)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert captures(port) == {other: OTHER}

    missing = client(port, "capture", "delete", PATH)
    assert missing.returncode == 1 and missing.stdout == ""
    (line,) = missing.stderr.splitlines()
    assert line.startswith("skydive: error: no capture on ") and "Traceback" not in line

    done = client(port, "capture", "delete", OTHER)
    assert (done.returncode, done.stderr) == (0, "") and captures(port) == {}
