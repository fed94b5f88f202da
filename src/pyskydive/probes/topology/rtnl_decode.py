"""Fast, pure decoding of rtnetlink datagrams straight into the records of :mod:`netlink_msg`.

Theory of operation
-------------------
:mod:`~pyskydive.probes.topology.netlink_msg` translates messages that pyroute2 has parsed;
that is correct but slow on the event path (pyroute2 builds a dict tree of every attribute,
then the translation walks it). This module reads the datagram's bytes with :mod:`struct`
and builds the same :class:`Link`, :class:`Addr`, :class:`Route` and :class:`Neighbor`
records directly, touching only the attributes those records use:

1. **Messages.** A datagram holds one or more messages, each a ``struct nlmsghdr``
   (``linux/netlink.h``: ``nlmsg_len`` u32, ``nlmsg_type`` u16, ``nlmsg_flags`` u16,
   ``nlmsg_seq`` u32, ``nlmsg_pid`` u32, host byte order) followed by its payload and padded
   to 4 bytes (``NLMSG_ALIGN``). :func:`decode_with_seq` walks them and yields
   ``(nlmsg_seq, record)``; :func:`decode` yields the records alone.
2. **Fixed headers** (``linux/rtnetlink.h``, ``linux/neighbour.h``), right after nlmsghdr:
   ``struct ifinfomsg`` (RTM_NEWLINK/DELLINK, 16 bytes), ``struct ifaddrmsg``
   (RTM_NEWADDR/DELADDR, 8), ``struct rtmsg`` (RTM_NEWROUTE/DELROUTE, 12),
   ``struct ndmsg`` (RTM_NEWNEIGH/DELNEIGH, 12).
3. **Attributes** follow, ``NLMSG_ALIGN``-ed: ``struct nlattr`` (``nla_len`` u16 including
   the 4-byte header, ``nla_type`` u16 whose ``NLA_F_NESTED``/``NLA_F_NET_BYTEORDER`` bits
   are masked off), payload padded to 4 (``NLA_ALIGN``). One pass records where the *first*
   attribute of each type starts (pyroute2's ``get_attr`` returns the first); only the
   attributes a record needs are then decoded, and nested ones (``IFLA_LINKINFO`` →
   ``IFLA_INFO_DATA``/``IFLA_INFO_SLAVE_DATA``, ``linux/if_link.h``; ``RTA_MULTIPATH``'s
   ``struct rtnexthop``) only when the record needs them. ``IFLA_STATS64``
   (``struct rtnl_link_stats64``) goes straight into :attr:`Link.metrics`.

Everything else is :mod:`netlink_msg`'s behaviour, reproduced rule for rule (see its
docstring): the same metadata tables (:mod:`netlink_metadata`), the veth peer and vxlan parent
rules, ``AF_BRIDGE`` link notices kept with :attr:`Link.family` set, ``None`` answers turned
into :class:`Skip`. pyroute2's decoding rules are reproduced where they show in a record:
fixed-size values read from the start of a longer payload, ``IFLA_ADDRESS``/
``IFLA_BOND_SLAVE_PERM_HWADDR`` cut to 6 bytes, ``IFLA_IFNAME``/``IFLA_INFO_KIND`` stripped of
NUL bytes at both ends, ``NDA_LLADDR`` of 4 or 16 bytes written as an IP address and of
other sizes as a hex dump, the ``IFLA_INFO_DATA``/``IFLA_INFO_SLAVE_DATA`` layout chosen by
the kind attribute *before* it. An optional attribute whose payload cannot be decoded (too
short, not UTF-8) is skipped, as pyroute2 hands it back undecoded and :mod:`netlink_msg`
ignores it. The tests check every golden message, and live dumps, against
:mod:`netlink_msg`.

Other messages: ``NLMSG_DONE`` → :class:`Done`, ``NLMSG_ERROR`` → :class:`Error` (``errno``
0 is an ack), anything else (``RTM_NEWNSID``, ``NLMSG_NOOP``...) → :class:`Skip`.

Malformed input raises :class:`~pyskydive.errors.ProtocolError` (never another exception)
with the byte offset in the datagram: a truncated nlmsghdr, an ``nlmsg_len`` beyond the
datagram, a message shorter than its fixed header, an attribute whose ``nla_len`` is below 4
or runs past its container (checked in the containers we read; the kernel's ``nla_ok`` stops
there, pyroute2 clamps), or what :mod:`netlink_msg` rejects (a link without index or name, an
address without one, ...). The messages before the bad one are yielded first; with
``strict=False`` a bad message whose ``nlmsg_len`` is sane becomes a :class:`Skip` and the
walk goes on (so a ``NLMSG_DONE`` after it still arrives).

Where pyroute2's reading of *malformed* messages shows through :mod:`netlink_msg`, we do not
copy it:

- a fixed-size value (integer, MAC, stats) shorter than its type is undecodable, so skipped;
  pyroute2 reads on into the next attribute and :mod:`netlink_msg` takes what it finds;
- an ``RTA_DST`` shorter than an address raises (pyroute2 hands back the raw attribute,
  header included, which ``ipaddress`` may take for a packed address);
- an ``RTA_VIA`` whose address does not fit its family raises (:mod:`netlink_msg` parses
  pyroute2's hex dump of it as an address: one of 8 bytes makes a valid IPv6 address);
- an attribute pyroute2 cannot place (``IFLA_PROTINFO`` outside an ``AF_BRIDGE`` message)
  does not hide the ones after it: pyroute2 stops the attribute list there and
  ``MarshalRtnl`` drops the error, so :mod:`netlink_msg` translates what came before. The
  one kernel message concerned, a RTM_NEWLINK of family ``AF_INET6`` (``inet6_fill_ifinfo``,
  RTNLGRP_IPV6_IFINFO: a link's IPv6 settings, no ``IFLA_LINKINFO``), is a :class:`Skip`
  here: as a :class:`Link` it would read as a plain "device".
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from pyskydive.errors import ProtocolError
from pyskydive.probes.topology import netlink_metadata as names
from pyskydive.probes.topology.netlink_msg import Addr, Link, Neighbor, Route

__all__ = [
    "Decoded",
    "Done",
    "Error",
    "Skip",
    "decode",
    "decode_with_seq",
]


@dataclass(frozen=True, slots=True)
class Skip:
    """A message we do not translate (``reason`` says why)."""

    msg_type: int
    reason: str


@dataclass(frozen=True, slots=True)
class Done:
    """``NLMSG_DONE``: the end of the dump with sequence number ``seq``.

    ``errno`` is the dump's own error (``-errno`` in the message, 0 when it went well).
    """

    seq: int
    errno: int = 0


@dataclass(frozen=True, slots=True)
class Error:
    """``NLMSG_ERROR`` for request ``seq``: ``errno`` (positive), 0 for an ack."""

    seq: int
    errno: int


Decoded: TypeAlias = Link | Addr | Route | Neighbor | Skip | Done | Error

# -- kernel layouts and numbers -----------------------------------------------------------

# linux/netlink.h
NLMSG_NOOP: Final = 1
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLMSG_OVERRUN: Final = 4
_NLA_TYPE_MASK: Final = 0x3FFF  # ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)

_HEADER: Final = struct.Struct("=IHHII").unpack_from  # nlmsghdr
_NLA: Final = struct.Struct("=HH").unpack_from  # nlattr: nla_len, nla_type
_IFINFOMSG: Final = struct.Struct("=BxHiII").unpack_from  # family, type, index, flags, change
_IFADDRMSG: Final = struct.Struct("=BBBBI").unpack_from  # family, prefixlen, flags, scope, index
_RTMSG: Final = struct.Struct("=BBBBBBBBI").unpack_from  # family, dst_len, src_len, tos,
# table, protocol, scope, type, flags
_NDMSG: Final = struct.Struct("=BxxxiHBB").unpack_from  # family, ifindex, state, flags, type
_RTNEXTHOP: Final = struct.Struct("=HBBi").unpack_from  # rtnh_len, flags, hops, ifindex
_I32: Final = struct.Struct("=i").unpack_from
_U16: Final = struct.Struct("=H").unpack_from
_U32: Final = struct.Struct("=I").unpack_from
# struct rtnl_link_stats64 / rtnl_link_stats: the 23 counters pyroute2 and Skydive know, in
# the kernel's order (newer kernels append more, which we leave alone).
_STATS64: Final = struct.Struct(f"={len(names.STATS_TO_METRIC)}Q")
_STATS32: Final = struct.Struct(f"={len(names.STATS_TO_METRIC)}I")

# linux/rtnetlink.h message types (netlink_metadata.RTM_NAMES)
RTM_NEWLINK: Final = names.RTM_TYPES["RTM_NEWLINK"]
RTM_DELLINK: Final = names.RTM_TYPES["RTM_DELLINK"]
RTM_NEWADDR: Final = names.RTM_TYPES["RTM_NEWADDR"]
RTM_DELADDR: Final = names.RTM_TYPES["RTM_DELADDR"]
RTM_NEWROUTE: Final = names.RTM_TYPES["RTM_NEWROUTE"]
RTM_DELROUTE: Final = names.RTM_TYPES["RTM_DELROUTE"]
RTM_NEWNEIGH: Final = names.RTM_TYPES["RTM_NEWNEIGH"]
RTM_DELNEIGH: Final = names.RTM_TYPES["RTM_DELNEIGH"]

# linux/if_link.h
IFLA_ADDRESS: Final = 1
IFLA_IFNAME: Final = 3
IFLA_MTU: Final = 4
IFLA_LINK: Final = 5
IFLA_STATS: Final = 7
IFLA_MASTER: Final = 10
IFLA_LINKINFO: Final = 18
IFLA_STATS64: Final = 23
IFLA_LINK_NETNSID: Final = 37
IFLA_INFO_KIND: Final = 1
IFLA_INFO_DATA: Final = 2
IFLA_INFO_SLAVE_KIND: Final = 4
IFLA_INFO_SLAVE_DATA: Final = 5
IFLA_VLAN_ID: Final = 1
IFLA_BOND_MODE: Final = 1
IFLA_VXLAN_ID: Final = 1
IFLA_VXLAN_LINK: Final = 3
IFLA_GENEVE_ID: Final = 1
IFLA_TUN_TYPE: Final = 3
IFLA_BOND_SLAVE_STATE: Final = 1
IFLA_BOND_SLAVE_MII_STATUS: Final = 2
IFLA_BOND_SLAVE_LINK_FAILURE_COUNT: Final = 3
IFLA_BOND_SLAVE_PERM_HWADDR: Final = 4
IFLA_BOND_SLAVE_QUEUE_ID: Final = 5
IFLA_BOND_SLAVE_AD_AGGREGATOR_ID: Final = 6
# linux/if_addr.h
IFA_ADDRESS: Final = 1
IFA_LOCAL: Final = 2
# linux/rtnetlink.h
RTA_DST: Final = 1
RTA_OIF: Final = 4
RTA_GATEWAY: Final = 5
RTA_PRIORITY: Final = 6
RTA_PREFSRC: Final = 7
RTA_MULTIPATH: Final = 9
RTA_TABLE: Final = 15
RTA_VIA: Final = 18
# linux/neighbour.h
NDA_DST: Final = 1
NDA_LLADDR: Final = 2
NDA_VLAN: Final = 5
NDA_VNI: Final = 7

AF_INET: Final = names.AF_INET
AF_INET6: Final = names.AF_INET6
AF_BRIDGE: Final = names.AF_BRIDGE
_ADDR_LEN: Final = {AF_INET: 4, AF_INET6: 16}
_KINDS_WITH_DATA: Final = frozenset({"vlan", "bond", "vxlan", "geneve", "tun"})
_BOND: Final = frozenset({"bond"})
_METRIC_NAMES: Final = tuple(names.STATS_TO_METRIC.values())  # in rtnl_link_stats64 order
_IFF_BITS: Final = tuple(names.IFF_NAMES.items())
_NUD_BITS: Final = tuple(names.NUD_NAMES.items())
_NTF_BITS: Final = tuple(names.NTF_NAMES.items())
_CACHE_MAX: Final = 4096

# The exceptions a slip past our own checks could raise: reported as ProtocolError.
_SLIPS: Final = (struct.error, ValueError, LookupError, TypeError, ArithmeticError)

_Attrs: TypeAlias = dict[int, int]  # attribute type -> offset of its (first) nlattr


# -- datagrams -----------------------------------------------------------------------------


def decode(data: bytes | bytearray | memoryview, *, strict: bool = True) -> Iterator[Decoded]:
    """The records of every message in one rtnetlink datagram, in order.

    Raises :class:`ProtocolError` (with the byte offset) at the first malformed message,
    after yielding the ones before it; see :func:`decode_with_seq` for ``strict``.
    """
    for _seq, record in decode_with_seq(data, strict=strict):
        yield record


def decode_with_seq(
    data: bytes | bytearray | memoryview, *, strict: bool = True
) -> Iterator[tuple[int, Decoded]]:
    """``(nlmsg_seq, record)`` for every message in one rtnetlink datagram, in order.

    Dump replies carry the request's sequence number, multicast events 0. With
    ``strict=False``, a malformed message whose ``nlmsg_len`` still frames it becomes
    ``Skip(type, "malformed: ...")`` and the next messages are decoded; a broken nlmsghdr
    raises :class:`ProtocolError` either way.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    size = len(buf)
    offset = 0
    while offset < size:
        if size - offset < 16:
            raise ProtocolError(f"truncated nlmsghdr ({size - offset} bytes)", offset)
        length, mtype, _flags, seq, _pid = _HEADER(buf, offset)
        if length < 16 or length > size - offset:
            raise ProtocolError(
                f"nlmsg_len {length} does not fit the datagram ({size - offset} bytes left)",
                offset,
            )
        try:
            record = _message(buf, offset, offset + length, mtype, seq)
        except ProtocolError as exc:
            if strict:
                raise
            record = Skip(mtype, f"malformed: {exc}")
        yield seq, record
        offset += (length + 3) & ~3


def _message(buf: bytes, start: int, end: int, mtype: int, seq: int) -> Decoded:
    """Decode the message at ``buf[start:end]`` (its nlmsghdr included)."""
    translate = _TRANSLATORS.get(mtype)
    try:
        if translate is not None:
            return translate(buf, start, end, mtype)
        if mtype == NLMSG_DONE:
            # The payload is the dump's error code (int); tolerate its absence.
            err = _I32(buf, start + 16)[0] if end - start >= 20 else 0
            return Done(seq, -err if err < 0 else err)
        if mtype == NLMSG_ERROR:
            if end - start < 20:
                raise ProtocolError("NLMSG_ERROR without its error code", start)
            err = _I32(buf, start + 16)[0]
            return Error(seq, -err if err < 0 else err)
        return Skip(mtype, f"{_OTHER_TYPES.get(mtype, f'type {mtype}')}: not translated")
    except ProtocolError:
        raise
    except _SLIPS as exc:  # a check of ours missed a case: still a malformed message
        raise ProtocolError(f"malformed message of type {mtype}: {exc!r}", start) from exc


# linux/netlink.h, linux/rtnetlink.h: other messages a route socket may see, for Skip.reason
_OTHER_TYPES: Final = {
    NLMSG_NOOP: "NLMSG_NOOP",
    NLMSG_OVERRUN: "NLMSG_OVERRUN",
    32: "RTM_NEWRULE",
    33: "RTM_DELRULE",
    52: "RTM_NEWPREFIX",
    80: "RTM_NEWNETCONF",
    81: "RTM_DELNETCONF",
    88: "RTM_NEWNSID",
    89: "RTM_DELNSID",
}


# -- attributes ----------------------------------------------------------------------------


def _attrs(buf: bytes, offset: int, end: int) -> _Attrs:
    """Where the first attribute of each type starts in ``buf[offset:end]`` (the hot loop).

    ``offset`` is 4-aligned, as every attribute's start is (``NLA_ALIGN``).
    """
    found: _Attrs = {}
    first = found.setdefault
    unpack, mask = _NLA, _NLA_TYPE_MASK
    last = end - 4
    while offset <= last:
        length, atype = unpack(buf, offset)
        stop = offset + length
        if length < 4 or stop > end:
            raise ProtocolError(
                f"attribute type {atype & _NLA_TYPE_MASK}: nla_len {length} does not fit "
                f"({end - offset} bytes left)",
                offset,
            )
        first(atype & mask, offset)
        offset = (stop + 3) & ~3
    return found  # fewer than 4 bytes left: ignored, as the kernel and pyroute2 do


def _nested(buf: bytes, attrs: _Attrs, atype: int) -> _Attrs | None:
    """The attributes nested in attribute ``atype``, or None if it is absent."""
    offset = attrs.get(atype)
    if offset is None:
        return None
    return _attrs(buf, offset + 4, offset + _U16(buf, offset)[0])


def _payload(buf: bytes, attrs: _Attrs, atype: int) -> tuple[int, int] | None:
    """``(start, size)`` of the payload of attribute ``atype``, or None if absent."""
    offset = attrs.get(atype)
    if offset is None:
        return None
    return offset + 4, _U16(buf, offset)[0] - 4


def _u8(buf: bytes, attrs: _Attrs, atype: int) -> int | None:
    offset = attrs.get(atype)
    if offset is None or _U16(buf, offset)[0] < 5:
        return None
    return buf[offset + 4]


def _u16(buf: bytes, attrs: _Attrs, atype: int) -> int | None:
    offset = attrs.get(atype)
    if offset is None or _U16(buf, offset)[0] < 6:
        return None
    value: int = _U16(buf, offset + 4)[0]
    return value


def _u32(buf: bytes, attrs: _Attrs, atype: int) -> int | None:
    offset = attrs.get(atype)
    if offset is None or _U16(buf, offset)[0] < 8:
        return None
    value: int = _U32(buf, offset + 4)[0]
    return value


def _s32(buf: bytes, attrs: _Attrs, atype: int) -> int | None:
    offset = attrs.get(atype)
    if offset is None or _U16(buf, offset)[0] < 8:
        return None
    value: int = _I32(buf, offset + 4)[0]
    return value


def _string(buf: bytes, attrs: _Attrs, atype: int) -> str | None:
    """A NUL-terminated string (pyroute2 ``asciiz``: NULs stripped at both ends, UTF-8)."""
    offset = attrs.get(atype)
    if offset is None:
        return None
    try:
        return buf[offset + 4 : offset + _U16(buf, offset)[0]].strip(b"\0").decode()
    except UnicodeDecodeError:
        return None  # pyroute2 keeps the bytes, which netlink_msg does not take for a name


def _mac(buf: bytes, attrs: _Attrs, atype: int) -> str | None:
    """A MAC address (pyroute2 ``l2addr``: the first 6 bytes of the payload)."""
    offset = attrs.get(atype)
    if offset is None or _U16(buf, offset)[0] < 10:
        return None
    return buf[offset + 4 : offset + 10].hex(":")


def _positive(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None


# -- addresses -----------------------------------------------------------------------------

_IP_TEXT: dict[bytes, str] = {}


def _ip(packed: bytes) -> str:
    """``ipaddress.ip_address(...).compressed`` of a packed IPv4 (4) or IPv6 (16) address."""
    text = _IP_TEXT.get(packed)
    if text is None:
        if len(packed) == 4:
            text = f"{packed[0]}.{packed[1]}.{packed[2]}.{packed[3]}"
        else:
            text = ipaddress.IPv6Address(packed).compressed
        if len(_IP_TEXT) >= _CACHE_MAX:
            _IP_TEXT.clear()
        _IP_TEXT[packed] = text
    return text


def _target(buf: bytes, attrs: _Attrs, atype: int, family: int) -> str | None:
    """A route address (pyroute2 ``target``: the first 4/16 bytes, by the route's family)."""
    offset = attrs.get(atype)
    if offset is None:
        return None
    size = _ADDR_LEN[family]
    if _U16(buf, offset)[0] - 4 < size:
        return None
    return _ip(buf[offset + 4 : offset + 4 + size])


def _ipaddr(buf: bytes, offset: int) -> str | None:
    """An address of exactly 4 or 16 bytes (pyroute2 ``ipaddr``), else None (undecodable)."""
    size = _U16(buf, offset)[0] - 4
    if size != 4 and size != 16:
        return None
    return _ip(buf[offset + 4 : offset + 4 + size])


def _inet6_ntop(packed: bytes) -> str:
    """glibc's ``inet_ntop(AF_INET6)``: as ipaddress, but ``::a.b.c.d``/``::ffff:a.b.c.d``."""
    if packed[:10] == bytes(10):
        tail = f"{packed[12]}.{packed[13]}.{packed[14]}.{packed[15]}"
        if packed[10:12] == b"\xff\xff":
            return "::ffff:" + tail
        if packed[10:12] == b"\0\0" and packed[12:14] != b"\0\0":
            return "::" + tail  # zero run of exactly 6 groups (IPv4-compatible)
    return ipaddress.IPv6Address(packed).compressed


def _lladdr(raw: bytes) -> str:
    """pyroute2 ``lladdr``: a MAC (6 bytes), an IP address (4, 16), else a hex dump."""
    if len(raw) == 6:
        return raw.hex(":")
    if len(raw) == 4:
        return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"
    if len(raw) == 16:
        return _inet6_ntop(raw)
    return raw.hex(":")


# -- names ---------------------------------------------------------------------------------

_LINK_FLAGS: dict[int, tuple[str, ...]] = {}
_NUD_STATES: dict[int, tuple[str, ...]] = {}
_NTF_FLAGS: dict[int, tuple[str, ...]] = {}


def _link_flags(flags: int) -> list[str]:
    names_ = _LINK_FLAGS.get(flags)
    if names_ is None:
        names_ = tuple(sorted(n for bit, n in _IFF_BITS if flags & bit))
        if len(_LINK_FLAGS) < _CACHE_MAX:
            _LINK_FLAGS[flags] = names_
    return list(names_)


def _nud_states(state: int) -> tuple[str, ...]:
    names_ = _NUD_STATES.get(state)
    if names_ is None:
        names_ = tuple(n for bit, n in _NUD_BITS if state & bit) or ("NUD_NONE",)
        if len(_NUD_STATES) < _CACHE_MAX:
            _NUD_STATES[state] = names_
    return names_


def _ntf_flags(flags: int) -> tuple[str, ...]:
    names_ = _NTF_FLAGS.get(flags)
    if names_ is None:
        names_ = tuple(n for bit, n in _NTF_BITS if flags & bit)
        _NTF_FLAGS[flags] = names_  # 8 bits: 256 entries at most
    return names_


# -- links ---------------------------------------------------------------------------------


def _link(buf: bytes, start: int, end: int, mtype: int) -> Link | Skip:
    if end - start < 32:
        raise ProtocolError("link message shorter than its ifinfomsg", start)
    family, ifi_type, index, flags, _change = _IFINFOMSG(buf, start + 16)
    attrs = _attrs(buf, start + 32, end)
    if family == AF_INET6:
        return Skip(mtype, "IPv6 settings of a link (ifi_family AF_INET6)")
    if index <= 0:
        raise ProtocolError(f"link message without an interface index ({index!r})", start)
    name = _string(buf, attrs, IFLA_IFNAME)
    if not name:
        raise ProtocolError(f"link message for ifindex {index} without IFLA_IFNAME", start)

    info = _nested(buf, attrs, IFLA_LINKINFO)
    kind = _string(buf, info, IFLA_INFO_KIND) if info is not None else None
    link_type = kind or "device"

    metadata: dict[str, Any] = {
        "Name": name,
        "Type": link_type,
        "EncapType": names.ARPHRD_NAMES.get(ifi_type, f"unknown{ifi_type}"),
        "IfIndex": index,
        "State": "UP" if flags & names.IFF_UP else "DOWN",
        "LinkFlags": _link_flags(flags),
    }
    mtu = _positive(_u32(buf, attrs, IFLA_MTU))
    if mtu is not None:
        metadata["MTU"] = mtu
    if ifi_type not in names.NO_L2_ADDRESS:
        mac = _mac(buf, attrs, IFLA_ADDRESS)
        if mac is not None:
            metadata["MAC"] = mac

    master = _positive(_u32(buf, attrs, IFLA_MASTER))
    data = (
        _kind_data(buf, info, IFLA_INFO_DATA, (IFLA_INFO_KIND,), _KINDS_WITH_DATA)
        if info is not None
        else None
    )
    parent: int | None = None
    peer: int | None = None
    if link_type == "veth":
        # No IFLA_LINK: the peer has our ifindex (the kernel omits iflink == ifindex).
        peer = index if IFLA_LINK not in attrs else _positive(_u32(buf, attrs, IFLA_LINK))
    else:
        parent = _positive(_u32(buf, attrs, IFLA_LINK))
        if parent is None and link_type == "vxlan" and data is not None:
            parent = _positive(_u32(buf, data, IFLA_VXLAN_LINK))
        if parent == index:
            parent = None
    netnsid = _s32(buf, attrs, IFLA_LINK_NETNSID)
    link_netnsid = netnsid if netnsid is not None and netnsid >= 0 else None

    if master is not None:
        metadata["MasterIndex"] = master
    if parent is not None:
        metadata["ParentIndex"] = parent
    if peer is not None:
        metadata["PeerIfIndex"] = peer
    if link_netnsid is not None:
        metadata["LinkNetNsID"] = link_netnsid
    if data is not None:
        _kind_metadata(metadata, buf, link_type, data)
    if info is not None and IFLA_INFO_SLAVE_KIND in info:
        bond_slave = _bond_slave(buf, info)
        if bond_slave is not None:
            metadata["BondSlave"] = bond_slave

    return Link(
        index=index,
        name=name,
        deleted=mtype == RTM_DELLINK,
        metadata=metadata,
        master_index=master,
        parent_index=parent,
        peer_index=peer,
        link_netnsid=link_netnsid,
        metrics=_metrics(buf, attrs),
        family=family,
    )


def _kind_data(
    buf: bytes, info: _Attrs, data_type: int, kind_types: tuple[int, ...], wanted: frozenset[str]
) -> _Attrs | None:
    """The attributes nested in IFLA_INFO_DATA (or IFLA_INFO_SLAVE_DATA), for a kind we read.

    As pyroute2 does, the data's layout is that of the first kind attribute met *before* it,
    looked for in ``kind_types`` order (slave data: IFLA_INFO_SLAVE_KIND, else
    IFLA_INFO_KIND); None if it is absent, or of a kind whose data netlink_msg does not read.
    """
    offset = info.get(data_type)
    if offset is None:
        return None
    for kind_type in kind_types:
        kind_at = info.get(kind_type)
        if kind_at is not None and kind_at < offset:
            if _string(buf, info, kind_type) not in wanted:
                return None
            return _attrs(buf, offset + 4, offset + _U16(buf, offset)[0])
    return None


def _kind_metadata(out: dict[str, Any], buf: bytes, link_type: str, data: _Attrs) -> None:
    """Metadata from IFLA_INFO_DATA (netlink_msg._kind_metadata)."""
    if link_type == "vlan":
        vlan = _u16(buf, data, IFLA_VLAN_ID)
        if vlan is not None:
            out["Vlan"] = vlan
    elif link_type == "bond":
        mode = _u8(buf, data, IFLA_BOND_MODE)
        if mode is not None:
            out["BondMode"] = names.BOND_MODES[mode] if mode < len(names.BOND_MODES) else "unknown"
    elif link_type == "vxlan" or link_type == "geneve":
        vni = _u32(buf, data, IFLA_VXLAN_ID if link_type == "vxlan" else IFLA_GENEVE_ID)
        if vni is not None:
            out["VNI"] = vni
    elif link_type == "tun":
        tun_type = _u8(buf, data, IFLA_TUN_TYPE)
        tun_mode = names.TUN_TYPES.get(tun_type) if tun_type is not None else None
        if tun_mode is not None:
            out["TunMode"] = tun_mode


def _bond_slave(buf: bytes, info: _Attrs) -> dict[str, Any] | None:
    """Skydive's ``BondSlave`` metadata of a bond port (netlink_msg._bond_slave)."""
    if _string(buf, info, IFLA_INFO_SLAVE_KIND) != "bond":
        return None
    kinds = (IFLA_INFO_SLAVE_KIND, IFLA_INFO_KIND)
    data = _kind_data(buf, info, IFLA_INFO_SLAVE_DATA, kinds, _BOND) or {}
    state = _u8(buf, data, IFLA_BOND_SLAVE_STATE) or 0
    mii = _u8(buf, data, IFLA_BOND_SLAVE_MII_STATUS) or 0
    out: dict[str, Any] = {
        "Type": "bond",
        "State": names.BOND_SLAVE_STATES[state]
        if state < len(names.BOND_SLAVE_STATES)
        else str(state),
        "MiiStatus": names.BOND_MII_STATUS[mii] if mii < len(names.BOND_MII_STATUS) else str(mii),
        "LinkFailureCount": _u32(buf, data, IFLA_BOND_SLAVE_LINK_FAILURE_COUNT) or 0,
        "QueueId": _u16(buf, data, IFLA_BOND_SLAVE_QUEUE_ID) or 0,
        "AggregatorId": _u16(buf, data, IFLA_BOND_SLAVE_AD_AGGREGATOR_ID) or 0,
        "AdActorOperPortState": 0,  # as netlink_msg (pyroute2 0.9 does not decode them)
        "AdPartnerOperPortState": 0,
    }
    perm = _mac(buf, data, IFLA_BOND_SLAVE_PERM_HWADDR)
    if perm is not None:
        out["PermMAC"] = perm
    return out


def _metrics(buf: bytes, attrs: _Attrs) -> dict[str, int] | None:
    """IFLA_STATS64 (else IFLA_STATS) as Skydive counters, zeros left out; None if absent.

    As in netlink_msg, an IFLA_STATS64 too short to decode gives None (no fallback).
    """
    offset = attrs.get(IFLA_STATS64)
    layout = _STATS64
    if offset is None:
        offset = attrs.get(IFLA_STATS)
        layout = _STATS32
        if offset is None:
            return None
    if _U16(buf, offset)[0] - 4 < layout.size:
        return None
    return {
        n: v for n, v in zip(_METRIC_NAMES, layout.unpack_from(buf, offset + 4), strict=True) if v
    }


# -- addresses, routes, neighbours ---------------------------------------------------------


def _addr(buf: bytes, start: int, end: int, mtype: int) -> Addr:
    if end - start < 24:
        raise ProtocolError("address message shorter than its ifaddrmsg", start)
    family, prefixlen, _flags, _scope, index = _IFADDRMSG(buf, start + 16)
    attrs = _attrs(buf, start + 24, end)
    if family != AF_INET and family != AF_INET6:
        raise ProtocolError(f"address message of unsupported family {family}", start)
    # IFA_LOCAL is the local address; IFA_ADDRESS is the peer's on point-to-point links.
    offset = attrs.get(IFA_LOCAL)
    if offset is None:
        offset = attrs.get(IFA_ADDRESS)
    ip = _ipaddr(buf, offset) if offset is not None else None
    if ip is None:
        raise ProtocolError("address message without IFA_LOCAL or IFA_ADDRESS", start)
    if (":" in ip) != (family == AF_INET6):
        raise ProtocolError(f"address {ip} does not match family {family}", start)
    return Addr(index=index, family=family, cidr=f"{ip}/{prefixlen}", deleted=mtype == RTM_DELADDR)


def _route(buf: bytes, start: int, end: int, mtype: int) -> Route | Skip:
    if end - start < 28:
        raise ProtocolError("route message shorter than its rtmsg", start)
    family, dst_len, _src_len, tos, rtm_table, protocol, _scope, _type, flags = _RTMSG(
        buf, start + 16
    )
    attrs = _attrs(buf, start + 28, end)
    if family != AF_INET and family != AF_INET6:
        return Skip(mtype, f"route of family {family}")
    if flags & names.RTM_F_CLONED:
        return Skip(mtype, "cloned (cache) route")
    table = _u32(buf, attrs, RTA_TABLE)
    if table is None:
        table = rtm_table
    if table == names.RT_TABLE_LOCAL:
        return Skip(mtype, "local table route")
    if RTA_DST in attrs:
        dst = _target(buf, attrs, RTA_DST, family)
        if dst is None:
            raise ProtocolError("RTA_DST shorter than an address", attrs[RTA_DST])
        prefix = f"{dst}/{dst_len}"
    else:
        prefix = "0.0.0.0/0" if family == AF_INET else "::/0"
    priority = _u32(buf, attrs, RTA_PRIORITY)

    hops: list[dict[str, Any]] = []
    multipath = _payload(buf, attrs, RTA_MULTIPATH)
    if multipath is not None and multipath[1] > 0:
        offset, stop = multipath[0], multipath[0] + multipath[1]
        while offset < stop:
            if stop - offset < 8:
                raise ProtocolError("truncated rtnexthop", offset)
            size, _nh_flags, _hops, oif = _RTNEXTHOP(buf, offset)
            if size < 8 or size > stop - offset:
                raise ProtocolError(f"rtnh_len {size} does not fit", offset)
            nh_attrs = _attrs(buf, offset + 8, offset + size)
            _add_nexthop(hops, oif, _gateway(buf, nh_attrs, family), priority)
            offset += (size + 3) & ~3
    else:
        _add_nexthop(hops, _u32(buf, attrs, RTA_OIF), _gateway(buf, attrs, family), priority)
    return Route(
        table=table,
        family=family,
        prefix=prefix,
        protocol=protocol,
        src=_target(buf, attrs, RTA_PREFSRC, family),
        nexthops=tuple(hops),
        deleted=mtype == RTM_DELROUTE,
        priority=priority,
        tos=tos,
    )


def _gateway(buf: bytes, attrs: _Attrs, family: int) -> str | None:
    if RTA_GATEWAY in attrs:  # present but too short: undecodable, and no RTA_VIA lookup
        return _target(buf, attrs, RTA_GATEWAY, family)
    via = _payload(buf, attrs, RTA_VIA)  # IPv4 route via an IPv6 gateway (RFC 5549)
    if via is None or via[1] < 2:
        return None
    offset, size = via
    if size == 2:
        return None  # no address
    via_family = _U16(buf, offset)[0]
    if _ADDR_LEN.get(via_family) != size - 2:
        raise ProtocolError(f"RTA_VIA address of {size - 2} bytes for family {via_family}", offset)
    return _ip(buf[offset + 2 : offset + size])


def _add_nexthop(
    hops: list[dict[str, Any]], oif: int | None, gw: str | None, prio: int | None
) -> None:
    if oif is None or oif <= 0:
        return
    nexthop: dict[str, Any] = {"IfIndex": oif, "Priority": prio or 0}
    if gw is not None:
        nexthop["IP"] = gw
    hops.append(nexthop)


def _neigh(buf: bytes, start: int, end: int, mtype: int) -> Neighbor | Skip:
    if end - start < 28:
        raise ProtocolError("neighbour message shorter than its ndmsg", start)
    family, ifindex, state, flags, _type = _NDMSG(buf, start + 16)
    attrs = _attrs(buf, start + 28, end)
    lladdr = _payload(buf, attrs, NDA_LLADDR)
    mac = _lladdr(buf[lladdr[0] : lladdr[0] + lladdr[1]]) if lladdr is not None else ""
    if flags & names.NTF_PROXY:
        return Skip(mtype, "proxy neighbour entry")
    if family != AF_BRIDGE and state & names.NUD_NOARP and mac.strip("0:") == "":
        return Skip(mtype, "NOARP entry without address (loopback)")
    offset = attrs.get(NDA_DST)
    ip = _ipaddr(buf, offset) if offset is not None else None
    return Neighbor(
        index=ifindex,
        family=family,
        ip=ip or "",
        mac=mac,
        state=_nud_states(state),
        flags=_ntf_flags(flags),
        deleted=mtype == RTM_DELNEIGH or not mac,
        vlan=_u16(buf, attrs, NDA_VLAN),
        vni=_u32(buf, attrs, NDA_VNI),
    )


_TRANSLATORS: Final[dict[int, Callable[[bytes, int, int, int], Decoded]]] = {
    RTM_NEWLINK: _link,
    RTM_DELLINK: _link,
    RTM_NEWADDR: _addr,
    RTM_DELADDR: _addr,
    RTM_NEWROUTE: _route,
    RTM_DELROUTE: _route,
    RTM_NEWNEIGH: _neigh,
    RTM_DELNEIGH: _neigh,
}
