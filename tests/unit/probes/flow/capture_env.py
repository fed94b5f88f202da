"""Test helpers shared by the capture probe tests: a CaptureEnv with a one-node graph."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from pyskydive.config import Config
from pyskydive.graph import Graph
from pyskydive.probes.flow.base import CaptureEnv, CaptureSpec, CaptureTarget, PortPool
from pyskydive.probes.topology.nsutil import NetnsRunner

NODE_ID = "sks-node"
NODE_TID = "sks-tid"


def free_udp_ports(count: int) -> tuple[int, int]:
    """A range of ``count`` consecutive loopback ports where none is bound right now."""
    return _free_range(socket.SOCK_DGRAM, count)


def free_tcp_ports(count: int) -> tuple[int, int]:
    return _free_range(socket.SOCK_STREAM, count)


def _free_range(kind: int, count: int) -> tuple[int, int]:
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            low = int(s.getsockname()[1])
        if low + count > 65535:
            continue
        ok = True
        for port in range(low, low + count):
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return low, low + count - 1
    raise RuntimeError("no free port range on loopback")


class Sink:
    """A FlowSink that keeps every batch (thread-safe, as the interface requires)."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, flows: list[dict[str, Any]]) -> None:
        with self._lock:
            self.batches.append(list(flows))

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last version of every flow shipped, by UUID."""
        with self._lock:
            return {f["UUID"]: f for batch in self.batches for f in batch}


def make_env(
    loop: asyncio.AbstractEventLoop,
    *,
    sflow: tuple[int, int] = (6345, 6355),
    pcapsocket: tuple[int, int] = (8100, 8132),
    flow: dict[str, Any] | None = None,
    **config: Any,
) -> CaptureEnv:
    cfg = Config(flow={"update": 1} if flow is None else flow, **config)
    graph = Graph("sks-host")
    graph.add_node(NODE_ID, {"Name": "sks0", "Type": "device", "TID": NODE_TID}, origin="test")
    return CaptureEnv(
        config=cfg,
        graph=graph,
        runner=NetnsRunner(),
        loop=loop,
        sflow_ports=PortPool(*sflow),
        pcapsocket_ports=PortPool(*pcapsocket),
    )


def make_target(**kw: Any) -> CaptureTarget:
    base: dict[str, Any] = {
        "node_id": NODE_ID,
        "tid": NODE_TID,
        "name": "sks0",
        "type": "device",
    }
    base.update(kw)
    return CaptureTarget(**base)


def make_spec(capture_type: str, **kw: Any) -> CaptureSpec:
    return CaptureSpec(id=kw.pop("id", "sks-capture"), type=capture_type, **kw)
