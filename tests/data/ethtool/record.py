"""Record the SIOCETHTOOL conversation with real interfaces as golden test data (root).

    PYTHONPATH=src python3 tests/data/ethtool/record.py [OUTDIR]

Creates a throwaway namespace ``skerec`` holding a veth pair, a bridge (with one end of the
veth as its port) and a tap, plus its ``lo``; asks each with the probe's own query (every
request and reply, or errno, is kept as hex) and with the ethtool program (``-i``, ``-k``),
whose output the tests use as an independent oracle. Everything is removed at the end.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from pyskydive.probes.topology.ethtool import ioctl_transact
from pyskydive.probes.topology.ethtool_codec import query, to_metadata
from pyskydive.probes.topology.nsutil import call_in_netns

NS = "skerec"
DEVICES = {
    "veth": "skerecveth0",
    "bridge": "skerecbr0",
    "tun": "skerectap0",
    "lo": "lo",
}


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def record(name: str) -> dict[str, Any]:
    import socket

    exchanges: list[dict[str, Any]] = []

    def run() -> dict[str, Any]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            real = ioctl_transact(sock.fileno(), name)

            def transact(request: bytes) -> bytes:
                entry: dict[str, Any] = {"request": request.hex()}
                exchanges.append(entry)
                try:
                    reply = real(request)
                except OSError as exc:
                    entry["errno"] = exc.errno
                    raise
                entry["reply"] = reply.hex()
                return reply

            return to_metadata(query(transact))

    metadata = call_in_netns(f"/var/run/netns/{NS}", run)
    return {
        "interface": name,
        "kernel": platform.release(),
        "exchanges": exchanges,
        "metadata": metadata,
        "ethtool_i": subprocess.run(
            ["ip", "netns", "exec", NS, "ethtool", "-i", name], capture_output=True, text=True
        ).stdout,
        "ethtool_k": sh(f"ip netns exec {NS} ethtool -k {name}"),
    }


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(__file__))
    sh(f"ip netns add {NS}")
    try:
        sh(f"ip -n {NS} link add skerecveth0 type veth peer name skerecveth1")
        sh(f"ip -n {NS} link add skerecbr0 type bridge")
        sh(f"ip -n {NS} link set skerecveth1 master skerecbr0")
        sh(f"ip netns exec {NS} ip tuntap add skerectap0 mode tap")
        for dev in ("lo", "skerecveth0", "skerecveth1", "skerecbr0", "skerectap0"):
            sh(f"ip -n {NS} link set {dev} up")
        for kind, name in DEVICES.items():
            data = record(name)
            path = out / f"{kind}.json"
            path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            print(f"{path}: {len(data['exchanges'])} exchanges")
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
