"""Open vSwitch scale: 200 bridges x 10 ports created in one OVSDB transaction.

Set-up: a private ovsdb-server + ovs-vswitchd (userspace datapath, ``datapath_type=netdev``)
in a temporary directory — never the system's OVS — and one ``skydive analyzer`` plus one
``skydive agent`` (probes ``netlink,netns,ovsdb``, ``ovs.ovsdb`` pointing at the private
server). Then one ``ovs-vsctl`` transaction creates B bridges ``skobTTTBBB`` (default 200) with
P internal ports ``skopTTTBBBP`` each (default 10), so 2,000 ports: ovs-vswitchd makes a tap per
internal port (and one per bridge), which netlink reports too; the agent merges each tap with
its OVS interface (one node per interface).

Figures, from the moment the transaction is sent:
1. time until the analyzer's graph holds all B x P ``ovsport`` nodes (Gremlin ``Count()``
   polled every 0.2 s);
2. time until it holds all B x P interfaces typed ``internal`` that are merged with netlink's
   tap (they carry ``IfIndex`` and an OVS ``UUID``) and linked from their port;
3. the agent's CPU (and the analyzer's) over that whole window, as % of one core, and the
   agent's peak RSS.

No anchor: the original Skydive publishes no figure for this, and it cannot run here (its OVS
probe needs the Go toolchain and libraries this machine lacks).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from harness import (
    MIB,
    BenchError,
    CpuWindow,
    Result,
    RssSampler,
    cluster,
    need_root,
    run_main,
    run_tag,
    signals_deferred,
    wait_for,
)

NAME = "ovs"
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


class PrivateOvs:
    """ovsdb-server + ovs-vswitchd in their own directory, ended by their pidfiles' PIDs."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="skb-bench-ovs-"))
        self.sock = str(self.dir / "db.sock")
        self.env = dict(os.environ)
        for key in ("OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"):
            self.env[key] = str(self.dir)

    def run(self, *args: str, stdin: str | None = None, timeout: float = 600) -> str:
        try:
            out = subprocess.run(
                list(args),
                env=self.env,
                check=True,
                capture_output=True,
                text=True,
                input=stdin,
                timeout=timeout,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            raise BenchError(f"{args[0]} failed: {exc} {detail}".strip()) from exc
        return out.stdout

    def vsctl(self, args: list[str], timeout: float = 600) -> str:
        return self.run(
            "ovs-vsctl",
            f"--timeout={int(timeout)}",
            f"--db=unix:{self.sock}",
            *args,
            timeout=timeout + 10,
        )

    def start(self) -> PrivateOvs:
        db = str(self.dir / "conf.db")
        self.run("ovsdb-tool", "create", db, SCHEMA)
        self.run(
            "ovsdb-server",
            db,
            f"--remote=punix:{self.sock}",
            f"--pidfile={self.dir}/ovsdb-server.pid",
            "--detach",
            f"--log-file={self.dir}/ovsdb-server.log",
        )
        self.vsctl(["--no-wait", "init"])
        self.run(
            "ovs-vswitchd",
            f"unix:{self.sock}",
            f"--pidfile={self.dir}/ovs-vswitchd.pid",
            "--detach",
            f"--log-file={self.dir}/ovs-vswitchd.log",
        )
        return self

    def pid(self, daemon: str) -> int | None:
        try:
            return int((self.dir / f"{daemon}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        with contextlib.suppress(BenchError):
            bridges = [b for b in self.vsctl(["list-br"], 60).split() if b.startswith("skob")]
            if bridges:
                args: list[str] = []
                for b in bridges:
                    args += ["--", "--if-exists", "del-br", b]
                self.vsctl(args, 600)
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            pid = self.pid(daemon)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.05)
                os.kill(pid, signal.SIGKILL)


def count(port: int, query: str) -> int:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/topology", json={"GremlinQuery": query}, timeout=60
    )
    r.raise_for_status()
    value = r.json()
    return int(value[0] if isinstance(value, list) else value)


def run(*, quick: bool = False, bridges: int | None = None, ports: int = 10) -> list[Result]:
    need_root(NAME)
    bridges = bridges if bridges is not None else (20 if quick else 200)
    total = bridges * ports
    tag = run_tag()
    names = [f"skob{tag}{b:03d}" for b in range(bridges)]
    args: list[str] = []
    for b, bridge in enumerate(names):
        args += ["--", "add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev"]
        for p in range(ports):
            port = f"skop{tag}{b:03d}{p}"
            args += [
                "--",
                "add-port",
                bridge,
                port,
                "--",
                "set",
                "interface",
                port,
                "type=internal",
            ]
    ovs = PrivateOvs()
    try:
        ovs.start()
        with cluster(NAME) as c:
            analyzer, port = c.analyzer(f"skbsa{tag}")
            agent = c.agent(
                f"skbsg{tag}",
                port,
                extra={
                    "SKYDIVE_AGENT_TOPOLOGY_PROBES": "netlink,netns,ovsdb",
                    "SKYDIVE_OVS_OVSDB": f"unix:{ovs.sock}",
                },
            )
            pids = {"agent": agent.pid, "analyzer": analyzer.pid}
            q_ports = f"G.V().Has('Type', 'ovsport', 'Name', Regex('skop{tag}.*')).Count()"
            q_ifaces = (
                f"G.V().Has('Type', 'internal', 'Name', Regex('skop{tag}.*'))"
                ".HasKey('IfIndex').HasKey('UUID').In('Type', 'ovsport').Count()"
            )
            window = CpuWindow(pids)
            with RssSampler(pids) as sampler:
                window.start()
                t0 = time.monotonic()
                ovs.vsctl(["--no-wait", *args], 600)
                t_vsctl = time.monotonic() - t0

                def ports_in() -> bool:
                    agent.check_alive()
                    return count(port, q_ports) >= total

                wait_for(f"{total} ovsport nodes on the analyzer", ports_in, 600, step=0.2)
                t_ports = time.monotonic() - t0

                def ifaces_in() -> bool:
                    agent.check_alive()
                    return count(port, q_ifaces) >= total

                wait_for(f"{total} merged internal interfaces", ifaces_in, 600, step=0.2)
                t_ifaces = time.monotonic() - t0
                cpu = window.stop()
            rss = {name: n / MIB for name, n in sampler.max.items()}
    finally:
        with signals_deferred():
            ovs.stop()
    setup = f"{bridges} bridges x {ports} internal ports, one ovs-vsctl transaction"
    return [
        Result(NAME, f"all {total} ports on the analyzer", t_ports, "s", note=setup),
        Result(
            NAME,
            f"all {total} interfaces merged",
            t_ifaces,
            "s",
            note="internal, with IfIndex (netlink) and UUID (OVS), linked from their port",
        ),
        Result(NAME, "ovs-vsctl transaction", t_vsctl, "s", note="--no-wait: OVSDB commit only"),
        Result(
            NAME,
            "agent CPU until merged",
            cpu["agent"],
            "%",
            note=f"{window.seconds:.1f}s window; {window.own['agent']:.1f}% excl. children; "
            f"background {window.background:.0f}%",
        ),
        Result(NAME, "analyzer CPU until merged", cpu["analyzer"], "%"),
        Result(NAME, "agent RSS peak", rss["agent"], "MiB"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="20 bridges")
    parser.add_argument("--bridges", type=int, help="bridges (200)")
    parser.add_argument("--ports", type=int, default=10, help="internal ports per bridge (10)")
    args = parser.parse_args(argv)
    return run_main(lambda: run(quick=args.quick, bridges=args.bridges, ports=args.ports))


if __name__ == "__main__":
    sys.exit(main())
