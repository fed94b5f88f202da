"""Test traffic, run inside a namespace: ``ip netns exec NS python3 traffic.py KIND ...``.

Kinds (all exact, so tests can assert packet counts):
  icmp DST COUNT            COUNT ICMP echo requests (id 0x5344), each waiting for its reply
  udp-send DST PORT COUNT   COUNT datagrams from source port PORT+1 to DST:PORT
  udp-echo PORT COUNT REPLIES
                            receive COUNT datagrams on PORT, answer the first REPLIES, exit
  tcp-serve PORT            accept one connection, read until EOF, reply "ok", close
  tcp-connect DST PORT      connect, send "hello", shut down writing, read the reply, close
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import time

ICMP_ID = 0x5344


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def icmp(dst: str, count: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(2.0)
    for seq in range(1, count + 1):
        payload = b"skydive-test-payload"
        header = struct.pack("!BBHHH", 8, 0, 0, ICMP_ID, seq)
        header = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ICMP_ID, seq)
        sock.sendto(header + payload, (dst, 0))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            data = sock.recv(2048)
            ihl = (data[0] & 0x0F) * 4
            t, _, _, ident, s = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if t == 0 and ident == ICMP_ID and s == seq:
                break
        else:
            raise SystemExit(f"no echo reply for seq {seq}")
        time.sleep(0.05)


def udp_send(dst: str, port: int, count: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port + 1))
    sock.settimeout(0.5)
    for i in range(count):
        sock.sendto(f"datagram {i}".encode(), (dst, port))
        time.sleep(0.02)
        with contextlib.suppress(TimeoutError):
            sock.recv(2048)  # the echo side answers some of them


def udp_echo(port: int, count: int, replies: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(20)
    print("ready", flush=True)
    for i in range(count):
        data, peer = sock.recvfrom(2048)
        if i < replies:
            sock.sendto(data, peer)


def tcp_serve(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(1)
    srv.settimeout(20)
    print("ready", flush=True)
    conn, _ = srv.accept()
    while conn.recv(2048):
        pass
    conn.sendall(b"ok")
    conn.close()


def tcp_connect(dst: str, port: int) -> None:
    sock = socket.create_connection((dst, port), timeout=5)
    sock.sendall(b"hello")
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(2048):
        pass
    sock.close()


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    if kind == "icmp":
        icmp(args[0], int(args[1]))
    elif kind == "udp-send":
        udp_send(args[0], int(args[1]), int(args[2]))
    elif kind == "udp-echo":
        udp_echo(int(args[0]), int(args[1]), int(args[2]))
    elif kind == "tcp-serve":
        tcp_serve(int(args[0]))
    elif kind == "tcp-connect":
        tcp_connect(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown kind {kind}")
