"""``pcap`` captures: a kernel interface read through libpcap (``libpcap.so.0.8``, via ctypes).

Theory of operation
-------------------
:meth:`PcapCapture.start` opens the interface INSIDE its network namespace, on the agent's netns
worker thread (``env.runner``): ``pcap_create`` + ``pcap_activate`` create libpcap's packet
socket there, and a socket stays in the namespace it was created in. On that handle: snapshot
length ``HeaderSize`` (else :data:`DEFAULT_SNAPLEN`), promiscuous mode (as Skydive's gopacket
probe), a read timeout of :data:`TIMEOUT_MS` so the reader wakes up even when the link is quiet,
and the capture's ``BPFFilter`` compiled by ``pcap_compile`` for that handle's link type and
installed with ``pcap_setfilter`` (libpcap puts it in the kernel). Errors from libpcap (no such
device, permission, a bad filter, a link type the packet decoder does not know) are a
:class:`~pyskydive.errors.ProbeError` with libpcap's own message.

A reader thread of the capture's own then loops on ``pcap_next_ex``: each packet is fed to the
flow table (``FlowTable.feed_frame``) at its kernel timestamp with its wire length, and about
once a second the thread ticks the table (:meth:`FlowCapture.flush`) and reads ``pcap_stats``;
the table and the handle never leave that thread (``owns_ticks``). ``PacketsDropped`` adds
libpcap's ``ps_drop`` (the kernel ring was full) to the table's overflow.

``stop()`` sets the stop flag and calls ``pcap_breakloop`` (which wakes the poll); the thread
ends within one timeout, ships the flows still in its table (``flush(final=True)``) and closes
the handle. If the interface goes away ``pcap_next_ex`` fails: the thread logs libpcap's
message once, ships its flows and ends.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import time
from functools import lru_cache
from typing import ClassVar, Final

from pyskydive.errors import ProbeError, ProtocolError
from pyskydive.probes.flow.base import (
    CaptureEnv,
    CaptureSpec,
    CaptureStats,
    CaptureTarget,
    FlowCapture,
    FlowSink,
)
from pyskydive.protocols.bpf import BPFError, open_libpcap
from pyskydive.protocols.pcap import first_layer

__all__ = ["DEFAULT_SNAPLEN", "TIMEOUT_MS", "PcapCapture"]

log = logging.getLogger(__name__)

DEFAULT_SNAPLEN: Final = 65535
TIMEOUT_MS: Final = 100
TICK_S: Final = 1.0

_ERRBUF_SIZE: Final = 256
_NETMASK_UNKNOWN: Final = 0xFFFFFFFF
# pcap_datalink() values that differ from the pcap file LINKTYPE_ values (DLT_RAW on Linux).
_DLT_TO_LINKTYPE: Final = {12: 101, 14: 101}
_JOIN_S: Final = 5.0


class _Timeval(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]


class _PktHdr(ctypes.Structure):  # struct pcap_pkthdr
    _fields_ = [("ts", _Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


class _Stat(ctypes.Structure):  # struct pcap_stat
    _fields_ = [("recv", ctypes.c_uint), ("drop", ctypes.c_uint), ("ifdrop", ctypes.c_uint)]


class _Program(ctypes.Structure):  # struct bpf_program
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


@lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    try:
        lib = open_libpcap()
    except BPFError as exc:
        raise ProbeError(exc.reason) from exc
    vp, ci, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    signatures: dict[str, tuple[list[type], type | None]] = {
        "pcap_create": ([cp, cp], vp),
        "pcap_set_snaplen": ([vp, ci], ci),
        "pcap_set_promisc": ([vp, ci], ci),
        "pcap_set_timeout": ([vp, ci], ci),
        "pcap_activate": ([vp], ci),
        "pcap_geterr": ([vp], cp),
        "pcap_statustostr": ([ci], cp),
        "pcap_datalink": ([vp], ci),
        "pcap_compile": ([vp, ctypes.POINTER(_Program), cp, ci, ctypes.c_uint32], ci),
        "pcap_setfilter": ([vp, ctypes.POINTER(_Program)], ci),
        "pcap_freecode": ([ctypes.POINTER(_Program)], None),
        "pcap_next_ex": (
            [vp, ctypes.POINTER(ctypes.POINTER(_PktHdr)), ctypes.POINTER(ctypes.c_void_p)],
            ci,
        ),
        "pcap_stats": ([vp, ctypes.POINTER(_Stat)], ci),
        "pcap_breakloop": ([vp], None),
        "pcap_close": ([vp], None),
    }
    for fname, (args, res) in signatures.items():
        fn = getattr(lib, fname)
        fn.argtypes = args
        fn.restype = res
    return lib


def _err(lib: ctypes.CDLL, handle: int) -> str:
    msg: bytes | None = lib.pcap_geterr(handle)
    return (msg or b"unknown libpcap error").decode(errors="replace")


class _Handle:
    """An activated libpcap handle, its first decoder layer, and the stop flag."""

    def __init__(self, name: str, snaplen: int, bpf: str) -> None:
        lib = self.lib = _lib()
        errbuf = ctypes.create_string_buffer(_ERRBUF_SIZE)
        handle = lib.pcap_create(name.encode(), errbuf)
        if not handle:
            raise ProbeError(f"pcap on {name}: {errbuf.value.decode(errors='replace')}")
        self.ptr: int | None = handle
        try:
            lib.pcap_set_snaplen(handle, snaplen)
            lib.pcap_set_promisc(handle, 1)
            lib.pcap_set_timeout(handle, TIMEOUT_MS)
            rc = lib.pcap_activate(handle)
            if rc < 0:
                status = (lib.pcap_statustostr(rc) or b"").decode(errors="replace")
                detail = _err(lib, handle)
                raise ProbeError(f"pcap on {name}: {detail or status}")
            if rc > 0:
                log.warning("pcap on %s: %s", name, _err(lib, handle))
            dlt = lib.pcap_datalink(handle)
            try:
                self.first = first_layer(_DLT_TO_LINKTYPE.get(dlt, dlt))
            except ProtocolError as exc:
                raise ProbeError(f"pcap on {name}: link type {dlt} is not supported") from exc
            if bpf.strip():
                self._set_filter(name, bpf)
        except BaseException:
            self.close()
            raise

    def _set_filter(self, name: str, bpf: str) -> None:
        lib, handle = self.lib, self.ptr
        assert handle is not None
        prog = _Program()
        if lib.pcap_compile(handle, ctypes.byref(prog), bpf.encode(), 1, _NETMASK_UNKNOWN) != 0:
            raise ProbeError(f"pcap on {name}: invalid BPF filter {bpf!r}: {_err(lib, handle)}")
        try:
            if lib.pcap_setfilter(handle, ctypes.byref(prog)) != 0:
                raise ProbeError(f"pcap on {name}: cannot set filter: {_err(lib, handle)}")
        finally:
            lib.pcap_freecode(ctypes.byref(prog))

    def close(self) -> None:
        handle, self.ptr = self.ptr, None
        if handle:
            self.lib.pcap_close(handle)


class PcapCapture(FlowCapture):
    """A libpcap live capture feeding this capture's table from a thread (module docstring)."""

    owns_ticks: ClassVar[bool] = True

    def __init__(
        self, spec: CaptureSpec, target: CaptureTarget, env: CaptureEnv, sink: FlowSink
    ) -> None:
        super().__init__(spec, target, env, sink)
        self._handle: _Handle | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._handle_lock = threading.Lock()  # pcap_breakloop vs pcap_close
        self._kernel_drops = 0

    async def start(self) -> None:
        t = self.target
        if not t.name:
            raise ProbeError(f"node {t.node_id} has no interface name")
        snaplen = self.spec.header_size or DEFAULT_SNAPLEN
        bpf = self.spec.bpf_filter

        def open_handle() -> _Handle:
            return _Handle(t.name, snaplen, bpf)

        try:
            self._handle = await self.env.runner.run(t.netns, open_handle)
        except OSError as exc:  # the namespace is gone (setns)
            where = f" ({exc.filename})" if exc.filename else ""
            raise ProbeError(f"pcap on {t.name}: {exc.strerror or exc}{where}") from exc
        self._thread = threading.Thread(target=self._run, name=f"pcap:{t.name}", daemon=True)
        self._thread.start()
        log.info("capture %s: pcap on %s (filter %r)", self.spec.id, t.name, bpf)

    def _run(self) -> None:
        handle = self._handle
        assert handle is not None and handle.ptr is not None
        lib, ptr, first = handle.lib, handle.ptr, handle.first
        feed = self.table.feed_frame
        hdr_p = ctypes.POINTER(_PktHdr)()
        data_p = ctypes.c_void_p()
        stat = _Stat()
        next_tick = time.monotonic() + TICK_S
        try:
            while not self._stopping.is_set():
                rc = lib.pcap_next_ex(ptr, ctypes.byref(hdr_p), ctypes.byref(data_p))
                if rc == 1:
                    hdr = hdr_p.contents
                    ns = hdr.ts.sec * 1_000_000_000 + hdr.ts.usec * 1000
                    frame = ctypes.string_at(data_p.value or 0, hdr.caplen)
                    feed(frame, ns // 1_000_000, hdr.len, first, ns)
                elif rc < 0:
                    if not self._stopping.is_set():
                        self.error = _err(lib, ptr) if rc == -1 else f"pcap_next_ex: {rc}"
                        log.error(
                            "capture %s on %s: %s", self.spec.id, self.target.name, self.error
                        )
                    break
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_S
                    if lib.pcap_stats(ptr, ctypes.byref(stat)) == 0:
                        self._kernel_drops = stat.drop
                    self.flush()
        finally:
            if lib.pcap_stats(ptr, ctypes.byref(stat)) == 0:
                self._kernel_drops = stat.drop
            self.flush(final=True)
            with self._handle_lock:
                handle.close()

    def stats(self) -> CaptureStats:
        s = super().stats()
        s.packets_dropped += self._kernel_drops
        return s

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        handle = self._handle
        with self._handle_lock:
            if handle is not None and handle.ptr is not None:
                handle.lib.pcap_breakloop(handle.ptr)
        await asyncio.get_running_loop().run_in_executor(None, thread.join, _JOIN_S)
        if thread.is_alive():
            log.warning("capture %s: pcap reader on %s did not end", self.spec.id, self.target.name)
