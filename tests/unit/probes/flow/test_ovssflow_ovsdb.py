"""OvsSflowCapture and OvsdbClient against a real ovsdb-server (no root, no ovs-vswitchd).

The server runs from a temporary directory with the Open_vSwitch schema; bridges are created
with ``ovs-vsctl --no-wait`` (nobody applies them, which is all the capture needs to write its
rows). The server is ended by the PID in its own pidfile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from capture_env import Sink, free_udp_ports, make_env, make_spec, make_target

from pyskydive.errors import ProbeError
from pyskydive.probes.flow.ovsdb_client import OvsdbClient
from pyskydive.probes.flow.ovssflow import OvsSflowCapture

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )


pytestmark = pytest.mark.skipif(
    not (SCHEMA.exists() and _tool("ovsdb-server") and _tool("ovs-vsctl")),
    reason="Open vSwitch is not installed (apt-get install openvswitch-switch)",
)


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "db.sock"
        self.remote = f"unix:{self.sock}"
        self.env = dict(os.environ, OVS_RUNDIR=str(root), OVS_LOGDIR=str(root))

    def run(self, *args: str) -> str:
        return subprocess.run(
            args, env=self.env, check=True, capture_output=True, text=True, timeout=30
        ).stdout

    def vsctl(self, *args: str) -> str:
        return self.run(str(_tool("ovs-vsctl")), f"--db={self.remote}", "--no-wait", *args).strip()

    def start(self) -> Server:
        self.run(str(_tool("ovsdb-tool")), "create", str(self.root / "conf.db"), str(SCHEMA))
        self.run(
            str(_tool("ovsdb-server")),
            str(self.root / "conf.db"),
            f"--remote=punix:{self.sock}",
            f"--pidfile={self.root}/ovsdb-server.pid",
            f"--log-file={self.root}/ovsdb-server.log",
            f"--unixctl={self.root}/ovsdb-server.ctl",
            "--detach",
        )
        self.vsctl("init")
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.root / "ovsdb-server.pid").read_text().strip())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            with contextlib.suppress(ProcessLookupError):
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.02)
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ovsdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("ovsdb"))
    try:
        yield server.start()
    finally:
        server.stop()


def run(scenario: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await scenario(asyncio.get_running_loop())

    asyncio.run(main())


@pytest.fixture
def bridge(ovsdb: Server) -> Iterator[str]:
    ovsdb.vsctl("add-br", "sksbr0")
    try:
        yield ovsdb.vsctl("get", "bridge", "sksbr0", "_uuid")
    finally:
        ovsdb.vsctl("--if-exists", "del-br", "sksbr0")


def test_start_points_the_bridge_at_the_collector_and_stop_removes_it(
    ovsdb: Server, bridge: str
) -> None:
    bridge_uuid = bridge
    low, high = free_udp_ports(1)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, sflow=(low, high), ovs={"ovsdb": ovsdb.remote})
        target = make_target(type="ovsbridge", metadata={"UUID": bridge_uuid, "Name": "sksbr0"})
        spec = make_spec("ovssflow", sampling_rate=7, polling_interval=3)
        capture = OvsSflowCapture(spec, target, env, Sink())
        await capture.start()
        try:
            assert capture.extra == {"SFlowSocket": f"127.0.0.1:{low}"}
            row = ovsdb.vsctl("get", "bridge", "sksbr0", "sflow")
            assert row != "[]"
            assert ovsdb.vsctl("get", "sflow", row, "targets") == f'["127.0.0.1:{low}"]'
            assert ovsdb.vsctl("get", "sflow", row, "sampling") == "7"
            assert ovsdb.vsctl("get", "sflow", row, "polling") == "3"
            assert ovsdb.vsctl("get", "sflow", row, "header") == "128"
            assert ovsdb.vsctl("get", "sflow", row, "agent") == "lo"
            ids = ovsdb.vsctl("get", "sflow", row, "external_ids").replace('"', "")
            assert f"skydive-probe-id={bridge_uuid.replace('-', '_')}" in ids
            assert "skydive-capture-id=sks-capture" in ids
        finally:
            await capture.stop()
        assert ovsdb.vsctl("get", "bridge", "sksbr0", "sflow") == "[]"
        assert ovsdb.vsctl("list", "sflow") == ""  # not a root table: collected
        assert env.sflow_ports.take() == [low]

    run(scenario)


def test_stop_leaves_an_sflow_someone_else_set(ovsdb: Server, bridge: str) -> None:
    bridge_uuid = bridge
    low, high = free_udp_ports(1)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, sflow=(low, high), ovs={"ovsdb": ovsdb.remote})
        target = make_target(type="ovsbridge", metadata={"UUID": bridge_uuid})
        capture = OvsSflowCapture(make_spec("ovssflow"), target, env, Sink())
        await capture.start()
        ovsdb.vsctl(
            "--", "--id=@s", "create", "sflow", 'targets="10.0.0.9:6343"',
            "--", "set", "bridge", "sksbr0", "sflow=@s",
        )  # fmt: skip
        await capture.stop()

    run(scenario)
    row = ovsdb.vsctl("get", "bridge", "sksbr0", "sflow")
    assert ovsdb.vsctl("get", "sflow", row, "targets") == '["10.0.0.9:6343"]'


def test_a_missing_bridge_fails_the_start_and_closes_the_collector(ovsdb: Server) -> None:
    low, high = free_udp_ports(1)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, sflow=(low, high), ovs={"ovsdb": ovsdb.remote})
        uuid = "0d1a7c6e-0000-4000-8000-000000000000"
        target = make_target(type="ovsbridge", name="sksgone", metadata={"UUID": uuid})
        capture = OvsSflowCapture(make_spec("ovssflow"), target, env, Sink())
        with pytest.raises(ProbeError, match=r"'sksgone'.* is not in OVSDB"):
            await capture.start()
        assert env.sflow_ports.take() == [low]
        await capture.stop()  # harmless after a failed start

    run(scenario)
    assert ovsdb.vsctl("list", "sflow") == ""


def test_ovsdb_errors_carry_the_servers_message(ovsdb: Server, tmp_path: Path) -> None:
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        async with OvsdbClient(ovsdb.remote) as client:
            bad = [{"op": "insert", "table": "sFlow", "row": {"nosuchcolumn": 1}}]
            with pytest.raises(ProbeError, match=r"OVSDB transaction failed: .*nosuchcolumn"):
                await client.transact(bad)
            with pytest.raises(ProbeError, match="unknown database"):
                await client.transact([], database="Nope")
            assert await client.call("echo", ["sks"]) == ["sks"]
        with pytest.raises(ProbeError, match="cannot connect"):
            await OvsdbClient(f"unix:{tmp_path}/nothing.sock").connect()
        with pytest.raises(ProbeError, match="not connected"):
            await OvsdbClient(ovsdb.remote).transact([])

    run(scenario)


def test_a_wildcard_collector_is_given_to_ovs_as_loopback(ovsdb: Server, bridge: str) -> None:
    low, high = free_udp_ports(1)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(
            loop,
            sflow=(low, high),
            ovs={"ovsdb": ovsdb.remote},
            agent={"flow": {"sflow": {"bind_address": "0.0.0.0"}}},
        )
        target = make_target(type="ovsbridge", metadata={"UUID": bridge})
        capture = OvsSflowCapture(make_spec("ovssflow"), target, env, Sink())
        await capture.start()
        try:
            assert capture.extra == {"SFlowSocket": f"0.0.0.0:{low}"}
            row = ovsdb.vsctl("get", "bridge", "sksbr0", "sflow")
            assert ovsdb.vsctl("get", "sflow", row, "targets") == f'["127.0.0.1:{low}"]'
        finally:
            await capture.stop()

    run(scenario)
