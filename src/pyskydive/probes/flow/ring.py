"""An AF_PACKET TPACKET_V3 receive ring: the kernel side of ``afpacket`` captures.

Theory of operation
-------------------
:class:`TpacketRing` opens a ``SOCK_RAW`` packet socket in the CURRENT network namespace (the
caller builds it on a thread that has entered the interface's namespace), selects
``TPACKET_V3`` and asks the kernel for a receive ring of ``block_count`` blocks of
``block_size`` bytes (``PACKET_RX_RING``), which it maps into memory. The kernel fills a block
with as many packets as fit (each a ``tpacket3_hdr`` then the frame) and hands it to user space
when it is full or ``retire_blk_tov`` (100 ms) after its first packet, by setting the block's
status to ``TP_STATUS_USER``. :meth:`TpacketRing.poll` waits (``poll(2)``) until the current
block is ours, feeds every packet of every ready block to the flow table
(:func:`pyskydive.flow.fast.feed_tpacket_block`: in C when the extension is built; each packet
at its own ``tp_sec``/``tp_nsec`` with ``tp_len`` as wire length) and gives the blocks back
(status ``TP_STATUS_KERNEL``). One system call per wake-up, no copy out of the ring.

The socket is created with protocol 0 (it receives nothing), then gets the ring and the BPF
filter (``SO_ATTACH_FILTER``), and only then is bound to the interface with ``ETH_P_ALL``: no
packet escapes the filter. Without a filter, ``snaplen`` is applied the way libpcap does it, by a
one-instruction filter returning ``snaplen``. Outgoing packets (``PACKET_OUTGOING``) are seen
too, as with tcpdump: on a veth each packet is captured once per end it crosses.

:meth:`TpacketRing.stats` reads ``PACKET_STATISTICS`` (``tpacket_stats_v3``), which the kernel
resets on every read, and returns the running totals: received (libpcap's ``ps_recv``: the
packets that passed the filter, dropped ones included) and dropped (no room in the ring).
"""

from __future__ import annotations

import ctypes
import mmap
import select
import socket
import struct
from typing import Final

from pyskydive.errors import ProbeError
from pyskydive.flow.fast import feed_tpacket_block
from pyskydive.flow.table import FlowTable

__all__ = ["TpacketRing"]

SOL_PACKET: Final = 263
PACKET_RX_RING: Final = 5
PACKET_STATISTICS: Final = 6
PACKET_VERSION: Final = 10
TPACKET_V3: Final = 2
ETH_P_ALL: Final = 0x0003
SO_ATTACH_FILTER: Final = 26
TP_STATUS_KERNEL: Final = 0
TP_STATUS_USER: Final = 1
_RETIRE_BLK_TOV_MS: Final = 100
_FRAME_SIZE: Final = 2048  # only a unit of the ring's geometry with TPACKET_V3
_BLOCK_STATUS: Final = struct.Struct("=I")  # tpacket_hdr_v1.block_status, at offset 8
_STATS_V3: Final = struct.Struct("=III")  # tp_packets, tp_drops, tp_freeze_q_cnt


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    """``SO_ATTACH_FILTER`` with ``program``, a packed array of ``struct sock_filter``."""
    if not program or len(program) % 8:
        raise ProbeError(f"a BPF program is whole 8-byte instructions, not {len(program)} bytes")
    count = len(program) // 8
    insns = (_SockFilter * count).from_buffer_copy(program)
    fprog = _SockFprog(count, ctypes.cast(insns, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))  # insns outlive the call


class TpacketRing:
    """A TPACKET_V3 receive ring on one interface (see the module docstring)."""

    def __init__(
        self,
        ifindex: int,
        *,
        bpf: bytes | None = None,
        block_size: int = 1 << 20,
        block_count: int = 64,
        snaplen: int = 65535,
        first: str = "Ethernet",
    ) -> None:
        if block_size % mmap.PAGESIZE or block_size < _FRAME_SIZE or block_count < 1:
            raise ProbeError(f"bad ring geometry: {block_count} blocks of {block_size} bytes")
        self.ifindex = ifindex
        self.block_size = block_size
        self.block_count = block_count
        self.first = first
        self._current = 0
        self._received = 0
        self._dropped = 0
        self._map: mmap.mmap | None = None
        try:
            ifname = socket.if_indextoname(ifindex)
        except OSError as exc:
            raise ProbeError(f"no interface with index {ifindex} here: {exc}") from exc
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:  # EPERM without CAP_NET_RAW
            raise ProbeError(f"AF_PACKET socket for {ifname}: {exc}") from exc
        try:
            self._setup(ifname, bpf, snaplen)
        except OSError as exc:
            self.close()
            raise ProbeError(f"AF_PACKET ring on {ifname}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _setup(self, ifname: str, bpf: bytes | None, snaplen: int) -> None:
        sock = self._sock
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frames = self.block_size // _FRAME_SIZE * self.block_count
        req = struct.pack(
            "=7I",
            self.block_size,
            self.block_count,
            _FRAME_SIZE,
            frames,
            _RETIRE_BLK_TOV_MS,
            0,  # tp_sizeof_priv
            0,  # tp_feature_req_word
        )
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self._map = mmap.mmap(
            sock.fileno(),
            self.block_size * self.block_count,
            mmap.MAP_SHARED,
            mmap.PROT_READ | mmap.PROT_WRITE,
        )
        if bpf is not None:
            _attach_filter(sock, bpf)
        elif snaplen < 0x40000:
            _attach_filter(sock, struct.pack("=HBBI", 0x06, 0, 0, snaplen))  # ret #snaplen
        sock.bind((ifname, ETH_P_ALL))

    def fileno(self) -> int:
        return self._sock.fileno()

    def poll(self, table: FlowTable, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for a block, feed every ready block to ``table``.

        Returns the number of packets fed (0 on timeout).
        """
        m = self._map
        if m is None:
            raise ProbeError("the ring is closed")
        if not self._ready(m, self._current):
            poller = select.poll()
            poller.register(self._sock.fileno(), select.POLLIN | select.POLLERR)
            for _fd, events in poller.poll(timeout_ms):
                if events & select.POLLERR:
                    err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise ProbeError(f"AF_PACKET socket error: {err}")
        count = 0
        bs = self.block_size
        with memoryview(m) as view:
            while self._ready(m, self._current):
                off = self._current * bs
                try:
                    with view[off : off + bs] as block:
                        count += feed_tpacket_block(table, block, self.first)
                finally:
                    _BLOCK_STATUS.pack_into(m, off + 8, TP_STATUS_KERNEL)  # give it back
                self._current = (self._current + 1) % self.block_count
        return count

    def _ready(self, m: mmap.mmap, block: int) -> bool:
        (status,) = _BLOCK_STATUS.unpack_from(m, block * self.block_size + 8)
        return bool(status & TP_STATUS_USER)

    def stats(self) -> tuple[int, int]:
        """Cumulative (received, dropped) since the ring was made (see the module docstring)."""
        if self._map is not None:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS_V3.size)
            packets, drops, _freeze = _STATS_V3.unpack(raw)
            self._received += packets
            self._dropped += drops
        return self._received, self._dropped

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self._sock.close()

    def __enter__(self) -> TpacketRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
