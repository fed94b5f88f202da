"""A small pcap for the flow tests: ICMP echo pair, TCP SYN/SYN-ACK/FIN exchange, DNS query."""

from __future__ import annotations

import struct

from pyskydive.protocols.pcap import write_pcap

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
T0_MS = 1_600_000_000_000  # 2020-09-13: far from the wall clock
SYN, ACK, FIN = 0x02, 0x10, 0x01


def _eth(src: str, dst: str) -> bytes:
    return bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", "")) + b"\x08\x00"


def _ipv4(proto: int, payload: bytes, src: str, dst: str) -> bytes:
    hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0)
    return hdr + bytes(map(int, src.split("."))) + bytes(map(int, dst.split("."))) + payload


def _frame(proto: int, payload: bytes, src: str, dst: str, forward: bool) -> bytes:
    macs = (MAC_A, MAC_B) if forward else (MAC_B, MAC_A)
    return _eth(*macs) + _ipv4(proto, payload, src, dst)


def icmp(t: int, ident: int, seq: int) -> bytes:
    return struct.pack("!BBHHH", t, 0, 0, ident, seq) + b"ping"


def tcp(sp: int, dp: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sp, dp, 1, 0, 5 << 4, flags, 65535, 0, 0)


def udp(sp: int, dp: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sp, dp, 8 + len(data), 0) + data


DNS_QUERY = (
    struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00\x00\x01\x00\x01"
)

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def sample_records() -> list[tuple[int, bytes]]:
    """(timestamp_ns, frame): an ICMP echo pair, a TCP SYN/SYN-ACK/FIN exchange, a DNS query."""
    ms = 1_000_000
    t = T0_MS * ms
    return [
        (t, _frame(1, icmp(8, 7, 1), A, B, True)),
        (t + 5 * ms, _frame(1, icmp(0, 7, 1), B, A, False)),
        (t + 100 * ms, _frame(6, tcp(40000, 80, SYN), A, B, True)),
        (t + 110 * ms, _frame(6, tcp(80, 40000, SYN | ACK), B, A, False)),
        (t + 111 * ms, _frame(6, tcp(40000, 80, ACK), A, B, True)),
        (t + 200 * ms, _frame(6, tcp(40000, 80, FIN | ACK), A, B, True)),
        (t + 201 * ms, _frame(6, tcp(80, 40000, FIN | ACK), B, A, False)),
        (t + 202 * ms, _frame(6, tcp(40000, 80, ACK), A, B, True)),
        (t + 300 * ms, _frame(17, udp(5353, 53, DNS_QUERY), A, C, True)),
    ]


def sample_pcap() -> bytes:
    return write_pcap(sample_records())
