"""Capture types and which nodes they can run on (DESIGN.md §2.5); pure rules.

Shared by the analyzer, which refuses a capture that cannot run anywhere it points to (400),
and the agent, which resolves a capture without ``Type`` to the node's default: ``afpacket`` on
a kernel interface, ``ovssflow`` on an Open vSwitch bridge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CAPTURE_TYPES", "default_type", "supports", "unsupported_reason"]

#: Capture types this version runs.
CAPTURE_TYPES = ("afpacket", "pcap", "pcapsocket", "sflow", "ovssflow")
#: Node types that are not network interfaces a kernel socket can bind to.
_NOT_KERNEL = frozenset(("host", "netns", "ovsbridge", "ovsport", "container", "libvirt"))


def _is_kernel_interface(metadata: Mapping[str, Any]) -> bool:
    ifindex = metadata.get("IfIndex")
    return (
        isinstance(ifindex, int)
        and ifindex > 0
        and metadata.get("Type") not in _NOT_KERNEL
        and "Name" in metadata
    )


def default_type(metadata: Mapping[str, Any]) -> str | None:
    """The capture type used when a capture sets none: None when the node has no default."""
    if metadata.get("Type") == "ovsbridge":
        return "ovssflow"
    if _is_kernel_interface(metadata):
        return "afpacket"
    return None


def supports(capture_type: str, metadata: Mapping[str, Any]) -> bool:
    """Whether a node with this metadata can run a capture of this type."""
    if capture_type in ("afpacket", "pcap"):
        return _is_kernel_interface(metadata)
    if capture_type == "ovssflow":
        return metadata.get("Type") == "ovsbridge"
    if capture_type in ("sflow", "pcapsocket"):
        return bool(metadata.get("TID"))
    return False


def unsupported_reason(capture_type: str, metadata: Mapping[str, Any]) -> str | None:
    """None when a capture of ``capture_type`` ("" = default) can run on the node, else why."""
    node = f"{metadata.get('Type', '?')} node {metadata.get('Name', '?')!r}"
    if not capture_type:
        if default_type(metadata) is None:
            return f"no capture type applies to a {node} (give Type: sflow or pcapsocket)"
        return None
    if capture_type not in CAPTURE_TYPES:
        return f"capture type {capture_type!r} is not supported (known: {', '.join(CAPTURE_TYPES)})"
    if not supports(capture_type, metadata):
        return f"a {capture_type} capture cannot run on a {node}"
    return None
