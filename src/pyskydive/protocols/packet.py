"""Sans-I/O packet decoder: one captured frame in, one immutable :class:`Packet` out.

Theory of operation
-------------------
:func:`decode` walks the frame layer by layer (:mod:`pyskydive.protocols.layers`). Each layer
decoder reads its header with a precompiled :class:`struct.Struct` from a :class:`memoryview` (no
copies), stores typed fields at their index in a list that becomes the :class:`Packet` tuple,
and names the next layer. The walk stops at the first layer it does not parse (the rest is
payload), at a tunnel (the rest is decoded as a nested :class:`Packet` in ``inner``, with
``encapsulated=True``: the flow table's ParentUUID / L3TrackingID), or at an error.

Errors never escape. A truncated or malformed header ends the walk and sets ``Packet.error``
("truncated TCP header at offset 34"); the layers decoded before it are kept, so the flow table
can still account the packet on its outer layers and count the decode error. ``decode`` raises
:class:`DecodeError` only for a caller error (an unknown ``first`` layer name, a non-contiguous
memoryview). An error inside a tunnel is reported on the inner packet (``packet.inner.error``);
:attr:`Packet.errors` walks them all. An error in an IPv6 extension header names that header
and keeps the IPv6 layer.

Layer names are gopacket's, as Skydive prints them in ``LayersPath`` (``Ethernet/Dot1Q/IPv4/TCP``,
``Ethernet/IPv4/UDP/DNS``). As in Skydive v0.28 the trailing ``Payload`` is not part of the path
(Skydive 0.3 printed it: ``Ethernet/IPv4/UDP/Payload``); its size is ``payload_len``.

References: IEEE 802.1Q (tags 0x8100, 0x88a8, 0x9100), RFC 826 (ARP), RFC 791 (IPv4), RFC 8200
(IPv6 and extension headers), RFC 792 / RFC 4443 / RFC 4861 (ICMPv4, ICMPv6, neighbour discovery),
RFC 9293 (TCP), RFC 768 (UDP), RFC 9260 (SCTP), RFC 2784 / RFC 2890 (GRE, key), RFC 7348 (VXLAN),
RFC 8926 (Geneve), RFC 3032 (MPLS), RFC 1035 (DNS), RFC 2131 (DHCP).

Choices
-------
- IPv4/IPv6 fragments: the first fragment (offset 0) is decoded through its transport header;
  a later fragment ends with the layer ``Fragment`` (as gopacket) and no ports.
- Tunnels split the packet where Skydive's ``PacketSeqFromGoPacket`` does: after GRE, VXLAN,
  Geneve and MPLS (``Ethernet/MPLS`` + inner ``IPv4/UDP``; GRE followed by MPLS splits once, after
  MPLS). IP-in-IP (protocols 4 and 41) is also split (``tunnel="IPinIP"``), where gopacket and
  Skydive keep one path (``Ethernet/IPv4/IPv4/TCP``) and key the flow on the outer header.
- Ethertype 0x6558 straight after Ethernet (Ethernet in Ethernet) gives an inner packet too,
  with ``tunnel`` None (tshark and gopacket both decode the inner frame).
- VXLAN is recognised on UDP destination port 4789 only (gopacket's choice), not Linux's legacy
  8472; Geneve on 6081.
- ``LinuxSLL`` (pcap link type 113) is in ``layers`` but, as in Skydive, not in ``layers_path``.
- Payload lengths are bounded by the IP total / payload length, so Ethernet padding is not payload.
- Applications by port, as Skydive's default port map: DNS on TCP/UDP 53 (only with a payload),
  DHCPv4 on UDP 67/68. Skydive's Application is otherwise the last layer's name: that is
  ``layers[-1]``, left to the flow table.
- ``icmp_id`` / ``icmp_seq`` only for echo request/reply (other types have no identifier).
- IPv6 addresses print in RFC 5952 form (``::ffff:102:304`` for IPv4-mapped, where Go prints
  ``1.2.3.4``).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from pyskydive.errors import ProtocolError
from pyskydive.protocols._packet_fields import (
    _ENCAPSULATED,
    _ERROR,
    _INNER,
    _LAYERS,
    _LENGTH,
    _PAYLOAD_LEN,
)
from pyskydive.protocols.layers import _DECODERS, _Malformed, _State, _Truncated

__all__ = [
    "ARP_REPLY",
    "ARP_REQUEST",
    "TCP_ACK",
    "TCP_CWR",
    "TCP_ECE",
    "TCP_FIN",
    "TCP_PSH",
    "TCP_RST",
    "TCP_SYN",
    "TCP_URG",
    "DecodeError",
    "Packet",
    "decode",
]

TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_PSH: Final = 0x08
TCP_ACK: Final = 0x10
TCP_URG: Final = 0x20
TCP_ECE: Final = 0x40
TCP_CWR: Final = 0x80

ARP_REQUEST: Final = 1
ARP_REPLY: Final = 2

_MAX_DEPTH: Final = 4  # tunnels within tunnels; deeper is reported as an error


class DecodeError(ProtocolError):
    """A frame that cannot be decoded at all (only for caller errors: see module docstring)."""


class Packet(NamedTuple):
    """One decoded frame. Fields of layers absent from ``layers`` are ``None`` (or empty).

    A :class:`typing.NamedTuple` rather than a frozen dataclass: it is as immutable and has no
    ``__dict__``, and building it from a prefilled list costs a tenth of a frozen dataclass's
    ``__init__`` (which sets its 48 fields one ``object.__setattr__`` at a time) on this hot path.
    """

    layers: tuple[str, ...] = ()
    length: int = 0  # bytes of the frame as given to decode()
    error: str | None = None
    # Ethernet / Linux SLL
    eth_src: str | None = None
    eth_dst: str | None = None
    ethertype: int | None = None  # the innermost one, after VLAN tags
    vlans: tuple[int, ...] = ()  # 802.1ad/802.1Q VLAN ids, outer first
    mpls_labels: tuple[int, ...] = ()  # outer first
    # ARP
    arp_op: int | None = None
    arp_sender_hw: str | None = None
    arp_sender_ip: str | None = None
    arp_target_hw: str | None = None
    arp_target_ip: str | None = None
    # IPv4 / IPv6
    ip_version: int | None = None
    ip_src: str | None = None
    ip_dst: str | None = None
    ip_proto: int | None = None  # IPv4 protocol; IPv6 next header after extension headers
    ttl: int | None = None  # IPv4 TTL / IPv6 hop limit
    ip_id: int | None = None  # IPv4 id; IPv6 fragment identification
    ip_flags: int | None = None  # IPv4 flags (bit 1 DF, bit 0 MF); IPv6 fragment M flag
    frag_offset: int | None = None  # in 8-byte units
    ip_options_len: int | None = None  # IPv4 options; IPv6 extension headers, in bytes
    ip_header_len: int | None = None
    ip_total_len: int | None = None  # IPv4 total length; IPv6 40 + payload length
    flow_label: int | None = None
    # ICMPv4 / ICMPv6
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None  # echo request/reply only
    icmp_seq: int | None = None  # echo request/reply only
    nd_target: str | None = None  # ICMPv6 neighbour solicitation/advertisement
    # TCP / UDP / SCTP
    src_port: int | None = None
    dst_port: int | None = None
    tcp_flags: int | None = None
    tcp_seq: int | None = None
    tcp_ack: int | None = None
    tcp_window: int | None = None
    udp_len: int | None = None
    sctp_vtag: int | None = None
    # Tunnels: the outer packet names it, ``inner`` holds the encapsulated packet
    tunnel: str | None = None  # "GRE", "VXLAN", "Geneve", "MPLS", "IPinIP"
    tunnel_id: int | None = None  # VXLAN/Geneve VNI, GRE key (Skydive's Network.ID)
    gre_proto: int | None = None  # GRE / Geneve protocol type (an ethertype)
    application: str | None = None  # "DNS", "DHCPv4"
    payload_len: int = 0
    inner: Packet | None = None
    encapsulated: bool = False  # True on a packet found inside a tunnel

    @property
    def layers_path(self) -> str:
        """Skydive's LayersPath: ``Ethernet/IPv4/ICMPv4``."""
        layers = self.layers
        if layers and layers[0] == "LinuxSLL":
            layers = layers[1:]
        return "/".join(layers)

    @property
    def errors(self) -> list[str]:
        """Decode errors of this packet and of its tunnelled inner packets."""
        out: list[str] = []
        p: Packet | None = self
        while p is not None:
            if p.error is not None:
                out.append(p.error)
            p = p.inner
        return out


_tuple_new = tuple.__new__


def decode(frame: bytes | bytearray | memoryview, *, first: str = "Ethernet") -> Packet:
    """Decode one frame starting with layer ``first`` ("Ethernet", "LinuxSLL", "IPv4", ...).

    Never raises on bad bytes: see ``Packet.error``. Raises :class:`DecodeError` for caller
    errors only: an unknown ``first``, or a memoryview that is not contiguous.
    """
    if first not in _DECODERS or first[0] == "+":
        raise DecodeError(f"unknown first layer {first!r}", 0)
    if not isinstance(frame, memoryview):
        return _decode(memoryview(frame), first, 0)
    if frame.format != "B" or frame.ndim != 1 or not frame.c_contiguous:
        try:
            frame = frame.cast("B")  # TypeError when not contiguous
        except TypeError as exc:
            raise DecodeError(f"frame memoryview cannot be read as bytes: {exc}", 0) from exc
    return _decode(frame, first, 0)


def _decode(b: memoryview, name: str | None, depth: int) -> Packet:
    n = len(b)
    s = _State(n)
    layers = s.layers
    v = s.fields
    o = 0
    inner: Packet | None = None
    decoders = _DECODERS
    while name is not None:
        decoder = decoders.get(name)
        if decoder is None:  # "+Name": the rest is a tunnelled packet starting with Name
            if depth >= _MAX_DEPTH:
                v[_ERROR] = f"tunnels nested deeper than {_MAX_DEPTH} at offset {o}"
                break
            inner = _decode(b[o : s.end], name[1:], depth + 1)
            o = s.end
            break
        layers.append(name)
        try:
            name, o = decoder(b, o, s)
        except _Truncated as exc:
            if exc.args:  # a sub-header of the layer (kept) does not fit
                sub, at = exc.args
                v[_ERROR] = f"truncated {sub} header at offset {at}"
            else:
                layers.pop()
                v[_ERROR] = f"truncated {name} header at offset {o}"
            break
        except _Malformed as exc:
            layers.pop()
            v[_ERROR] = f"malformed {name} header at offset {o}: {exc}"
            break
        except struct.error:  # a bound check missed: still never escape
            layers.pop()
            v[_ERROR] = f"truncated {name} header at offset {o}"
            break
    payload = s.end - o
    v[_LAYERS] = tuple(layers)
    v[_LENGTH] = n
    if payload > 0:
        v[_PAYLOAD_LEN] = payload
    v[_INNER] = inner
    v[_ENCAPSULATED] = depth > 0
    return _tuple_new(Packet, v)
