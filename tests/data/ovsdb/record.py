"""Record real OVSDB JSON-RPC messages for the unit tests of the OVSDB model.

Starts a private ovsdb-server + ovs-vswitchd (userspace datapath) in a temporary directory,
sends the probe's ``monitor`` request, runs each scenario's ``ovs-vsctl`` commands and writes
every message the server sent to ``tests/data/ovsdb/<scenario>.json`` (a list: the monitor reply
first, then the ``update`` notifications). Run as root: ``python tests/data/ovsdb/record.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pyskydive.protocols.ovsdb import StreamDecoder, monitor_request

HERE = Path(__file__).parent
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"

#: scenario -> (set-up commands run before the monitor, commands recorded as updates)
SCENARIOS: dict[str, tuple[list[str], list[str]]] = {
    "internal": (
        [],
        [
            "add-br skobr0 -- set bridge skobr0 datapath_type=netdev external_ids:owner=test",
            "add-port skobr0 skoint0 -- set interface skoint0 type=internal",
        ],
    ),
    "patch": (
        [
            "add-br skobra -- set bridge skobra datapath_type=netdev",
            "add-br skobrb -- set bridge skobrb datapath_type=netdev",
        ],
        [
            "add-port skobra skopa -- set interface skopa type=patch options:peer=skopb"
            " -- add-port skobrb skopb -- set interface skopb type=patch options:peer=skopa",
        ],
    ),
    "tunnels": (
        ["add-br skobrt -- set bridge skobrt datapath_type=netdev"],
        [
            "add-port skobrt skovx -- set interface skovx type=vxlan"
            " options:remote_ip=192.0.2.1 options:local_ip=192.0.2.2 options:key=42",
            "add-port skobrt skogn -- set interface skogn type=geneve options:remote_ip=192.0.2.3",
            "add-port skobrt skogr -- set interface skogr type=gre options:remote_ip=192.0.2.4",
        ],
    ),
    "bond": (
        [
            "add-br skobrd -- set bridge skobrd datapath_type=netdev",
        ],
        [
            "add-bond skobrd skobond skoi1 skoi2 bond_mode=balance-slb"
            " -- set interface skoi1 type=internal -- set interface skoi2 type=internal",
        ],
    ),
    "delete": (
        [
            "add-br skobrx -- set bridge skobrx datapath_type=netdev",
            "add-port skobrx skoix -- set interface skoix type=internal",
            "add-port skobrx skopx -- set interface skopx type=patch options:peer=none",
        ],
        ["del-port skobrx skoix", "del-br skobrx"],
    ),
}


class PrivateOvs:
    """ovsdb-server + ovs-vswitchd in their own directory, ended by their pidfiles."""

    def __init__(self, root: str | None = None, vswitchd: bool = True) -> None:
        self.dir = root or tempfile.mkdtemp(prefix="skovs")
        self.sock = os.path.join(self.dir, "db.sock")
        self.db = os.path.join(self.dir, "conf.db")
        self.env = dict(
            os.environ,
            OVS_RUNDIR=self.dir,
            OVS_LOGDIR=self.dir,
            OVS_DBDIR=self.dir,
            OVS_SYSCONFDIR=self.dir,
        )
        self.vswitchd = vswitchd

    def run(self, *args: str) -> str:
        out = subprocess.run(
            list(args), env=self.env, check=True, capture_output=True, text=True, timeout=60
        )
        return out.stdout

    def vsctl(self, command: str) -> str:
        return self.run("sh", "-c", f"ovs-vsctl --timeout=30 --db=unix:{self.sock} {command}")

    def start(self) -> PrivateOvs:
        if not os.path.exists(self.db):
            self.run("ovsdb-tool", "create", self.db, SCHEMA)
        self.start_server()
        self.run("ovs-vsctl", f"--db=unix:{self.sock}", "--no-wait", "init")
        if self.vswitchd:
            self.run(
                "ovs-vswitchd",
                f"unix:{self.sock}",
                f"--pidfile={self.dir}/ovs-vswitchd.pid",
                "--detach",
                f"--log-file={self.dir}/ovs-vswitchd.log",
            )
        return self

    def start_server(self) -> None:
        self.run(
            "ovsdb-server",
            self.db,
            f"--remote=punix:{self.sock}",
            f"--pidfile={self.dir}/ovsdb-server.pid",
            "--detach",
            f"--log-file={self.dir}/ovsdb-server.log",
        )

    def kill(self, name: str) -> None:
        try:
            pid = int(Path(self.dir, f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        self.kill("ovs-vswitchd")
        self.kill("ovsdb-server")


def _collect(sock: socket.socket, decoder: StreamDecoder, quiet: float) -> list[Any]:
    """Messages until the server has been quiet for ``quiet`` seconds; echo answered."""
    out: list[Any] = []
    sock.settimeout(quiet)
    while True:
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            return out
        if not data:
            return out
        for msg in decoder.feed(data):
            if msg.get("method") == "echo":
                sock.sendall(json.dumps({"id": msg["id"], "result": msg["params"]}).encode())
                continue
            out.append(msg)


def record(ovs: PrivateOvs, name: str, setup: list[str], steps: list[str]) -> list[Any]:
    for cmd in setup:
        ovs.vsctl(cmd)
    time.sleep(0.5)  # let ovs-vswitchd fill in ofport/status first
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(ovs.sock)
    decoder = StreamDecoder()
    sock.sendall(monitor_request(1, None))
    messages = _collect(sock, decoder, 0.5)
    for cmd in steps:
        ovs.vsctl(cmd)
        messages += _collect(sock, decoder, 1.0)
    sock.close()
    for cmd in reversed(setup):  # leave the database empty for the next scenario
        if cmd.startswith("add-br"):
            ovs.vsctl(f"--if-exists del-br {cmd.split()[1]}")
    for cmd in steps:
        if cmd.startswith("add-br"):
            ovs.vsctl(f"--if-exists del-br {cmd.split()[1]}")
    return messages


def main() -> None:
    ovs = PrivateOvs().start()
    try:
        for name, (setup, steps) in SCENARIOS.items():
            messages = record(ovs, name, setup, steps)
            path = HERE / f"{name}.json"
            path.write_text(json.dumps(messages, indent=1) + "\n")
            print(f"{path}: {len(messages)} messages")
    finally:
        ovs.stop()


if __name__ == "__main__":
    main()
