"""On-demand captures, agent side: run what the analyzer says, show it on the nodes.

Theory of operation
-------------------
Each analyzer sends this agent its whole desired capture set (``OnDemand``/``CaptureSet``, see
:mod:`pyskydive.analyzer.ondemand`); :meth:`CaptureManager.apply` keeps the latest set per
analyzer and the manager runs their union, keyed by (node ID, capture ID). One worker task
reconciles, so starts and stops never overlap: a capture no longer wanted is stopped (its table
flushed first), a new one is built from the node as it is now (:class:`CaptureTarget`: its
TID, name, ifindex and the file of its network namespace) and started. A capture that cannot
start stays in the set with ``State: error`` and its reason; it is retried when the set
changes or after :data:`RETRY_S`.

Every second the manager ticks the tables of the captures that run on the loop (the threaded
ones tick themselves) and rewrites each node's ``Captures`` metadata when something in it
changed: ``[{"ID", "State", "Type", "Name", "BPFFilter", "PacketsReceived", "PacketsDropped",
"DecodeErrors", "Error"?, ...extra}]`` (Skydive v0.28's keys, plus ours). A node deleted from
the graph stops its captures at once; the analyzer's next set confirms it, and when the node
comes back the capture resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyskydive.errors import ProbeError, SkydiveError
from pyskydive.flow.captures import default_type, unsupported_reason
from pyskydive.graph import BaseListener, Graph, Node
from pyskydive.probes.flow.base import (
    CaptureEnv,
    CaptureSpec,
    CaptureTarget,
    FlowCapture,
    FlowSink,
)
from pyskydive.probes.topology.registry import TopologyContext

__all__ = ["CaptureManager", "CaptureTypes"]

log = logging.getLogger(__name__)

TICK_S = 1.0
RETRY_S = 10.0

#: Capture type name -> class; built by the agent's composition root.
CaptureTypes = Mapping[str, type[FlowCapture]]
_Key = tuple[str, str]  # (node ID, capture ID)


@dataclass(eq=False)
class _Slot:
    node_id: str
    resource: dict[str, Any]
    capture: FlowCapture | None = None
    error: str = ""
    failed_at: float = 0.0


class CaptureManager(BaseListener):
    def __init__(
        self,
        ctx: TopologyContext,
        env: CaptureEnv,
        types: CaptureTypes,
        sink: FlowSink,
    ) -> None:
        self.ctx = ctx
        self.graph: Graph = ctx.graph
        self.env = env
        self.types = types
        self.sink = sink
        self._sets: dict[str, dict[_Key, dict[str, Any]]] = {}  # per analyzer
        self._slots: dict[_Key, _Slot] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._shown: dict[str, list[dict[str, Any]]] = {}  # node ID -> Captures last set

    async def __aenter__(self) -> CaptureManager:
        self.graph.add_listener(self)
        self._task = asyncio.create_task(self._run(), name="captures")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.graph.remove_listener(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for key in list(self._slots):
            await self._stop(key)

    # -- input -----------------------------------------------------------------------------

    def apply(self, analyzer: str, obj: Any) -> None:
        """A ``CaptureSet`` from ``analyzer``; a malformed one is logged and ignored."""
        entries = obj.get("Captures") if isinstance(obj, dict) else None
        if not isinstance(entries, list):
            log.warning("analyzer %s: CaptureSet without a Captures list, ignored", analyzer)
            return
        wanted: dict[_Key, dict[str, Any]] = {}
        for e in entries:
            node_id = e.get("NodeID") if isinstance(e, dict) else None
            capture = e.get("Capture") if isinstance(e, dict) else None
            if not isinstance(node_id, str) or not isinstance(capture, dict):
                log.warning("analyzer %s: bad CaptureSet entry %r, skipped", analyzer, e)
                continue
            capture_id = capture.get("UUID")
            if isinstance(capture_id, str) and capture_id:
                wanted[(node_id, capture_id)] = capture
        self._sets[analyzer] = wanted
        for slot in self._slots.values():
            slot.failed_at = 0.0  # a new set: retry failed captures now (the node may be back)
        self._wake.set()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (node_id, capture_id), slot in self._slots.items():
            out.setdefault(capture_id, {})[node_id] = self._entry(slot)
        return out

    # -- the worker --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            try:
                await self._reconcile()
                self._tick()
                self._show()
            except Exception:  # a bug: log, keep the other captures going
                log.exception("captures: reconcile failed")

    def _wanted(self) -> dict[_Key, dict[str, Any]]:
        union: dict[_Key, dict[str, Any]] = {}
        for wanted in self._sets.values():
            union.update(wanted)
        return union

    async def _reconcile(self) -> None:
        wanted = self._wanted()
        for key in [k for k in self._slots if k not in wanted]:
            await self._stop(key)
        now = time.monotonic()
        for key, resource in wanted.items():
            slot = self._slots.get(key)
            if slot is not None and slot.resource != resource:
                await self._stop(key)  # the capture was edited: restart with the new fields
                slot = None
            if slot is None:
                slot = self._slots[key] = _Slot(key[0], resource)
            elif slot.capture is not None or now - slot.failed_at < RETRY_S:
                continue
            await self._start(key, slot)

    async def _start(self, key: _Key, slot: _Slot) -> None:
        node = self.graph.get_node(slot.node_id)
        if node is None:
            slot.error, slot.failed_at = "the node is not (or no longer) here", time.monotonic()
            return
        resource = slot.resource
        ctype = str(resource.get("Type") or "") or default_type(node.metadata) or ""
        try:
            reason = unsupported_reason(ctype, node.metadata)
            if reason is not None:
                raise ProbeError(reason)
            cls = self.types.get(ctype)
            if cls is None:
                raise ProbeError(f"capture type {ctype!r} is not available on this agent")
            mode = self.env.config.flow.default_layer_key_mode
            spec = CaptureSpec.from_resource(resource, ctype, mode)
            capture = cls(spec, self._target(node), self.env, self.sink)
            await capture.start()
        except SkydiveError as exc:
            slot.error, slot.failed_at = str(exc), time.monotonic()
            log.warning("capture %s on %s: %s", key[1], node.metadata.get("Name"), exc)
            return
        slot.capture, slot.error = capture, ""
        log.info(
            "capture %s (%s) started on %s %s",
            key[1],
            ctype,
            node.metadata.get("Type"),
            node.metadata.get("Name"),
        )

    async def _stop(self, key: _Key) -> None:
        slot = self._slots.pop(key, None)
        if slot is None or slot.capture is None:
            return
        try:
            await slot.capture.stop()
        except Exception:  # stop() must not raise; a bug must not block the others
            log.exception("capture %s: stop failed", key[1])
        log.info("capture %s stopped on node %s", key[1], key[0])

    def _target(self, node: Node) -> CaptureTarget:
        md = node.metadata
        netns = self.ctx.namespaces.get("", "/proc/self/ns/net")
        for (ns_key, _), iface in self.ctx.interfaces.items():
            if iface is node:
                netns = self.ctx.namespaces.get(ns_key, netns)
                break
        ifindex = md.get("IfIndex")
        return CaptureTarget(
            node_id=node.id,
            tid=str(md.get("TID") or node.id),
            name=str(md.get("Name") or ""),
            type=str(md.get("Type") or ""),
            if_index=ifindex if isinstance(ifindex, int) else 0,
            netns=netns,
            metadata=dict(md),
        )

    def _tick(self) -> None:
        for key, slot in self._slots.items():
            c = slot.capture
            if c is not None and not c.owns_ticks:
                try:
                    c.flush()
                except Exception:
                    log.exception("capture %s: flush failed", key[1])

    # -- Captures metadata ---------------------------------------------------------------------

    @staticmethod
    def _entry(slot: _Slot) -> dict[str, Any]:
        r = slot.resource
        failed = slot.capture is None or bool(slot.capture.error)
        entry: dict[str, Any] = {
            "ID": r.get("UUID", ""),
            "State": "error" if failed else "active",
            "Type": r.get("Type", ""),
            "Name": r.get("Name", ""),
            "BPFFilter": r.get("BPFFilter", ""),
        }
        if slot.capture is not None:
            st = slot.capture.stats()
            entry["PacketsReceived"] = st.packets_received
            entry["PacketsDropped"] = st.packets_dropped
            entry["DecodeErrors"] = st.decode_errors
            entry.update(slot.capture.extra)
        if failed:
            entry["Error"] = slot.error if slot.capture is None else slot.capture.error
        return entry

    def _show(self) -> None:
        per_node: dict[str, list[dict[str, Any]]] = {}
        for slot in self._slots.values():
            per_node.setdefault(slot.node_id, []).append(self._entry(slot))
        for node_id in set(self._shown) | set(per_node):
            entries = sorted(per_node.get(node_id, []), key=lambda e: str(e["ID"]))
            if self._shown.get(node_id) == entries:
                continue
            node = self.graph.get_node(node_id)
            if node is not None:
                if entries:
                    self.graph.update_node(node, {"Captures": entries})
                else:
                    self.graph.update_node(node, delete=["Captures"])
            if entries:
                self._shown[node_id] = entries
            else:
                self._shown.pop(node_id, None)

    # -- graph listener: a deleted node takes its captures with it --------------------------

    def on_node_deleted(self, node: Node) -> None:
        if any(k[0] == node.id for k in self._slots):
            self._shown.pop(node.id, None)
            for key in [k for k in self._slots if k[0] == node.id]:
                slot = self._slots[key]
                if slot.capture is not None:
                    asyncio.get_running_loop().create_task(self._stop(key))
                else:
                    del self._slots[key]
