"""What every capture probe is, and what it gets from the agent (DESIGN.md §2.5).

Theory of operation
-------------------
The analyzer decides which captures run where; the agent's
:class:`~pyskydive.agent.captures.CaptureManager` starts one :class:`FlowCapture` per (capture,
node) it is told about and stops it when told otherwise. A capture owns one
:class:`~pyskydive.flow.FlowTable`: it feeds it packets (from a kernel ring, a socket, sFlow
samples...) and ticks it about once a second with :meth:`FlowCapture.flush`, which hands the
flows due for an update (every ``flow.update``) or expired to the ``sink``. The table is touched
by ONE thread only: either the event loop (socket-based captures) or the capture's own reader
thread (afpacket, pcap), which then also does the flushing; the sink is thread-safe.

A capture reports its counters with :meth:`FlowCapture.stats` (read from the loop; plain ints,
so a slightly stale value is fine) and extra metadata for the node's ``Captures`` entry (the
pcapsocket's address, the sFlow collector's) with :attr:`FlowCapture.extra`.

``start()`` raises :class:`~pyskydive.errors.ProbeError` with a one-line reason when the capture
cannot run (interface gone, port taken, OVS refused...): the manager shows it on the node as
``State: error``. ``stop()`` never raises; it ships the flows still in the table first.

Capture types (the names of the capture resource's ``Type``), which types a node supports and
its default type are pure rules in :mod:`pyskydive.flow.captures` (re-exported here), shared by
the analyzer (to refuse a capture with a 400) and the agent.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pyskydive.config import Config
from pyskydive.flow import FlowTable
from pyskydive.flow.captures import CAPTURE_TYPES, default_type, supports, unsupported_reason
from pyskydive.flow.keys import LayerKeyMode
from pyskydive.graph import Graph, now_ms
from pyskydive.probes.topology.nsutil import NetnsRunner

__all__ = [
    "CAPTURE_TYPES",
    "CaptureEnv",
    "CaptureSpec",
    "CaptureStats",
    "CaptureTarget",
    "FlowCapture",
    "FlowSink",
    "PortPool",
    "default_type",
    "supports",
    "unsupported_reason",
]

#: Receives flows as wire dicts (``Flow.to_wire()``); callable from any thread.
FlowSink = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """The parts of a capture resource (DESIGN.md §2.2) a probe uses, typed."""

    id: str
    type: str  # resolved: never empty
    bpf_filter: str = ""
    name: str = ""
    layer_key_mode: LayerKeyMode = LayerKeyMode.L2
    port: int = 0  # 0: pick one from the configured range
    sampling_rate: int = 1
    polling_interval: int = 10
    header_size: int = 0  # 0: the probe's default snapshot length

    @classmethod
    def from_resource(
        cls, capture: Mapping[str, Any], capture_type: str, default_mode: str = "L2"
    ) -> CaptureSpec:
        def _int(key: str, default: int) -> int:
            value = capture.get(key)
            return value if isinstance(value, int) and value > 0 else default

        mode = capture.get("LayerKeyMode") or default_mode
        return cls(
            id=str(capture.get("UUID", "")),
            type=capture_type,
            bpf_filter=str(capture.get("BPFFilter") or ""),
            name=str(capture.get("Name") or ""),
            layer_key_mode=LayerKeyMode(mode if mode in ("L2", "L3") else default_mode),
            port=_int("Port", 0),
            sampling_rate=_int("SamplingRate", 1),
            polling_interval=_int("PollingInterval", 10),
            header_size=_int("HeaderSize", 0),
        )


@dataclass(frozen=True, slots=True)
class CaptureTarget:
    """The node a capture runs on, as the agent knows it when the capture starts."""

    node_id: str
    tid: str
    name: str
    type: str
    if_index: int = 0
    netns: str = "/proc/self/ns/net"  # a file that opens the interface's namespace
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CaptureStats:
    packets_received: int = 0
    packets_dropped: int = 0  # by the kernel (ring full) or for lack of table room
    decode_errors: int = 0
    flows: int = 0


class PortPool:
    """Ports handed to captures from ``[low, high]``; :meth:`take` a free one, :meth:`give`."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self._used: set[int] = set()

    def take(self, wanted: int = 0) -> list[int]:
        """Candidate ports, best first: ``wanted`` alone, or every free port of the range."""
        if wanted:
            return [wanted]
        return [p for p in range(self.low, self.high + 1) if p not in self._used]

    def hold(self, port: int) -> None:
        self._used.add(port)

    def give(self, port: int) -> None:
        self._used.discard(port)


@dataclass(eq=False)
class CaptureEnv:
    """What the agent lends to captures: config, netns runner, port pools, the loop."""

    config: Config
    #: The agent's graph: touch it on the loop only (sFlow counters go on the capture node).
    graph: Graph
    runner: NetnsRunner
    loop: asyncio.AbstractEventLoop
    sflow_ports: PortPool
    pcapsocket_ports: PortPool

    @classmethod
    def from_config(cls, config: Config, graph: Graph, runner: NetnsRunner) -> CaptureEnv:
        flow = config.agent.flow
        return cls(
            config=config,
            graph=graph,
            runner=runner,
            loop=asyncio.get_running_loop(),
            sflow_ports=PortPool(flow.sflow.port_min, flow.sflow.port_max),
            pcapsocket_ports=PortPool(flow.pcapsocket.min_port, flow.pcapsocket.max_port),
        )

    def new_table(self, spec: CaptureSpec, target: CaptureTarget) -> FlowTable:
        flow = self.config.flow
        return FlowTable(
            target.tid,
            spec.id,
            layer_key_mode=spec.layer_key_mode,
            update_every_ms=int(flow.update) * 1000,
            expire_after_ms=int(flow.expire) * 1000,
            max_entries=flow.max_entries,
        )


class FlowCapture(ABC):
    """One running capture on one node (see the module docstring)."""

    #: True when the capture's own thread ticks its table (calls :meth:`flush`); False: the
    #: agent calls :meth:`flush` on the loop about once a second.
    owns_ticks: ClassVar[bool] = False

    def __init__(
        self, spec: CaptureSpec, target: CaptureTarget, env: CaptureEnv, sink: FlowSink
    ) -> None:
        self.spec = spec
        self.target = target
        self.env = env
        self.sink = sink
        self.table = env.new_table(spec, target)
        #: Extra keys of the node's Captures entry (e.g. {"PCAPSocket": "127.0.0.1:8100"}).
        self.extra: dict[str, Any] = {}
        #: Set when the capture failed after it started (its node shows State: error).
        self.error = ""
        self._flush_lock = threading.Lock()

    @abstractmethod
    async def start(self) -> None:
        """Start capturing; :class:`~pyskydive.errors.ProbeError` with the reason if not."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop capturing and ship what the table still holds; never raises."""

    def stats(self) -> CaptureStats:
        s = self.table.stats
        return CaptureStats(
            packets_received=s.packets,
            packets_dropped=s.overflow,
            decode_errors=s.decode_errors,
            flows=len(self.table),
        )

    def flush(self, now: int | None = None, *, final: bool = False) -> None:
        """Tick the table (on its owning thread) and ship updated and expired flows.

        ``final``: every flow with packets since its last update is shipped now, whatever
        ``flow.update`` says (the capture is stopping).
        """
        with self._flush_lock:
            table = self.table
            t = now_ms() if now is None else now
            if final:
                table.timers.update_every_ms = 0
            updated, expired = table.tick(t)
            if updated or expired:
                self.sink([f.to_wire() for f in updated] + [f.to_wire() for f in expired])
