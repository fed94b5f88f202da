"""A raw rtnetlink socket for the asyncio loop: multicast events and dumps on one socket.

The socket is created inside the probe's namespace (see :mod:`nsutil`), subscribed to the
link, address, route and neighbour groups, and read with ``loop.add_reader``: each datagram
goes to the owner's callback as bytes, in kernel order, and the owner decodes it
(:mod:`rtnl_decode`). Dumps share the socket (the kernel runs one dump at a time per
socket, so requests are queued here and sent one after the other); their replies carry the
request's sequence number, events carry 0. A receive buffer overrun (``ENOBUFS``: events were
lost) is reported to the owner, who must resynchronise with fresh dumps.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
from collections import deque
from collections.abc import Callable

from pyskydive.probes.topology.nsutil import NetnsRunner

__all__ = [
    "RTM_GETADDR",
    "RTM_GETLINK",
    "RTM_GETNEIGH",
    "RTM_GETROUTE",
    "RtnlSocket",
    "query_nsid",
]

NETLINK_ROUTE = 0
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_GETLINK = 18
RTM_GETADDR = 22
RTM_GETROUTE = 26
RTM_GETNEIGH = 30
RTM_NEWNSID = 88
RTM_GETNSID = 90
NETNSA_NSID = 1
NETNSA_FD = 3

GROUPS = (
    0x1  # RTMGRP_LINK
    | 0x4  # RTMGRP_NEIGH
    | 0x10  # RTMGRP_IPV4_IFADDR
    | 0x40  # RTMGRP_IPV4_ROUTE
    | 0x100  # RTMGRP_IPV6_IFADDR
    | 0x400  # RTMGRP_IPV6_ROUTE
)
RCVBUF = 8 * 1024 * 1024
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5

_HDR = struct.Struct("=IHHII")
# The family header each dump request carries (linux/rtnetlink.h, linux/neighbour.h): its
# layout, and how many fields follow the family (all zero in a dump request).
_BODY = {
    RTM_GETLINK: (struct.Struct("=BxHiII"), 4),  # ifinfomsg
    RTM_GETADDR: (struct.Struct("=BBBBI"), 4),  # ifaddrmsg
    RTM_GETROUTE: (struct.Struct("=BBBBBBBBI"), 8),  # rtmsg
    RTM_GETNEIGH: (struct.Struct("=BxxxiHBB"), 4),  # ndmsg
}


def _new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE (root)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.bind((0, GROUPS))
    return sock


def _dump_request(msg_type: int, family: int, seq: int) -> bytes:
    body_struct, zeros = _BODY[msg_type]
    body = body_struct.pack(family, *([0] * zeros))
    return _HDR.pack(_HDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


class RtnlSocket:
    """One subscribed rtnetlink socket; ``on_datagram(data)`` gets every datagram."""

    def __init__(
        self,
        sock: socket.socket,
        on_datagram: Callable[[bytes], None],
        on_overrun: Callable[[], None],
    ) -> None:
        self._sock = sock
        self._on_datagram = on_datagram
        self._on_overrun = on_overrun
        self._seq = 0
        self._pending: deque[bytes] = deque()
        self._busy_seq = 0
        sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._read)

    @classmethod
    async def open(
        cls,
        runner: NetnsRunner,
        ns_path: str | None,
        on_datagram: Callable[[bytes], None],
        on_overrun: Callable[[], None],
    ) -> RtnlSocket:
        sock = await runner.run(ns_path, _new_socket)
        return cls(sock, on_datagram, on_overrun)

    def dump(self, msg_type: int, family: int = 0) -> int:
        """Queue a dump request; returns the sequence number its replies will carry."""
        self._seq = self._seq % 0x7FFFFFFF + 1
        self._pending.append(_dump_request(msg_type, family, self._seq))
        if not self._busy_seq:
            self._send_next()
        return self._seq

    def dump_finished(self, seq: int) -> None:
        """The owner saw NLMSG_DONE/ERROR for ``seq``: the next queued dump may start."""
        if seq == self._busy_seq:
            self._busy_seq = 0
            self._send_next()

    def _send_next(self) -> None:
        if not self._pending:
            return
        request = self._pending.popleft()
        self._busy_seq = _HDR.unpack_from(request)[3]
        try:
            self._sock.send(request)
        except OSError:
            self._busy_seq = 0
            raise

    def _read(self) -> None:
        for _ in range(64):  # bounded, so one busy namespace cannot starve the loop
            try:
                data = self._sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._on_overrun()
                    continue
                raise
            self._on_datagram(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


def _nsid_blocking(other_path: str) -> int | None:
    fd = os.open(other_path, os.O_RDONLY)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
            attr = struct.pack("=HHI", 8, NETNSA_FD, fd)
            body = b"\0\0\0\0" + attr  # rtgenmsg, padded to 4
            sock.send(_HDR.pack(_HDR.size + len(body), RTM_GETNSID, NLM_F_REQUEST, 1, 0) + body)
            sock.settimeout(2.0)
            data = sock.recv(65536)
    finally:
        os.close(fd)
    length, msg_type, _, _, _ = _HDR.unpack_from(data)
    if msg_type != RTM_NEWNSID:
        return None
    offset = _HDR.size + 4
    while offset + 4 <= length:
        alen, atype = struct.unpack_from("=HH", data, offset)
        if alen < 4:
            break
        if atype & 0x3FFF == NETNSA_NSID and alen >= 8:
            (nsid,) = struct.unpack_from("=i", data, offset + 4)
            return nsid if nsid >= 0 else None
        offset += (alen + 3) & ~3
    return None


async def query_nsid(runner: NetnsRunner, ns_path: str | None, other_path: str) -> int | None:
    """The id that the namespace ``ns_path`` (None: ours) gives to ``other_path``'s namespace."""
    return await runner.run(ns_path, lambda: _nsid_blocking(other_path))
