"""The flow record and its Skydive JSON (DESIGN §2.5).

``Flow`` and ``Metric`` are mutable slotted dataclasses: the flow table updates them in place on
every packet (the hot path), and ``to_wire()`` takes the JSON snapshot the shell ships. Field
names on the wire follow Skydive v0.28's ``flow.proto``/JSON (``ABPackets``, ``LayersPath``...).
Times are epoch milliseconds, except ``Metric.RTT`` (nanoseconds, as Skydive's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["FinishType", "Flow", "FlowLayer", "ICMPLayer", "Metric", "TCPMetric"]


class FinishType(StrEnum):
    NOT_FINISHED = "NOT_FINISHED"
    TIMEOUT = "TIMEOUT"
    TCP_FIN = "TCP_FIN"
    TCP_RST = "TCP_RST"


@dataclass(slots=True, frozen=True)
class FlowLayer:
    """Link, Network or Transport: ``{Protocol, A, B, ID}``; A is the first sender."""

    protocol: str
    a: str | int  # addresses are strings, ports ints (Skydive v0.28's TransportLayer)
    b: str | int
    id: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"Protocol": self.protocol, "A": self.a, "B": self.b, "ID": self.id}


@dataclass(slots=True, frozen=True)
class ICMPLayer:
    type: str  # Skydive's ICMPType enum name ("ECHO", "NEIGHBOR", ...)
    code: int
    id: int

    def to_wire(self) -> dict[str, Any]:
        return {"Type": self.type, "Code": self.code, "ID": self.id}


@dataclass(slots=True)
class Metric:
    ab_packets: int = 0
    ab_bytes: int = 0
    ba_packets: int = 0
    ba_bytes: int = 0
    start: int = 0
    last: int = 0
    rtt: int = 0  # nanoseconds, 0 = not measured (see pyskydive.flow.table)

    def copy(self) -> Metric:
        return Metric(
            self.ab_packets,
            self.ab_bytes,
            self.ba_packets,
            self.ba_bytes,
            self.start,
            self.last,
            self.rtt,
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "ABPackets": self.ab_packets,
            "ABBytes": self.ab_bytes,
            "BAPackets": self.ba_packets,
            "BABytes": self.ba_bytes,
            "Start": self.start,
            "Last": self.last,
            "RTT": self.rtt,
        }


@dataclass(slots=True)
class TCPMetric:
    """First SYN/FIN/RST time seen in each direction (0 = none), as Skydive's TCPMetric."""

    ab_syn_start: int = 0
    ba_syn_start: int = 0
    ab_fin_start: int = 0
    ba_fin_start: int = 0
    ab_rst_start: int = 0
    ba_rst_start: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "ABSynStart": self.ab_syn_start,
            "BASynStart": self.ba_syn_start,
            "ABFinStart": self.ab_fin_start,
            "BAFinStart": self.ba_fin_start,
            "ABRstStart": self.ab_rst_start,
            "BARstStart": self.ba_rst_start,
        }


@dataclass(slots=True, eq=False)
class Flow:
    uuid: str
    layers_path: str
    node_tid: str
    capture_id: str
    tracking_id: str
    l3_tracking_id: str
    start: int
    last: int
    metric: Metric
    application: str = ""
    link: FlowLayer | None = None
    network: FlowLayer | None = None
    transport: FlowLayer | None = None
    icmp: ICMPLayer | None = None
    tcp_metric: TCPMetric | None = None
    parent_uuid: str = ""
    finish_type: FinishType = FinishType.NOT_FINISHED
    last_update_metric: Metric | None = None
    # table bookkeeping, not on the wire
    a_endpoint: tuple[Any, ...] = ()
    updated_metric: Metric = field(default_factory=Metric)  # snapshot at the last update
    rtt_probe: int = -1  # time (ns) of the SYN / echo request awaiting its answer; -1: none
    short: bool = False  # ARP/DNS: short expiry

    def to_wire(self) -> dict[str, Any]:
        """Skydive's flow JSON; optional sections are left out when absent."""
        d: dict[str, Any] = {
            "UUID": self.uuid,
            "LayersPath": self.layers_path,
            "Application": self.application,
            "TrackingID": self.tracking_id,
            "L3TrackingID": self.l3_tracking_id,
            "NodeTID": self.node_tid,
            "CaptureID": self.capture_id,
            "Start": self.start,
            "Last": self.last,
            "Metric": self.metric.to_wire(),
        }
        if self.link is not None:
            d["Link"] = self.link.to_wire()
        if self.network is not None:
            d["Network"] = self.network.to_wire()
        if self.transport is not None:
            d["Transport"] = self.transport.to_wire()
        if self.icmp is not None:
            d["ICMP"] = self.icmp.to_wire()
        if self.tcp_metric is not None:
            d["TCPMetric"] = self.tcp_metric.to_wire()
        if self.last_update_metric is not None:
            d["LastUpdateMetric"] = self.last_update_metric.to_wire()
        if self.parent_uuid:
            d["ParentUUID"] = self.parent_uuid
        if self.finish_type is not FinishType.NOT_FINISHED:
            d["FinishType"] = self.finish_type.value
        return d
