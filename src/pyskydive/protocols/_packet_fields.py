"""Field indexes of :class:`pyskydive.protocols.packet.Packet`, for the layer decoders.

The decoders fill a list in Packet's field order and the packet module makes the tuple from it,
which is cheaper than a constructor call with keywords. A unit test checks these indexes and the
defaults against ``Packet._fields`` and ``Packet()``.
"""

from __future__ import annotations

from typing import Any, Final

_LAYERS: Final = 0
_LENGTH: Final = 1
_ERROR: Final = 2
_ETH_SRC: Final = 3
_ETH_DST: Final = 4
_ETHERTYPE: Final = 5
_VLANS: Final = 6
_MPLS_LABELS: Final = 7
_ARP_OP: Final = 8
_ARP_SENDER_HW: Final = 9
_ARP_SENDER_IP: Final = 10
_ARP_TARGET_HW: Final = 11
_ARP_TARGET_IP: Final = 12
_IP_VERSION: Final = 13
_IP_SRC: Final = 14
_IP_DST: Final = 15
_IP_PROTO: Final = 16
_TTL: Final = 17
_IP_ID: Final = 18
_IP_FLAGS: Final = 19
_FRAG_OFFSET: Final = 20
_IP_OPTIONS_LEN: Final = 21
_IP_HEADER_LEN: Final = 22
_IP_TOTAL_LEN: Final = 23
_FLOW_LABEL: Final = 24
_ICMP_TYPE: Final = 25
_ICMP_CODE: Final = 26
_ICMP_ID: Final = 27
_ICMP_SEQ: Final = 28
_ND_TARGET: Final = 29
_SRC_PORT: Final = 30
_DST_PORT: Final = 31
_TCP_FLAGS: Final = 32
_TCP_SEQ: Final = 33
_TCP_ACK: Final = 34
_TCP_WINDOW: Final = 35
_UDP_LEN: Final = 36
_SCTP_VTAG: Final = 37
_TUNNEL: Final = 38
_TUNNEL_ID: Final = 39
_GRE_PROTO: Final = 40
_APPLICATION: Final = 41
_PAYLOAD_LEN: Final = 42
_INNER: Final = 43
_ENCAPSULATED: Final = 44
_NFIELDS: Final = 45
# Packet's defaults, in field order (tests check this against Packet itself).
_TEMPLATE: Final[list[Any]] = [None] * _NFIELDS
_TEMPLATE[_LAYERS] = ()
_TEMPLATE[_LENGTH] = 0
_TEMPLATE[_VLANS] = ()
_TEMPLATE[_MPLS_LABELS] = ()
_TEMPLATE[_PAYLOAD_LEN] = 0
_TEMPLATE[_ENCAPSULATED] = False
