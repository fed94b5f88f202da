"""Layer decoders of the packet decoder (see :mod:`pyskydive.protocols.packet`).

Each decoder takes (frame, offset, state), checks that its header fits, stores its fields at
their index in ``state.fields`` (the future :class:`~pyskydive.protocols.packet.Packet`) and
returns the name of the next layer (``None``: the rest is payload; ``"+Name"``: the rest is a
tunnelled packet starting with ``Name``) and the offset after its header. A header that does not
fit raises :class:`_Truncated`, an impossible field :class:`_Malformed`; the walk turns both into
``Packet.error``. Specs are cited in the packet module's docstring.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Final

from pyskydive.protocols._packet_fields import (
    _APPLICATION,
    _ARP_OP,
    _ARP_SENDER_HW,
    _ARP_SENDER_IP,
    _ARP_TARGET_HW,
    _ARP_TARGET_IP,
    _DST_PORT,
    _ETH_DST,
    _ETH_SRC,
    _ETHERTYPE,
    _FLOW_LABEL,
    _FRAG_OFFSET,
    _GRE_PROTO,
    _ICMP_CODE,
    _ICMP_ID,
    _ICMP_SEQ,
    _ICMP_TYPE,
    _IP_DST,
    _IP_FLAGS,
    _IP_HEADER_LEN,
    _IP_ID,
    _IP_OPTIONS_LEN,
    _IP_PROTO,
    _IP_SRC,
    _IP_TOTAL_LEN,
    _IP_VERSION,
    _MPLS_LABELS,
    _ND_TARGET,
    _SCTP_VTAG,
    _SRC_PORT,
    _TCP_ACK,
    _TCP_FLAGS,
    _TCP_SEQ,
    _TCP_WINDOW,
    _TEMPLATE,
    _TTL,
    _TUNNEL,
    _TUNNEL_ID,
    _UDP_LEN,
    _VLANS,
)


class _Truncated(Exception):
    """Internal: a header does not fit; turned into ``Packet.error``.

    Raised bare for the layer being decoded; with ``(layer name, offset)`` when the header that
    does not fit is a sub-header already past its layer's own fields (IPv6 extension headers).
    """


class _Malformed(Exception):
    """Internal: a header field is impossible; turned into ``Packet.error``."""


_H = struct.Struct("!H")
_I = struct.Struct("!I")
_SLL = struct.Struct("!HHH8sH")
_ARP = struct.Struct("!HHBBH")
_IPV4 = struct.Struct("!BBHHHBBHII")
_ETH = struct.Struct("!6s6sH")
_IPV6 = struct.Struct("!IHBB")
_EXT = struct.Struct("!BB")
_FRAG6 = struct.Struct("!BxHI")
_ICMP = struct.Struct("!BBHHH")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_SCTP = struct.Struct("!HHI")
_GRE = struct.Struct("!HH")
_HH = _GRE
_8H = struct.Struct("!8H")
_VXLAN = struct.Struct("!BxxxI")
_GENEVE = struct.Struct("!BBHI")

_ETHERTYPES: Final[dict[int, str]] = {
    0x0800: "IPv4",
    0x86DD: "IPv6",
    0x0806: "ARP",
    0x8100: "Dot1Q",
    0x88A8: "Dot1Q",  # 802.1ad S-tag: gopacket names it Dot1Q too
    0x9100: "Dot1Q",  # pre-standard QinQ
    0x8847: "MPLS",
    0x8848: "MPLS",
    # Transparent Ethernet bridging: Ethernet in Ethernet (tshark and gopacket decode it), an
    # inner packet with ``tunnel`` None; after GRE or Geneve, their inner Ethernet.
    0x6558: "+Ethernet",
}
_IP_PROTOS: Final[dict[int, str]] = {
    1: "ICMPv4",
    6: "TCP",
    17: "UDP",
    58: "ICMPv6",
    132: "SCTP",
    47: "GRE",
    4: "+IPv4",  # IP in IP (RFC 2003): a tunnel, decoded as an inner packet
    41: "+IPv6",  # IPv6 in IP (RFC 4213)
}
_IPV6_EXT: Final[dict[int, str]] = {
    0: "IPv6HopByHop",
    43: "IPv6Routing",
    44: "IPv6Fragment",
    60: "IPv6Destination",
}
_VXLAN_PORT: Final = 4789
_GENEVE_PORT: Final = 6081


# Address texts are memoised (pure functions of their bytes; bounded): a capture sees the same
# few thousand addresses over and over, and formatting is the costliest part of a header.
@lru_cache(maxsize=1 << 16)
def _ipv4_text(a: int) -> str:
    return f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"


def _ipv4(b: memoryview, o: int) -> str:
    return _ipv4_text(_I.unpack_from(b, o)[0])


@lru_cache(maxsize=1 << 16)
def _ipv6_text(a: bytes) -> str:
    """RFC 5952 text form (longest run of two or more zero groups compressed, lower case)."""
    g = _8H.unpack(a)
    best, best_len, run, run_len = -1, 1, -1, 0
    for i, v in enumerate(g):
        if v == 0:
            if run < 0:
                run, run_len = i, 0
            run_len += 1
            if run_len > best_len:
                best, best_len = run, run_len
        else:
            run = -1
    if best < 0:
        return ":".join(f"{v:x}" for v in g)
    head = ":".join(f"{v:x}" for v in g[:best])
    tail = ":".join(f"{v:x}" for v in g[best + best_len :])
    return f"{head}::{tail}"


def _ipv6(b: memoryview, o: int) -> str:
    return _ipv6_text(b[o : o + 16].tobytes())


def _mac(b: memoryview, o: int) -> str:
    return b[o : o + 6].hex(":")


class _State:
    """Mutable scratch of one decode walk (one per tunnel level)."""

    __slots__ = ("end", "fields", "layers")

    def __init__(self, end: int) -> None:
        self.layers: list[str] = []
        self.fields: list[Any] = _TEMPLATE.copy()
        self.end = end  # bytes of this (sub)packet that belong to it; IP trims padding


# Each layer decoder: (frame, offset, state) -> (next layer name or None, new offset).
Decoder = Callable[[memoryview, int, _State], tuple[str | None, int]]


def _ethernet(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 14 > s.end:
        raise _Truncated
    dst, src, et = _ETH.unpack_from(b, o)
    v = s.fields
    v[_ETH_DST] = dst.hex(":")
    v[_ETH_SRC] = src.hex(":")
    v[_ETHERTYPE] = et
    return (_ETHERTYPES.get(et) if et >= 0x0600 else None), o + 14


def _ethertype(et: int, s: _State) -> str | None:
    s.fields[_ETHERTYPE] = et
    return _ETHERTYPES.get(et) if et >= 0x0600 else None  # < 0x600: 802.3 length, LLC follows


def _linux_sll(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 16 > s.end:
        raise _Truncated
    _pkttype, hatype, alen, _addr, proto = _SLL.unpack_from(b, o)
    if hatype == 1 and alen == 6:
        s.fields[_ETH_SRC] = _mac(b, o + 6)
    return _ethertype(proto, s), o + 16


def _dot1q(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 4 > s.end:
        raise _Truncated
    tci, et = _HH.unpack_from(b, o)
    v = s.fields
    v[_VLANS] = (*v[_VLANS], tci & 0x0FFF)
    return _ethertype(et, s), o + 4


def _mpls(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    labels: list[int] = []
    while True:
        if o + 4 > s.end:
            raise _Truncated
        (v,) = _I.unpack_from(b, o)
        labels.append(v >> 12)
        o += 4
        if v & 0x100:  # bottom of stack
            break
    v = s.fields
    v[_MPLS_LABELS] = tuple(labels)
    if v[_TUNNEL] is None:  # GRE then MPLS: one split, at MPLS, with GRE's key
        v[_TUNNEL] = "MPLS"
    if o + 1 > s.end:
        raise _Truncated
    nibble = b[o] >> 4  # RFC 3032 carries no payload type: guess from the IP version
    return ("+IPv4" if nibble == 4 else "+IPv6" if nibble == 6 else None), o


def _arp(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 8 > s.end:
        raise _Truncated
    htype, ptype, hlen, plen, op = _ARP.unpack_from(b, o)
    if o + 8 + 2 * (hlen + plen) > s.end:
        raise _Truncated
    v = s.fields
    v[_ARP_OP] = op
    if htype == 1 and ptype == 0x0800 and hlen == 6 and plen == 4:
        v[_ARP_SENDER_HW] = _mac(b, o + 8)
        v[_ARP_SENDER_IP] = _ipv4(b, o + 14)
        v[_ARP_TARGET_HW] = _mac(b, o + 18)
        v[_ARP_TARGET_IP] = _ipv4(b, o + 24)
    return None, o + 8 + 2 * (hlen + plen)


def _ip4(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 20 > s.end:
        raise _Truncated
    vihl, _tos, total, ident, frag, ttl, proto, _csum, src, dst = _IPV4.unpack_from(b, o)
    if vihl >> 4 != 4:
        raise _Malformed("IP version is not 4")
    hl = (vihl & 0x0F) * 4
    if hl < 20:
        raise _Malformed(f"IPv4 header length {hl} < 20")
    if total < hl:
        raise _Malformed(f"IPv4 total length {total} < header length {hl}")
    if o + hl > s.end:
        raise _Truncated
    v = s.fields
    v[_IP_VERSION] = 4
    v[_IP_SRC] = _ipv4_text(src)
    v[_IP_DST] = _ipv4_text(dst)
    v[_IP_PROTO] = proto
    v[_TTL] = ttl
    v[_IP_ID] = ident
    v[_IP_FLAGS] = frag >> 13
    v[_FRAG_OFFSET] = off = frag & 0x1FFF
    v[_IP_OPTIONS_LEN] = hl - 20
    v[_IP_HEADER_LEN] = hl
    v[_IP_TOTAL_LEN] = total
    if o + total < s.end:
        s.end = o + total  # Ethernet padding is not payload
    if off:
        return "Fragment", o + hl
    nxt = _IP_PROTOS.get(proto)
    if nxt is not None and nxt[0] == "+":
        v[_TUNNEL] = "IPinIP"
    return nxt, o + hl


def _ip6(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 40 > s.end:
        raise _Truncated
    vtf, plen, nh, hop = _IPV6.unpack_from(b, o)
    if vtf >> 28 != 6:
        raise _Malformed("IP version is not 6")
    v = s.fields
    v[_IP_VERSION] = 6
    v[_FLOW_LABEL] = vtf & 0xFFFFF
    v[_TTL] = hop
    v[_IP_SRC] = _ipv6(b, o + 8)
    v[_IP_DST] = _ipv6(b, o + 24)
    v[_IP_HEADER_LEN] = 40
    v[_IP_TOTAL_LEN] = 40 + plen
    if plen and o + 40 + plen < s.end:  # plen 0 is a jumbogram: keep the frame's end
        s.end = o + 40 + plen
    start = o
    o += 40
    layers = s.layers
    fragment = False
    while nh in _IPV6_EXT:
        ext = _IPV6_EXT[nh]
        if o + 8 > s.end:
            raise _Truncated(ext, o)  # the error names the extension header, IPv6 stays
        if nh == 44:
            nxt, fo, ident = _FRAG6.unpack_from(b, o)
            v[_IP_ID] = ident
            v[_FRAG_OFFSET] = fo >> 3
            v[_IP_FLAGS] = fo & 1
            fragment = fo >> 3 != 0
            size = 8
        else:
            nxt, hlen = _EXT.unpack_from(b, o)
            size = (hlen + 1) * 8
            if o + size > s.end:
                raise _Truncated(ext, o)
        layers.append(ext)
        nh = nxt
        o += size
    v[_IP_PROTO] = nh
    v[_IP_OPTIONS_LEN] = o - start - 40
    if fragment:
        return "Fragment", o
    if nh == 59:  # no next header
        return None, o
    nxt = _IP_PROTOS.get(nh)
    if nxt is not None and nxt[0] == "+":
        v[_TUNNEL] = "IPinIP"
    return nxt, o


def _icmp4(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 8 > s.end:
        raise _Truncated
    t, c, _csum, ident, seq = _ICMP.unpack_from(b, o)
    v = s.fields
    v[_ICMP_TYPE] = t
    v[_ICMP_CODE] = c
    if t in (0, 8):  # echo reply, echo request
        v[_ICMP_ID] = ident
        v[_ICMP_SEQ] = seq
    return None, o + 8


def _icmp6(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 8 > s.end:
        raise _Truncated
    t, c, _csum, ident, seq = _ICMP.unpack_from(b, o)
    v = s.fields
    v[_ICMP_TYPE] = t
    v[_ICMP_CODE] = c
    if t in (128, 129):  # echo request, echo reply
        v[_ICMP_ID] = ident
        v[_ICMP_SEQ] = seq
    elif t in (135, 136):  # neighbour solicitation, advertisement (RFC 4861 §4.3, §4.4)
        if o + 24 > s.end:
            raise _Truncated
        v[_ND_TARGET] = _ipv6(b, o + 8)
        return None, o + 24
    return None, o + 8


def _app(sport: int, dport: int, udp: bool) -> str | None:
    if sport == 53 or dport == 53:
        return "DNS"
    if udp and (sport in (67, 68) and dport in (67, 68)):
        return "DHCPv4"
    return None


def _tcp(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 20 > s.end:
        raise _Truncated
    sp, dp, seq, ack, doff, flags, win, _csum, _urg = _TCP.unpack_from(b, o)
    hl = (doff >> 4) * 4
    if hl < 20:
        raise _Malformed(f"TCP data offset {hl} < 20")
    if o + hl > s.end:
        raise _Truncated
    v = s.fields
    v[_SRC_PORT] = sp
    v[_DST_PORT] = dp
    v[_TCP_SEQ] = seq
    v[_TCP_ACK] = ack
    v[_TCP_FLAGS] = flags
    v[_TCP_WINDOW] = win
    o += hl
    if o < s.end:  # an application layer needs a payload to be recognised
        return _app(sp, dp, False), o
    return None, o


def _udp(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 8 > s.end:
        raise _Truncated
    sp, dp, ulen, _csum = _UDP.unpack_from(b, o)
    v = s.fields
    v[_SRC_PORT] = sp
    v[_DST_PORT] = dp
    v[_UDP_LEN] = ulen
    if ulen >= 8 and o + ulen < s.end:
        s.end = o + ulen
    o += 8
    if dp == _VXLAN_PORT:
        return "VXLAN", o
    if dp == _GENEVE_PORT:
        return "Geneve", o
    if o < s.end:
        return _app(sp, dp, True), o
    return None, o


def _sctp(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 12 > s.end:
        raise _Truncated
    sp, dp, vtag = _SCTP.unpack_from(b, o)
    v = s.fields
    v[_SRC_PORT] = sp
    v[_DST_PORT] = dp
    v[_SCTP_VTAG] = vtag
    return None, o + 12


def _gre(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 4 > s.end:
        raise _Truncated
    flags, proto = _GRE.unpack_from(b, o)
    if flags & 0x0007:
        raise _Malformed(f"GRE version {flags & 7} is not 0")
    size = 4
    v = s.fields
    if flags & 0x8000:  # checksum present (+ reserved1)
        size += 4
    if flags & 0x2000:  # key present
        if o + size + 4 > s.end:
            raise _Truncated
        (v[_TUNNEL_ID],) = _I.unpack_from(b, o + size)
        size += 4
    if flags & 0x1000:  # sequence number present
        size += 4
    if o + size > s.end:
        raise _Truncated
    v[_TUNNEL] = "GRE"
    v[_GRE_PROTO] = proto
    if proto in (0x8847, 0x8848):  # MPLS over GRE: Skydive splits at MPLS, not at GRE
        return "MPLS", o + size
    return _tunnel_inner(_ETHERTYPES.get(proto)), o + size


def _vxlan(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 8 > s.end:
        raise _Truncated
    flags, vni = _VXLAN.unpack_from(b, o)
    v = s.fields
    v[_TUNNEL] = "VXLAN"
    if flags & 0x08:  # I flag: VNI valid
        v[_TUNNEL_ID] = vni >> 8
    return _tunnel_inner("Ethernet"), o + 8


def _geneve(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    if o + 8 > s.end:
        raise _Truncated
    vopt, _flags, proto, vni = _GENEVE.unpack_from(b, o)
    if vopt >> 6:
        raise _Malformed(f"Geneve version {vopt >> 6} is not 0")
    size = 8 + (vopt & 0x3F) * 4
    if o + size > s.end:
        raise _Truncated
    v = s.fields
    v[_TUNNEL] = "Geneve"
    v[_TUNNEL_ID] = vni >> 8
    v[_GRE_PROTO] = proto
    return _tunnel_inner(_ETHERTYPES.get(proto)), o + size


def _tunnel_inner(name: str | None) -> str | None:
    if name is None or name[0] == "+":
        return name
    return "+" + name  # "+X": decode the rest as an inner packet starting with X


_DECODERS: Final[dict[str, Decoder]] = {
    "Ethernet": _ethernet,
    "LinuxSLL": _linux_sll,
    "Dot1Q": _dot1q,
    "MPLS": _mpls,
    "ARP": _arp,
    "IPv4": _ip4,
    "IPv6": _ip6,
    "ICMPv4": _icmp4,
    "ICMPv6": _icmp6,
    "TCP": _tcp,
    "UDP": _udp,
    "SCTP": _sctp,
    "GRE": _gre,
    "VXLAN": _vxlan,
    "Geneve": _geneve,
}


def _dns(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    s.fields[_APPLICATION] = "DNS"  # recognised by port; the message is payload
    return None, o


def _dhcp4(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    s.fields[_APPLICATION] = "DHCPv4"  # recognised by ports; the message is payload
    return None, o


def _fragment(b: memoryview, o: int, s: _State) -> tuple[str | None, int]:
    return None, o  # a non-first fragment: the rest is payload


_DECODERS["DNS"] = _dns
_DECODERS["DHCPv4"] = _dhcp4
_DECODERS["Fragment"] = _fragment
