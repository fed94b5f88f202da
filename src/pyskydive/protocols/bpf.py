"""BPF filters (tcpdump syntax) compiled by libpcap's own compiler, loaded with ctypes.

A capture's ``BPFFilter`` ("udp and port 53", "icmp or arp") is compiled once, with
``pcap_open_dead`` + ``pcap_compile`` (no device is opened, no privilege needed), into classic
BPF instructions. :func:`compile_filter` returns them packed as the kernel's ``struct
sock_filter`` array (8 bytes each: ``u16 code, u8 jt, u8 jf, u32 k``, native byte order): what
``SO_ATTACH_FILTER`` takes on an AF_PACKET socket, so the kernel drops what the filter rejects
before it is copied to us. The analyzer compiles a capture's filter when it is created, so a bad
one is a 400 with libpcap's reason; the agent compiles it again for the link type it captures.

Errors: :class:`BPFError` (a :class:`~pyskydive.errors.ProtocolError`) with libpcap's message,
e.g. ``syntax error in filter expression``; also when libpcap cannot be loaded at all
(``libpcap.so.0.8`` is the Debian package ``libpcap0.8``, installed with tshark or tcpdump).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from functools import lru_cache

from pyskydive.errors import ProtocolError

__all__ = [
    "DLT_EN10MB",
    "DLT_LINUX_SLL",
    "DLT_RAW",
    "BPFError",
    "Matcher",
    "compile_filter",
    "open_libpcap",
]

DLT_EN10MB = 1
DLT_RAW = 12
DLT_LINUX_SLL = 113

_SNAPLEN = 262144
_NETMASK_UNKNOWN = 0xFFFFFFFF
# pcap_compile is documented thread-safe only from libpcap 1.8 on; a lock costs nothing here
_lock = threading.Lock()


class BPFError(ProtocolError):
    """A filter libpcap cannot compile (or libpcap is missing)."""


class _Insn(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn))]


def open_libpcap() -> ctypes.CDLL:
    """A handle of its own on libpcap (callers set their own argtypes on it); BPFError if the
    library is missing."""
    name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
    try:
        return ctypes.CDLL(name)
    except OSError as exc:
        raise BPFError(f"libpcap is not available ({exc}): install libpcap0.8") from exc


@lru_cache(maxsize=1)
def _libpcap() -> ctypes.CDLL:
    lib = open_libpcap()
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.restype = ctypes.c_int
    lib.pcap_compile.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_Program),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    ]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    lib.pcap_offline_filter.restype = ctypes.c_int
    lib.pcap_offline_filter.argtypes = [
        ctypes.POINTER(_Program),
        ctypes.c_void_p,
        ctypes.c_char_p,
    ]
    return lib


def compile_filter(expression: str, linktype: int = DLT_EN10MB) -> bytes:
    """``expression`` as packed ``struct sock_filter`` instructions; :class:`BPFError` if bad.

    An empty (or blank) expression is no filter at all: ``b""``.
    """
    if not expression.strip():
        return b""
    try:
        text = expression.encode("ascii")
    except UnicodeEncodeError as exc:
        raise BPFError(f"filter is not ASCII at position {exc.start}", exc.start) from exc
    lib = _libpcap()
    with _lock:
        handle = lib.pcap_open_dead(linktype, _SNAPLEN)
        if not handle:
            raise BPFError(f"libpcap cannot handle link type {linktype}")
        try:
            prog = _Program()
            if lib.pcap_compile(handle, ctypes.byref(prog), text, 1, _NETMASK_UNKNOWN) != 0:
                reason = (lib.pcap_geterr(handle) or b"cannot compile").decode(errors="replace")
                raise BPFError(f"invalid BPF filter {expression!r}: {reason}")
            try:
                size = prog.bf_len * ctypes.sizeof(_Insn)
                return ctypes.string_at(prog.bf_insns, size)
            finally:
                lib.pcap_freecode(ctypes.byref(prog))
        finally:
            lib.pcap_close(handle)


class _PktHdr(ctypes.Structure):  # struct pcap_pkthdr
    _fields_ = [
        ("sec", ctypes.c_long),
        ("usec", ctypes.c_long),
        ("caplen", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
    ]


class Matcher:
    """A compiled program run in userspace by libpcap's interpreter: ``matcher(frame)``.

    For capture types whose packets do not pass through a kernel socket (pcapsocket, sFlow
    headers), so one filter means the same thing everywhere. An empty program accepts all.
    """

    def __init__(self, program: bytes) -> None:
        self.empty = not program
        count = len(program) // ctypes.sizeof(_Insn)
        self._insns = (_Insn * max(count, 1)).from_buffer_copy(program or bytes(8))
        self._prog = _Program(count, ctypes.cast(self._insns, ctypes.POINTER(_Insn)))
        self._hdr = _PktHdr()
        self._run = _libpcap().pcap_offline_filter if program else None

    def __call__(self, frame: bytes) -> bool:
        if self._run is None:
            return True
        hdr = self._hdr
        hdr.caplen = hdr.len = len(frame)
        return bool(self._run(ctypes.byref(self._prog), ctypes.byref(hdr), frame))
