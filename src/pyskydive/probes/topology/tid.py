"""Stable identities (``Metadata.TID``): a UUIDv5 chain down the ownership parents.

host: from its name; netns: host TID + path; OVS objects: host TID + OVS UUID; any other node:
parent TID + Name + Type (DESIGN.md §2.1). The same object gets the same TID after an agent
restart, which node IDs do not promise.
"""

from __future__ import annotations

import uuid

__all__ = ["child_tid", "host_tid", "netns_tid", "ovs_tid"]

_ROOT = uuid.UUID("6f6e1a14-5c2e-5b7a-9a35-736b79646976")  # fixed namespace for pyskydive TIDs


def host_tid(host_name: str) -> str:
    return str(uuid.uuid5(_ROOT, host_name))


def netns_tid(parent_tid: str, path: str) -> str:
    return str(uuid.uuid5(uuid.UUID(parent_tid), path))


def ovs_tid(host_tid_: str, ovs_uuid: str) -> str:
    return str(uuid.uuid5(uuid.UUID(host_tid_), ovs_uuid))


def child_tid(parent_tid: str, name: str, type_: str) -> str:
    return str(uuid.uuid5(uuid.UUID(parent_tid), name + type_))
