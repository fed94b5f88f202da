"""The ``SIOCETHTOOL`` ioctl, sans I/O: request and reply layouts of ``linux/ethtool.h``.

Theory of operation
-------------------
Every ethtool ioctl passes one buffer (``ifreq.ifr_data``) that starts with a ``__u32 cmd``;
the kernel reads the request from it and writes the reply over it. This module builds those
buffers and decodes what the kernel left in them, with fixed native-endian layouts (the
ioctl ABI is the host's). It never opens a socket: :func:`query` drives the conversation
through a ``transact(request) -> reply`` callable that the shell provides (an ioctl in the
interface's namespace) and that tests replace with recorded replies (``tests/data/ethtool``).

The conversation, one interface at a time:

1. ``ETHTOOL_GDRVINFO`` (``struct ethtool_drvinfo``): driver, version, firmware, bus.
2. ``ETHTOOL_GLINKSETTINGS``, in two steps: a request with ``link_mode_masks_nwords = 0``
   is answered with ``-nwords`` (the size the kernel wants), then the real request carries
   that many words for each of the three link-mode masks. Drivers that only implement the
   legacy call (and kernels before 4.9) answer ``EOPNOTSUPP``/``EINVAL``: then
   ``ETHTOOL_GSET`` (``struct ethtool_cmd``, speed split into ``speed``/``speed_hi``).
   Speed is Mb/s; ``SPEED_UNKNOWN`` (-1) and 0 mean "unknown" and are left out.
3. ``ETHTOOL_GSSET_INFO`` asks how many strings the feature and statistics sets have; the
   kernel clears the bit of a set the driver lacks and answers one ``__u32`` per set bit.
4. ``ETHTOOL_GSTRINGS`` (``ETH_SS_FEATURES``) + ``ETHTOOL_GFEATURES``: the names ``ethtool -k``
   shows for the individual features (``highdma``, ``tx-checksum-ip-generic``, ...; not the
   aggregates such as ``tx-checksumming`` that the ethtool program synthesises), and one
   ``{available, requested, active, never_changed}`` block per 32 features; a feature is on
   when its ``active`` bit is set, as in the safchain/ethtool library Skydive uses.
5. ``ETHTOOL_GSTRINGS`` (``ETH_SS_STATS``) + ``ETHTOOL_GSTATS``: the driver's own counters
   (``ethtool -S``); a veth's ``peer_ifindex`` is among them.

A command a driver does not implement (``EOPNOTSUPP``) only leaves its part out; ``ENODEV``
(the interface is gone) ends the whole query with that ``OSError``. A reply shorter than its
layout raises :class:`~pyskydive.errors.ProtocolError`.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyskydive.errors import ProtocolError

__all__ = [
    "ETHTOOL_GDRVINFO",
    "ETHTOOL_GFEATURES",
    "ETHTOOL_GLINKSETTINGS",
    "ETHTOOL_GSET",
    "ETHTOOL_GSSET_INFO",
    "ETHTOOL_GSTATS",
    "ETHTOOL_GSTRINGS",
    "ETH_SS_FEATURES",
    "ETH_SS_STATS",
    "METADATA_KEYS",
    "SIOCETHTOOL",
    "DriverInfo",
    "EthtoolInfo",
    "LinkSettings",
    "Transact",
    "decode_drvinfo",
    "decode_features",
    "decode_gset",
    "decode_linksettings",
    "decode_sset_info",
    "decode_stats",
    "decode_strings",
    "drvinfo_request",
    "features_request",
    "gset_request",
    "linksettings_request",
    "peer_ifindex",
    "query",
    "sset_info_request",
    "stats_request",
    "strings_request",
    "to_metadata",
]

SIOCETHTOOL = 0x8946

ETHTOOL_GSET = 0x00000001
ETHTOOL_GDRVINFO = 0x00000003
ETHTOOL_GSTRINGS = 0x0000001B
ETHTOOL_GSTATS = 0x0000001D
ETHTOOL_GSSET_INFO = 0x00000037
ETHTOOL_GFEATURES = 0x0000003A
ETHTOOL_GLINKSETTINGS = 0x0000004C

ETH_SS_STATS = 1
ETH_SS_FEATURES = 4

ETH_GSTRING_LEN = 32
_SPEED_UNKNOWN = 0xFFFFFFFF
_DUPLEX = {0x00: "half", 0x01: "full"}  # DUPLEX_UNKNOWN (0xff) is left out
#: Upper bound of the string sets we ask for (the kernel has ~70 features; the biggest NIC
#: drivers a few thousand counters): a bigger answer is taken as garbage, not allocated.
_MAX_STRINGS = 65536

#: What one ethtool request costs: send ``request``, get the buffer back as the kernel left
#: it; a refusal raises ``OSError`` with the kernel's errno.
Transact = Callable[[bytes], bytes]

#: Metadata keys :func:`to_metadata` may produce (the shell deletes the ones that vanish).
METADATA_KEYS = (
    "Driver",
    "DriverVersion",
    "FirmwareVersion",
    "BusInfo",
    "Speed",
    "Duplex",
    "Features",
    "EthtoolStats",
)

# struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32],
# erom_version[32], reserved2[12], n_priv_flags, n_stats, testinfo_len, eedump_len, regdump_len
_DRVINFO = struct.Struct("=I32s32s32s32s32s12xIIIII")
# struct ethtool_cmd (legacy GSET): cmd, supported, advertising, speed, duplex, port,
# phy_address, transceiver, autoneg, mdio_support, maxtxpkt, maxrxpkt, speed_hi, eth_tp_mdix,
# eth_tp_mdix_ctrl, lp_advertising, reserved[2]
_CMD = struct.Struct("=IIIHBBBBBBIIHBBI8x")
# struct ethtool_link_settings: cmd, speed, duplex, port, phy_address, autoneg, mdio_support,
# eth_tp_mdix, eth_tp_mdix_ctrl, link_mode_masks_nwords (s8), transceiver,
# master_slave_cfg, master_slave_state, rate_matching, reserved[7]; then 3 * nwords u32 masks
_LINK = struct.Struct("=IIBBBBBBBbBBBB28x")
# struct ethtool_sset_info: cmd, reserved, sset_mask (u64); then one u32 per set bit
_SSET = struct.Struct("=IIQ")
# struct ethtool_gstrings: cmd, string_set, len; then len * ETH_GSTRING_LEN bytes
_GSTRINGS = struct.Struct("=III")
# struct ethtool_gfeatures: cmd, size; then size * {available, requested, active, never_changed}
_GFEATURES = struct.Struct("=II")
_BLOCK = struct.Struct("=IIII")
# struct ethtool_stats: cmd, n_stats; then n_stats * u64
_GSTATS = struct.Struct("=II")


@dataclass(frozen=True, slots=True)
class DriverInfo:
    """``ETHTOOL_GDRVINFO``: what ``ethtool -i`` prints."""

    driver: str
    version: str
    fw_version: str
    bus_info: str
    erom_version: str
    n_priv_flags: int
    n_stats: int


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Speed in Mb/s and duplex, ``None`` when the driver does not know them."""

    speed: int | None
    duplex: str | None
    autoneg: bool


@dataclass(frozen=True, slots=True)
class EthtoolInfo:
    """Everything :func:`query` learned about one interface."""

    driver: DriverInfo | None = None
    link: LinkSettings | None = None
    features: tuple[tuple[str, bool], ...] = ()
    stats: tuple[tuple[str, int], ...] = ()
    #: Commands the driver refused, with the errno (``EOPNOTSUPP`` is the usual one).
    refused: tuple[tuple[str, int], ...] = ()


def _need(buf: bytes, size: int, what: str) -> None:
    if len(buf) < size:
        raise ProtocolError(f"{what}: reply of {len(buf)} bytes, expected {size}", len(buf))


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


# -- requests and replies ------------------------------------------------------------------


def drvinfo_request() -> bytes:
    return _DRVINFO.pack(ETHTOOL_GDRVINFO, b"", b"", b"", b"", b"", 0, 0, 0, 0, 0)


def decode_drvinfo(buf: bytes) -> DriverInfo:
    _need(buf, _DRVINFO.size, "ETHTOOL_GDRVINFO")
    _, drv, ver, fw, bus, erom, n_priv, n_stats, *_ = _DRVINFO.unpack_from(buf)
    return DriverInfo(_cstr(drv), _cstr(ver), _cstr(fw), _cstr(bus), _cstr(erom), n_priv, n_stats)


def gset_request() -> bytes:
    return _CMD.pack(ETHTOOL_GSET, *([0] * 15))


def _speed(value: int) -> int | None:
    return None if value in (0, _SPEED_UNKNOWN) or value >= 0x7FFFFFFF else value


def decode_gset(buf: bytes) -> LinkSettings:
    _need(buf, _CMD.size, "ETHTOOL_GSET")
    fields = _CMD.unpack_from(buf)
    speed_lo, duplex, autoneg, speed_hi = fields[3], fields[4], fields[8], fields[12]
    return LinkSettings(_speed(speed_hi << 16 | speed_lo), _DUPLEX.get(duplex), bool(autoneg))


def linksettings_request(nwords: int = 0) -> bytes:
    """The handshake request (``nwords == 0``) or the real one for ``nwords`` mask words."""
    head = _LINK.pack(ETHTOOL_GLINKSETTINGS, 0, 0, 0, 0, 0, 0, 0, 0, nwords, 0, 0, 0, 0)
    return head + bytes(4 * 3 * nwords)


def decode_linksettings(buf: bytes) -> tuple[int, LinkSettings]:
    """``(nwords, settings)``; ``nwords < 0`` is the handshake's answer (ask again with -n)."""
    _need(buf, _LINK.size, "ETHTOOL_GLINKSETTINGS")
    fields = _LINK.unpack_from(buf)
    speed, duplex, autoneg, nwords = fields[1], fields[2], fields[5], fields[9]
    return nwords, LinkSettings(_speed(speed), _DUPLEX.get(duplex), bool(autoneg))


def sset_info_request(sets: tuple[int, ...]) -> bytes:
    mask = 0
    for s in sets:
        mask |= 1 << s
    return _SSET.pack(ETHTOOL_GSSET_INFO, 0, mask) + bytes(4 * len(sets))


def decode_sset_info(buf: bytes) -> dict[int, int]:
    """String set -> number of strings, for the sets the driver has."""
    _need(buf, _SSET.size, "ETHTOOL_GSSET_INFO")
    _, _, mask = _SSET.unpack_from(buf)
    out: dict[int, int] = {}
    offset = _SSET.size
    for bit in range(64):
        if mask & (1 << bit):
            _need(buf, offset + 4, "ETHTOOL_GSSET_INFO data")
            (count,) = struct.unpack_from("=I", buf, offset)
            if count > _MAX_STRINGS:
                raise ProtocolError(f"ETHTOOL_GSSET_INFO: {count} strings in set {bit}", offset)
            out[bit] = count
            offset += 4
    return out


def strings_request(string_set: int, count: int) -> bytes:
    return _GSTRINGS.pack(ETHTOOL_GSTRINGS, string_set, count) + bytes(ETH_GSTRING_LEN * count)


def decode_strings(buf: bytes) -> tuple[str, ...]:
    _need(buf, _GSTRINGS.size, "ETHTOOL_GSTRINGS")
    _, _, count = _GSTRINGS.unpack_from(buf)
    end = _GSTRINGS.size + ETH_GSTRING_LEN * count
    _need(buf, end, "ETHTOOL_GSTRINGS data")
    return tuple(
        _cstr(buf[o : o + ETH_GSTRING_LEN]) for o in range(_GSTRINGS.size, end, ETH_GSTRING_LEN)
    )


def features_request(count: int) -> bytes:
    blocks = (count + 31) // 32
    return _GFEATURES.pack(ETHTOOL_GFEATURES, blocks) + bytes(_BLOCK.size * blocks)


def decode_features(buf: bytes, names: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
    """``(name, active)`` for each feature of ``names`` (from ``ETH_SS_FEATURES``)."""
    _need(buf, _GFEATURES.size, "ETHTOOL_GFEATURES")
    _, blocks = _GFEATURES.unpack_from(buf)
    _need(buf, _GFEATURES.size + _BLOCK.size * blocks, "ETHTOOL_GFEATURES data")
    active = [_BLOCK.unpack_from(buf, _GFEATURES.size + _BLOCK.size * i)[2] for i in range(blocks)]
    out = []
    for i, name in enumerate(names):
        if name and i // 32 < blocks:
            out.append((name, bool(active[i // 32] >> (i % 32) & 1)))
    return tuple(out)


def stats_request(count: int) -> bytes:
    return _GSTATS.pack(ETHTOOL_GSTATS, count) + bytes(8 * count)


def decode_stats(buf: bytes, names: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    _need(buf, _GSTATS.size, "ETHTOOL_GSTATS")
    _, count = _GSTATS.unpack_from(buf)
    count = min(count, len(names))
    _need(buf, _GSTATS.size + 8 * count, "ETHTOOL_GSTATS data")
    values = struct.unpack_from(f"={count}Q", buf, _GSTATS.size)
    return tuple((n, v) for n, v in zip(names, values, strict=False) if n)


# -- the conversation ----------------------------------------------------------------------

#: Errnos that mean "this driver does not do that", not "the query failed".
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY, errno.EPERM})


def query(transact: Transact) -> EthtoolInfo:
    """Ask everything of one interface through ``transact`` (see the module docstring).

    Raises the ``OSError`` of ``transact`` for anything but an unsupported command
    (``ENODEV``: the interface is gone), and ``ProtocolError`` for a malformed reply."""
    refused: list[tuple[str, int]] = []

    def ask(what: str, request: bytes) -> bytes | None:
        try:
            return transact(request)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                refused.append((what, exc.errno or 0))
                return None
            raise

    driver = None
    reply = ask("GDRVINFO", drvinfo_request())
    if reply is not None:
        driver = decode_drvinfo(reply)

    link = None
    reply = ask("GLINKSETTINGS", linksettings_request(0))
    if reply is not None:
        nwords, link = decode_linksettings(reply)
        if nwords < 0:
            reply = ask("GLINKSETTINGS", linksettings_request(-nwords))
            link = decode_linksettings(reply)[1] if reply is not None else None
    if link is None:
        reply = ask("GSET", gset_request())
        if reply is not None:
            link = decode_gset(reply)

    features: tuple[tuple[str, bool], ...] = ()
    stats: tuple[tuple[str, int], ...] = ()
    reply = ask("GSSET_INFO", sset_info_request((ETH_SS_STATS, ETH_SS_FEATURES)))
    sizes = decode_sset_info(reply) if reply is not None else {}
    if sizes.get(ETH_SS_FEATURES):
        reply = ask("GSTRINGS(features)", strings_request(ETH_SS_FEATURES, sizes[ETH_SS_FEATURES]))
        names = decode_strings(reply) if reply is not None else ()
        reply = ask("GFEATURES", features_request(len(names))) if names else None
        if reply is not None:
            features = decode_features(reply, names)
    if sizes.get(ETH_SS_STATS):
        reply = ask("GSTRINGS(stats)", strings_request(ETH_SS_STATS, sizes[ETH_SS_STATS]))
        names = decode_strings(reply) if reply is not None else ()
        reply = ask("GSTATS", stats_request(len(names))) if names else None
        if reply is not None:
            stats = decode_stats(reply, names)
    return EthtoolInfo(driver, link, features, stats, tuple(refused))


def to_metadata(info: EthtoolInfo) -> dict[str, Any]:
    """The node metadata (DESIGN.md §2.1) for ``info``; unknown values are left out.

    ``PeerIfIndex`` is not here: the netlink probe owns it, the shell only fills it in
    from ``EthtoolStats.peer_ifindex`` when netlink could not."""
    md: dict[str, Any] = {}
    drv = info.driver
    if drv is not None:
        for key, value in (
            ("Driver", drv.driver),
            ("DriverVersion", drv.version),
            ("FirmwareVersion", drv.fw_version),
            ("BusInfo", drv.bus_info),
        ):
            if value:
                md[key] = value
    if info.link is not None:
        if info.link.speed is not None:
            md["Speed"] = info.link.speed
        if info.link.duplex is not None:
            md["Duplex"] = info.link.duplex
    if info.features:
        md["Features"] = dict(info.features)
    if info.stats:
        md["EthtoolStats"] = dict(info.stats)
    return md


def peer_ifindex(metadata: Mapping[str, Any]) -> int | None:
    """A veth's peer ifindex from its driver statistics, if there."""
    stats = metadata.get("EthtoolStats")
    value = stats.get("peer_ifindex") if isinstance(stats, dict) else None
    return value if isinstance(value, int) and value > 0 else None
