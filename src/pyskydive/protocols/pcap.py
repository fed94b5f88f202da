"""Sans-I/O pcap (libpcap file format) reader and writer.

Theory of operation: :class:`PcapReader` is fed bytes as they arrive (a file read in chunks, or
the pcap stream a ``pcapsocket`` probe receives over TCP) and returns the complete records it can
cut out of them; a partial record waits in the buffer for the next :meth:`PcapReader.feed`. The
24-byte global header comes first and fixes the byte order, the timestamp resolution and the
link type. Format: https://www.tcpdump.org/manpages/pcap-savefile.5.html (magic 0xa1b2c3d4 for
microseconds, 0xa1b23c4d for nanoseconds, in either byte order).

Errors: a bad magic, an unsupported version or a record whose captured length exceeds the
snapshot length (a desynchronised stream) raise :class:`~pyskydive.errors.ProtocolError` with the
stream offset; :meth:`PcapReader.close` raises it if the stream ended inside a record.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

from pyskydive.errors import ProtocolError

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_RAW",
    "PcapHeader",
    "PcapReader",
    "Record",
    "first_layer",
    "write_header",
    "write_pcap",
    "write_record",
]

LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LINUX_SLL: Final = 113

_MAGIC_US: Final = 0xA1B2C3D4
_MAGIC_NS: Final = 0xA1B23C4D
_GLOBAL_LEN: Final = 24
_RECORD_LEN: Final = 16
# A larger captured length means the stream is corrupt (libpcap's own bound is 256 KiB).
_MAX_CAPLEN: Final = 0x40000

_FIRST_LAYER: Final[dict[int, str]] = {
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_LINUX_SLL: "LinuxSLL",
}


@dataclass(frozen=True, slots=True)
class PcapHeader:
    """The global header."""

    big_endian: bool
    nanosecond: bool
    version: tuple[int, int]
    snaplen: int
    linktype: int


class Record(NamedTuple):
    """One packet record; ``data`` holds ``captured_len`` bytes.

    A NamedTuple, like :class:`~pyskydive.protocols.packet.Packet`: one per packet on the
    pcap → flow table hot path, and cheaper to build than a frozen dataclass.
    """

    timestamp_ns: int
    captured_len: int
    original_len: int
    data: bytes


def first_layer(linktype: int) -> str:
    """The packet decoder's ``first`` layer for a pcap link type."""
    try:
        return _FIRST_LAYER[linktype]
    except KeyError:
        raise ProtocolError(f"unsupported pcap link type {linktype}", 20) from None


class PcapReader:
    """Incremental pcap parser: ``feed(bytes) -> list[Record]``."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self.header: PcapHeader | None = None
        self._rec: struct.Struct | None = None
        self._scale = 1000

    def feed(self, data: bytes | bytearray | memoryview) -> list[Record]:
        """Append ``data`` and return every record now complete."""
        buf = self._buf
        buf += data
        pos = 0
        if self.header is None:
            if len(buf) < _GLOBAL_LEN:
                return []
            self._parse_header(buf)
            pos = _GLOBAL_LEN
        rec = self._rec
        assert rec is not None
        scale = self._scale
        out: list[Record] = []
        n = len(buf)
        while n - pos >= _RECORD_LEN:
            sec, frac, caplen, origlen = rec.unpack_from(buf, pos)
            if caplen > _MAX_CAPLEN:
                raise ProtocolError(
                    f"record captured length {caplen} exceeds {_MAX_CAPLEN}", self._offset + pos
                )
            end = pos + _RECORD_LEN + caplen
            if end > n:
                break
            out.append(
                Record(
                    sec * 1_000_000_000 + frac * scale,
                    caplen,
                    origlen,
                    bytes(buf[pos + _RECORD_LEN : end]),
                )
            )
            pos = end
        if pos:
            del buf[:pos]
            self._offset += pos
        return out

    def close(self) -> None:
        """Check that the stream ended on a record boundary."""
        if self.header is None:
            raise ProtocolError("truncated pcap global header", self._offset)
        if self._buf:
            raise ProtocolError(
                f"truncated pcap record ({len(self._buf)} bytes left)", self._offset
            )

    def _parse_header(self, buf: bytearray) -> None:
        (magic,) = struct.unpack_from("<I", buf, 0)
        if magic in (_MAGIC_US, _MAGIC_NS):
            order, big = "<", False
        else:
            (magic,) = struct.unpack_from(">I", buf, 0)
            if magic not in (_MAGIC_US, _MAGIC_NS):
                raise ProtocolError(f"bad pcap magic 0x{magic:08x}", 0)
            order, big = ">", True
        major, minor, _tz, _sigfigs, snaplen, linktype = struct.unpack_from(
            order + "HHiIII", buf, 4
        )
        if major != 2:
            raise ProtocolError(f"unsupported pcap version {major}.{minor}", 4)
        nano = magic == _MAGIC_NS
        self.header = PcapHeader(big, nano, (major, minor), snaplen, linktype & 0x0FFFFFFF)
        self._rec = struct.Struct(order + "IIII")
        self._scale = 1 if nano else 1000


def write_header(
    *,
    linktype: int = LINKTYPE_ETHERNET,
    snaplen: int = 262144,
    nanosecond: bool = False,
    big_endian: bool = False,
) -> bytes:
    """A pcap global header."""
    order = ">" if big_endian else "<"
    magic = _MAGIC_NS if nanosecond else _MAGIC_US
    return struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def write_record(
    timestamp_ns: int,
    data: bytes,
    *,
    original_len: int | None = None,
    nanosecond: bool = False,
    big_endian: bool = False,
) -> bytes:
    """One pcap record (header + data)."""
    order = ">" if big_endian else "<"
    sec, frac = divmod(timestamp_ns, 1_000_000_000)
    if not nanosecond:
        frac //= 1000
    orig = len(data) if original_len is None else original_len
    return struct.pack(order + "IIII", sec, frac, len(data), orig) + data


def write_pcap(
    records: Iterable[tuple[int, bytes]],
    *,
    linktype: int = LINKTYPE_ETHERNET,
    nanosecond: bool = False,
    big_endian: bool = False,
) -> bytes:
    """A whole pcap file from ``(timestamp_ns, frame)`` pairs."""
    parts = [write_header(linktype=linktype, nanosecond=nanosecond, big_endian=big_endian)]
    parts.extend(
        write_record(ts, data, nanosecond=nanosecond, big_endian=big_endian) for ts, data in records
    )
    return b"".join(parts)
