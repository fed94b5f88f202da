"""PcapSocketCapture over a real loopback TCP socket: same flows as the API's pcap upload."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from capture_env import Sink, free_tcp_ports, make_env, make_spec, make_target

from pyskydive.api.pcap import PcapIngest
from pyskydive.errors import ProbeError
from pyskydive.probes.flow.pcapsocket import PcapSocketCapture
from pyskydive.protocols.pcap import LINKTYPE_LINUX_SLL, write_pcap

FRAMES = Path(__file__).parents[3] / "data" / "packets" / "frames.pcap"
_IGNORED = ("UUID", "CaptureID", "NodeTID", "ParentUUID")


def comparable(flows: list[dict[str, Any]]) -> list[str]:
    """Flows without the keys that name the capture; sorted, as JSON strings."""
    return sorted(
        json.dumps({k: v for k, v in f.items() if k not in _IGNORED}, sort_keys=True) for f in flows
    )


def ingest(data: bytes) -> list[dict[str, Any]]:
    pi = PcapIngest("oracle")
    pi.feed(data)
    pi.finish()
    return list(pi.flows.values())


def stream(port: int, data: bytes, chunk: int = 100) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for i in range(0, len(data), chunk):
            s.sendall(data[i : i + chunk])
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        assert s.recv(1) == b""  # the capture closes its end when the stream is done


def stream_refused(port: int, data: bytes) -> None:
    """Send ``data`` to a capture that may close the connection (reset) before reading it all."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as s,
        contextlib.suppress(OSError),
    ):
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)


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


def test_a_streamed_pcap_gives_the_flows_of_the_pcap_upload() -> None:
    data = FRAMES.read_bytes()
    low, high = free_tcp_ports(2)
    sink = Sink()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, pcapsocket=(low, high), flow={})  # Skydive's default timers
        capture = PcapSocketCapture(make_spec("pcapsocket"), make_target(), env, sink)
        await capture.start()
        try:
            assert capture.extra == {"PCAPSocket": f"127.0.0.1:{low}"}
            await loop.run_in_executor(None, stream, low, data)
            await wait_until(
                "the stream's end", lambda: capture.stats().flows == 0 and sink.batches
            )
            assert capture.stats().packets_received == 30
        finally:
            await capture.stop()
        assert env.pcapsocket_ports.take() == [low, high]

    run(scenario)
    got = list(sink.latest().values())
    assert {f["NodeTID"] for f in got} == {"sks-tid"}
    assert {f["CaptureID"] for f in got} == {"sks-capture"}
    want = ingest(data)
    assert len(want) > 5
    assert comparable(got) == comparable(want)


def test_a_bad_stream_is_counted_and_the_listener_keeps_accepting() -> None:
    data = FRAMES.read_bytes()
    low, high = free_tcp_ports(1)
    sink = Sink()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, pcapsocket=(low, high), flow={})
        capture = PcapSocketCapture(make_spec("pcapsocket"), make_target(), env, sink)
        await capture.start()
        try:
            await loop.run_in_executor(None, stream, low, b"not a pcap file at all, sorry")
            await loop.run_in_executor(None, stream, low, data[:-7])  # truncated record
            await wait_until("two bad streams", lambda: capture.bad_streams == 2)
            assert capture.stats().decode_errors >= 2
            n = len(sink.batches)
            await loop.run_in_executor(None, stream, low, data)
            await wait_until("the good stream", lambda: capture.connections == 3)
            await wait_until("its flows", lambda: len(sink.batches) > n)
        finally:
            await capture.stop()

    run(scenario)


def test_a_wanted_port_in_use_is_a_probe_error() -> None:
    low, high = free_tcp_ports(1)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, pcapsocket=(low, high))
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", low))
            taken.listen()
            capture = PcapSocketCapture(
                make_spec("pcapsocket", port=low), make_target(), env, Sink()
            )
            with pytest.raises(ProbeError, match=f"port {low} is in use"):
                await capture.start()

    run(scenario)


def test_stop_ships_the_flows_of_a_stream_still_open() -> None:
    data = FRAMES.read_bytes()
    low, high = free_tcp_ports(1)
    sink = Sink()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, pcapsocket=(low, high), flow={})
        capture = PcapSocketCapture(make_spec("pcapsocket"), make_target(), env, sink)
        await capture.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", low)
        try:
            writer.write(data)  # and no end of stream: the peer keeps it open
            await writer.drain()
            await wait_until("every packet", lambda: capture.stats().packets_received == 30)
            assert capture.stats().flows > 0
            await capture.stop()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the capture
        finally:
            writer.close()
            await writer.wait_closed()

    run(scenario)
    assert comparable(list(sink.latest().values())) == comparable(ingest(data))


def test_two_streams_at_once_each_give_their_flows() -> None:
    data = FRAMES.read_bytes()
    low, high = free_tcp_ports(1)
    sink = Sink()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, pcapsocket=(low, high), flow={})
        capture = PcapSocketCapture(make_spec("pcapsocket"), make_target(), env, sink)
        await capture.start()
        try:
            half = len(data) // 2
            conns = [await asyncio.open_connection("127.0.0.1", low) for _ in range(2)]
            for _, w in conns:
                w.write(data[:half])
            for _, w in conns:
                w.write(data[half:])
                w.write_eof()
            for r, w in conns:
                assert await asyncio.wait_for(r.read(), 5) == b""
                w.close()
            assert capture.stats().packets_received == 60
        finally:
            await capture.stop()

    run(scenario)
    # Each stream has its own table; the same packets at the same times make the same flows
    # (flow UUIDs derive from the flow key and its start), so the two sets are one.
    assert comparable(list(sink.latest().values())) == comparable(ingest(data))


def _frame(proto: int, l4: bytes, fwd: bool = True) -> bytes:
    macs = b"\x02\x00\x00\x00\x00\x0b\x02\x00\x00\x00\x00\x0a"
    ips = b"\x0a\x00\x00\x01\x0a\x00\x00\x02"
    if not fwd:
        macs, ips = macs[6:] + macs[:6], ips[4:] + ips[:4]
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0) + ips + l4
    return macs + b"\x08\x00" + ip


def _records() -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """(every record, the ICMP ones): pings, a TCP exchange and UDP datagrams, interleaved."""
    t0 = 1_700_000_000 * 10**9
    echo = [_frame(1, struct.pack("!BBHHH", t, 0, 0, 7, 1), t == 8) for t in (8, 0)]
    tcp = [_frame(6, struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, f, 1000, 0, 0)) for f in
           (0x02, 0x10, 0x11)]  # fmt: skip
    udp = [_frame(17, struct.pack("!HHHH", 5000, 6000 + i, 9, 0) + b"u") for i in range(3)]
    frames = [echo[0], tcp[0], udp[0], echo[1], tcp[1], udp[1], echo[0], echo[1], udp[2], tcp[2]]
    records = [(t0 + i * 300_000, f) for i, f in enumerate(frames)]
    return records, [r for r in records if r[1][23] == 1]


def test_the_bpf_filter_keeps_only_what_it_matches() -> None:
    records, icmp = _records()
    low, high = free_tcp_ports(1)
    sink = Sink()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, pcapsocket=(low, high), flow={})
        spec = make_spec("pcapsocket", bpf_filter="icmp")
        capture = PcapSocketCapture(spec, make_target(), env, sink)
        await capture.start()
        try:  # in 7-byte pieces: the global header comes in several reads
            await loop.run_in_executor(None, stream, low, write_pcap(records), 7)
            await wait_until("the stream's end", lambda: capture.connections == 1 and sink.batches)
            await wait_until("its flows", lambda: capture.stats().flows == 0)
            assert capture.stats().packets_received == len(icmp) == 4
            assert capture.filtered == len(records) - len(icmp)
        finally:
            await capture.stop()

    run(scenario)
    got = list(sink.latest().values())
    assert [f["LayersPath"] for f in got] == ["Ethernet/IPv4/ICMPv4"]
    assert comparable(got) == comparable(ingest(write_pcap(icmp)))
    assert got[0]["Metric"]["RTT"] == 300_000  # ns, the last echo pair's, from the records' time


def test_the_bpf_filter_is_compiled_for_the_stream_link_type() -> None:
    records, icmp = _records()
    sll_head = b"\x00\x00\x00\x01\x00\x06" + bytes(8) + b"\x08\x00"  # Linux "cooked" header
    sll = write_pcap([(t, sll_head + f[14:]) for t, f in records], linktype=LINKTYPE_LINUX_SLL)
    low, high = free_tcp_ports(2)
    sink = Sink()

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, pcapsocket=(low, high), flow={})
        capture = PcapSocketCapture(
            make_spec("pcapsocket", bpf_filter="icmp"), make_target(), env, sink
        )
        ether = PcapSocketCapture(
            make_spec("pcapsocket", id="c2", bpf_filter="ether host 02:00:00:00:00:0a"),
            make_target(),
            env,
            Sink(),
        )
        await capture.start()
        await ether.start()
        try:
            await loop.run_in_executor(None, stream, low, sll)
            await wait_until("the stream's end", lambda: capture.connections == 1 and sink.batches)
            assert capture.filtered == len(records) - len(icmp)
            # a filter on Ethernet addresses does not compile for Linux SLL: that stream is refused
            port = int(ether.address.rsplit(":", 1)[1])
            await loop.run_in_executor(None, stream_refused, port, sll)
            await wait_until("the bad stream", lambda: ether.bad_streams == 1)
        finally:
            await capture.stop()
            await ether.stop()

    run(scenario)
    got = list(sink.latest().values())
    assert [f["LayersPath"] for f in got] == ["IPv4/ICMPv4"]  # SLL is not in LayersPath


def test_a_bad_bpf_filter_is_a_probe_error_at_start() -> None:
    low, high = free_tcp_ports(1)

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        env = make_env(loop, pcapsocket=(low, high))
        spec = make_spec("pcapsocket", bpf_filter="udp port (")
        capture = PcapSocketCapture(spec, make_target(), env, Sink())
        with pytest.raises(ProbeError, match="invalid BPF filter 'udp port \\('"):
            await capture.start()
        assert env.pcapsocket_ports.take() == [low]  # nothing was bound

    run(scenario)
