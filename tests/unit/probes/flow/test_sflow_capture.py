"""SflowCapture over a real loopback UDP socket, fed the real OVS datagrams (sflowtool as truth)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from capture_env import NODE_ID, Sink, free_udp_ports, make_env, make_spec, make_target

from pyskydive.errors import ProbeError
from pyskydive.probes.flow.base import CaptureEnv
from pyskydive.probes.flow.sflow import SflowCapture, SflowCounters
from pyskydive.protocols.sflow import CounterSample, GenericInterfaceCounters

REFERENCE = Path(__file__).parents[4].parent / "shared" / "reference" / "sflow-ovs"
BIN = REFERENCE / "sflow_samples.bin"
JSONL = REFERENCE / "sflow_samples.sflowtool.jsonl"

needs_reference = pytest.mark.skipif(
    not BIN.exists(), reason=f"reference OVS sFlow datagrams not found at {REFERENCE}"
)

_PROTO = {"1": "ICMPV4", "17": "UDP", "6": "TCP"}


def reference_datagrams() -> list[bytes]:
    data = BIN.read_bytes()
    out, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from(">I", data, off)
        out.append(data[off + 4 : off + 4 + n])
        off += 4 + n
    return out


def sflowtool() -> list[dict[str, Any]]:
    return [json.loads(line) for line in JSONL.read_text().splitlines()[1:]]


async def wait_until(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def run(scenario: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await scenario(asyncio.get_running_loop())

    asyncio.run(main())


def send(port: int, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for dg in datagrams:
            s.sendto(dg, ("127.0.0.1", port))


def expected_from_sflowtool() -> tuple[Counter[Any], Counter[Any], dict[str, dict[str, int]]]:
    """Packets and bytes per (protocol, address pair), and the last generic counters."""
    packets: Counter[Any] = Counter()
    octets: Counter[Any] = Counter()
    counters: dict[str, dict[str, int]] = {}
    for dg in sflowtool():
        for s in dg["samples"]:
            for e in s["elements"]:
                if s["sampleType"] == "FLOWSAMPLE" and e.get("flowSampleType") == "HEADER":
                    if "srcIP" not in e or e["IPProtocol"] not in _PROTO:
                        continue
                    key = (_PROTO[e["IPProtocol"]], frozenset((e["srcIP"], e["dstIP"])))
                    packets[key] += 1
                    octets[key] += int(e["sampledPacketSize"])
                elif e.get("counterBlock_tag") == "0:1":
                    counters[e["ifIndex"]] = {
                        "IfInOctets": int(e["ifInOctets"]),
                        "IfOutOctets": int(e["ifOutOctets"]),
                        "IfInUcastPkts": int(e["ifInUcastPkts"]),
                        "IfOutUcastPkts": int(e["ifOutUcastPkts"]),
                    }
    return packets, octets, counters


def l4_protocol(flow: dict[str, Any]) -> str | None:
    if "Transport" in flow:
        return str(flow["Transport"]["Protocol"])
    if "ICMP" in flow:
        return "ICMPV4" if flow["LayersPath"].endswith("ICMPv4") else "ICMPV6"
    return None


@needs_reference
def test_reference_datagrams_make_the_flows_and_counters_sflowtool_shows() -> None:
    want_packets, want_bytes, want_counters = expected_from_sflowtool()
    low, high = free_udp_ports(3)
    sink = Sink()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, sflow=(low, high))
        capture = SflowCapture(make_spec("sflow"), make_target(), env, sink)
        await capture.start()
        try:
            await check(env, capture)
        finally:
            await capture.stop()
        node = env.graph.get_node(NODE_ID)
        assert node is not None
        assert "SFlow" not in node.metadata
        assert env.sflow_ports.take() == list(range(low, high + 1))  # the port came back

    async def check(env: CaptureEnv, capture: SflowCapture) -> None:
        assert capture.extra == {"SFlowSocket": f"127.0.0.1:{low}"}
        datagrams = reference_datagrams()
        for i in range(0, len(datagrams), 10):  # paced: an unprivileged socket buffer is small
            await env.loop.run_in_executor(None, send, low, datagrams[i : i + 10])
            await wait_until("the datagrams", lambda n=i + 10: capture.datagrams == n)
        capture.flush()
        node = env.graph.get_node(NODE_ID)
        assert node is not None
        sflow = node.metadata["SFlow"]
        for if_index, values in want_counters.items():
            known = {k: v for k, v in values.items() if v}  # zeros are left out (omitempty)
            assert sflow["IfMetrics"][if_index] | known == sflow["IfMetrics"][if_index]
        total = sum(v["IfInOctets"] for v in want_counters.values())
        assert sflow["Metric"]["IfInOctets"] == total
        assert sflow["Metric"]["OvsDpNHit"] > 0
        assert capture.stats().decode_errors == 0

    run(scenario)
    got_packets: Counter[Any] = Counter()
    got_bytes: Counter[Any] = Counter()
    for flow in sink.latest().values():
        proto = l4_protocol(flow)
        if proto is None or "Network" not in flow or proto == "ICMPV6":
            continue
        key = (proto, frozenset((flow["Network"]["A"], flow["Network"]["B"])))
        m = flow["Metric"]
        got_packets[key] += m["ABPackets"] + m["BAPackets"]
        got_bytes[key] += m["ABBytes"] + m["BABytes"]
        assert flow["NodeTID"] == "sks-tid"
        assert flow["CaptureID"] == "sks-capture"
    assert got_packets == want_packets
    assert got_bytes == want_bytes


def test_malformed_datagrams_are_counted_and_the_collector_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    low, high = free_udp_ports(2)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, sflow=(low, high))
        capture = SflowCapture(make_spec("sflow"), make_target(), env, Sink())
        await capture.start()
        try:
            good = reference_datagrams()[:1] if BIN.exists() else []
            bad = [b"", b"\x00\x00\x00\x05" + b"\xff" * 40, b"\x00\x00\x00\x04"]
            await loop.run_in_executor(None, send, low, bad + good)
            await wait_until("every datagram", lambda: capture.datagrams == len(bad) + len(good))
            assert capture.malformed == len(bad)
            assert capture.stats().decode_errors >= len(bad)
        finally:
            await capture.stop()

    with caplog.at_level(logging.WARNING, logger="pyskydive.probes.flow.sflow"):
        run(scenario)
    warnings = [r for r in caplog.records if "malformed datagram" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: one line for the burst
    assert "\n" not in warnings[0].getMessage() and warnings[0].exc_info is None


@needs_reference
def test_the_bpf_filter_applies_to_the_sampled_headers() -> None:
    want_packets, _, _ = expected_from_sflowtool()
    want_icmp = Counter({k: v for k, v in want_packets.items() if k[0] == "ICMPV4"})
    assert want_icmp and len(want_icmp) < len(want_packets)
    datagrams = reference_datagrams()
    low, high = free_udp_ports(1)
    sink = Sink()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, sflow=(low, high))
        capture = SflowCapture(make_spec("sflow", bpf_filter="icmp"), make_target(), env, sink)
        await capture.start()
        try:
            for i in range(0, len(datagrams), 10):  # paced, as above
                await loop.run_in_executor(None, send, low, datagrams[i : i + 10])
                n = min(i + 10, len(datagrams))
                await wait_until("the datagrams", lambda n=n: capture.datagrams == n)
            assert capture.filtered > 0
            assert capture.stats().packets_received == sum(want_icmp.values())
            assert capture.counters.publish(0) is not None  # counter samples are not filtered
        finally:
            await capture.stop()

    run(scenario)
    got: Counter[Any] = Counter()
    for flow in sink.latest().values():
        assert flow["LayersPath"] == "Ethernet/IPv4/ICMPv4"
        m = flow["Metric"]
        got["ICMPV4", frozenset((flow["Network"]["A"], flow["Network"]["B"]))] += (
            m["ABPackets"] + m["BAPackets"]
        )
    assert got == want_icmp


def test_a_bad_bpf_filter_is_a_probe_error_at_start() -> None:
    low, high = free_udp_ports(1)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, sflow=(low, high))
        spec = make_spec("sflow", bpf_filter="icmp and")
        capture = SflowCapture(spec, make_target(), env, Sink())
        with pytest.raises(ProbeError, match="invalid BPF filter 'icmp and'"):
            await capture.start()
        assert env.sflow_ports.take() == [low]  # nothing was bound

    run(scenario)


def test_a_wanted_port_in_use_is_a_probe_error() -> None:
    low, high = free_udp_ports(1)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, sflow=(low, high))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", low))
            capture = SflowCapture(make_spec("sflow", port=low), make_target(), env, Sink())
            with pytest.raises(ProbeError, match=f"port {low} is in use"):
                await capture.start()
            other = SflowCapture(make_spec("sflow"), make_target(), env, Sink())
            with pytest.raises(ProbeError, match="no free port"):
                await other.start()
            await capture.stop()  # never started: a no-op
        assert env.sflow_ports.take() == [low]

    run(scenario)


def test_counters_keep_the_last_known_value_and_report_the_change() -> None:
    def sample(if_index: int, in_octets: int, in_ucast: int) -> CounterSample:
        gen = GenericInterfaceCounters(
            if_index, 6, 10**10, 1, 3, in_octets, in_ucast, 0, 0xFFFFFFFF, 0, 0, 0xFFFFFFFF,
            100, 1, 0xFFFFFFFF, 0xFFFFFFFF, 0, 0, 0,
        )  # fmt: skip
        return CounterSample(1, 0, if_index, (gen,))

    core = SflowCounters()
    assert core.publish(1000) is None
    core.update([sample(3, 500, 5), sample(4, 200, 2)])
    first = core.publish(1000)
    assert first is not None
    assert first["IfMetrics"]["3"] == {
        "IfInOctets": 500, "IfInUcastPkts": 5, "IfOutOctets": 100, "IfOutUcastPkts": 1,
    }  # fmt: skip
    assert first["Metric"] == {
        "IfInOctets": 700, "IfInUcastPkts": 7, "IfOutOctets": 200, "IfOutUcastPkts": 2,
        "Last": 1000,
    }  # fmt: skip
    assert first["LastUpdateMetric"] == {**first["Metric"], "Last": 1000}  # no Start yet
    assert core.publish(2000) is None  # nothing new
    core.update([sample(3, 0xFFFFFFFFFFFFFFFF, 8)])  # unknown octets: keep 500
    second = core.publish(2000)
    assert second is not None
    assert second["IfMetrics"]["3"]["IfInOctets"] == 500
    assert second["LastUpdateMetric"] == {"IfInUcastPkts": 3, "Start": 1000, "Last": 2000}
