"""Flow keys and tracking identifiers.

Theory of operation
-------------------
A packet's *endpoints* are ``(l2, l3, l4)`` triples: ``fwd`` for its source, ``rev`` for its
destination. ``l2`` is the MAC address in LayerKeyMode L2 and ``None`` in L3 (except for
packets with no IP layer, ARP for instance, where the MACs are all there is). The table key
orders the two triples (smaller first), so both directions of a conversation hit one entry;
the flow remembers its A triple (the first sender's) to tell AB from BA.

Identifiers are 64-bit BLAKE2b digests in hex, computed once per flow, never per packet:

* ``L3TrackingID`` hashes the network endpoints and Network.ID (VNI/GRE key, 0 on inner
  flows), the ICMP id, the transport endpoints and the layers path with the Dot1Q layers and a
  leading ``Ethernet/`` removed: the same for a flow seen inside VXLAN/GRE, behind VLAN tags or
  plain.
* ``TrackingID`` adds the L2 addresses (LayerKeyMode L2, or no IP layer) and the layers path
  without Dot1Q: the same for the same flow at every capture point.
* ``UUID`` adds the flow's start time, the capture node's TID, the capture id and the parent
  flow's UUID: unique per capture point and per flow lifetime.

Endpoints are hashed *sorted*, not as A/B, so two capture points that saw different first
packets still agree. This follows Skydive ``flow/flow.go`` ``(*Flow).UpdateUUID`` (one running
64-bit hash: network, ICMP, transport, path minus Dot1Q and Ethernet → L3TrackingID; + link if L2
mode or no network, + path minus Dot1Q → TrackingID; + start, NodeTID, key → UUID), with BLAKE2b
in place of murmur3, so the values differ from Skydive's but the equalities are the same.
Also as in Skydive's ``(*Packet).TransportFlow``, the outer flow of a VXLAN/Geneve packet is
keyed without the UDP source port (an entropy hash of the inner flow, different each way).
"""

from __future__ import annotations

from enum import StrEnum
from hashlib import blake2b

__all__ = ["LayerKeyMode", "flow_uuid", "l3_tracking_id", "tracking_id"]


class LayerKeyMode(StrEnum):
    L2 = "L2"
    L3 = "L3"


def _h(*parts: object) -> str:
    return blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).hexdigest()


def _sorted(a: object, b: object) -> tuple[str, str]:
    sa, sb = str(a), str(b)
    return (sa, sb) if sa <= sb else (sb, sa)


def _path(layers_path: str) -> str:
    return layers_path.replace("Dot1Q/", "").replace("/Dot1Q", "")


def l3_tracking_id(
    layers_path: str,
    ips: tuple[str | None, str | None],
    network_id: int | None,
    ports: tuple[int | None, int | None],
    icmp_id: int | None,
) -> str:
    """Same value for the same IP conversation whatever its L2 framing or encapsulation."""
    path = _path(layers_path).removeprefix("Ethernet/")
    return _h("L3", path, _sorted(*ips), network_id or 0, _sorted(*ports), icmp_id)


def tracking_id(layers_path: str, l3_id: str, link: tuple[str | None, str | None]) -> str:
    """Same value for the same flow at every capture point (see the module docstring)."""
    return _h("T", l3_id, _sorted(*link), _path(layers_path))


def flow_uuid(tracking: str, start_ms: int, node_tid: str, capture_id: str, parent: str) -> str:
    """Unique per (capture node, capture, parent flow, flow, start)."""
    return _h("U", tracking, start_ms, node_tid, capture_id, parent)
