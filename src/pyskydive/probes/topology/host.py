"""The host node: the root of an agent's graph (ID and Name from ``host_id``)."""

from __future__ import annotations

import os
import platform
import socket
from typing import Any

from pyskydive.graph import Graph, Node
from pyskydive.probes.topology.tid import host_tid

__all__ = ["add_host_node", "host_metadata"]


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep:
                    out[key] = value.strip('"')
    except OSError:
        pass
    return out


def _cpus() -> list[dict[str, Any]]:
    cpus: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if not sep:
                    if current:
                        cpus.append(current)
                    current = {}
                elif key == "processor":
                    current["CPU"] = int(value)
                elif key == "vendor_id":
                    current["VendorID"] = value
                elif key == "model name":
                    current["ModelName"] = value
                elif key == "cpu MHz":
                    current["Mhz"] = float(value)
                elif key == "cpu cores":
                    current["Cores"] = int(value)
        if current:
            cpus.append(current)
    except (OSError, ValueError):
        pass
    return cpus


def host_metadata(host_id: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Skydive's host metadata, with the operator's ``agent.metadata`` merged on top."""
    release = _os_release()
    md: dict[str, Any] = {
        "Name": host_id,
        "Type": "host",
        "Hostname": socket.gethostname(),
        "OS": platform.system().lower(),
        "Platform": release.get("ID", ""),
        "PlatformVersion": release.get("VERSION_ID", ""),
        "KernelVersion": platform.release(),
        "CPUCount": os.cpu_count() or 0,
        "CPU": _cpus(),
        "TID": host_tid(host_id),
    }
    md.update(extra)
    md["Name"], md["Type"] = host_id, "host"
    return md


def add_host_node(graph: Graph, host_id: str, origin: str, extra: dict[str, Any]) -> Node:
    return graph.add_node(host_id, host_metadata(host_id, extra), origin=origin)
