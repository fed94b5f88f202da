"""The OVSDB probe's pure core: OVSDB row changes → what the graph should hold.

Theory of operation
-------------------
:class:`OvsdbModel` keeps the current rows of the Bridge, Port and Interface tables (and the
Open_vSwitch root row) as the monitor reports them, plus the reverse references the rows only
hold one way (port → bridge, interface → port, patch peers by name). Applying a batch of
:class:`~pyskydive.protocols.ovsdb.RowChange` returns the OVS UUIDs whose graph view may have
changed; :meth:`OvsdbModel.intent` then says, for one UUID, what the graph should show:

- ``ovsbridge`` nodes owned by the host; ``ovsport`` nodes owned by their bridge with a
  ``layer2`` edge bridge → port (as Skydive v0.28 does);
- interfaces with a ``layer2`` edge port → interface. Interfaces backed by a kernel netdev
  (``system``, ``internal``, ``tap``, DPDK, AF_XDP) are *merged* into the node netlink made for
  them (``netdev=True``): they carry only OVS metadata, and the netlink probe keeps their
  ownership (host or namespace). Patch, tunnel and other virtual interfaces have no netdev: they
  get a node of their own, owned by their bridge;
- a patch pair is linked once, ``layer2`` with ``Type: patch``, from the interface with the
  smaller name to the other.

The shell (:mod:`ovsdb`) diffs these intents against what it applied before. A column with an
unexpected type is ignored with one warning per (table, column); the row is kept, so the graph
never holds a half-applied row.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyskydive.protocols.ovsdb import RowChange, Uuid

__all__ = [
    "HOST",
    "NETDEV_TYPES",
    "TUNNEL_TYPES",
    "EdgeIntent",
    "Kind",
    "NodeIntent",
    "OvsdbModel",
]

log = logging.getLogger(__name__)

#: Parent key meaning "the host node" in :class:`EdgeIntent`.
HOST = ""

#: OVS interface types backed by a kernel network device (the netlink probe sees them).
NETDEV_TYPES = frozenset(
    {"", "system", "internal", "tap", "dpdk", "dpdkvhostuser", "dpdkvhostuserclient", "afxdp"}
)
#: OVS interface types that are tunnels (LocalIP/RemoteIP from their options).
TUNNEL_TYPES = frozenset(
    {"vxlan", "geneve", "gre", "ip6gre", "erspan", "ip6erspan", "stt", "lisp", "gtpu", "bareudp"}
)

_TABLES = ("Open_vSwitch", "Bridge", "Port", "Interface")


class Kind(enum.Enum):
    BRIDGE = "Bridge"
    PORT = "Port"
    INTERFACE = "Interface"


@dataclass(frozen=True, slots=True)
class EdgeIntent:
    """An edge into the node of an intent, from ``parent`` (an OVS UUID or :data:`HOST`)."""

    parent: str
    relation: str
    type: str | None = None

    def metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {"RelationType": self.relation}
        if self.type is not None:
            md["Type"] = self.type
        return md


@dataclass(frozen=True, slots=True)
class NodeIntent:
    """What the graph should show for one OVS object."""

    uuid: str
    kind: Kind
    name: str
    #: OVS metadata. For a merged interface: only the keys OVS owns (no Name, and Type only
    #: when OVS knows it better than netlink).
    metadata: dict[str, Any]
    #: Edges into this node (ownership of merged interfaces is netlink's, so absent).
    parents: tuple[EdgeIntent, ...] = ()
    #: Interface backed by a kernel netdev: merge into netlink's node of the same name.
    netdev: bool = False
    #: OVS interface type (``""`` for system interfaces).
    ovs_type: str = ""
    #: The bridge of an interface: its owner while no netlink node stands for it.
    bridge: str | None = None
    #: MAC address OVS reports (helps pick the netlink node among several of one name).
    mac: str | None = None


@dataclass
class _Tables:
    rows: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {t: {} for t in _TABLES}
    )
    port_bridge: dict[str, str] = field(default_factory=dict)
    iface_port: dict[str, str] = field(default_factory=dict)
    by_name: dict[str, set[str]] = field(default_factory=dict)  # interface name -> uuids
    peer_of: dict[str, set[str]] = field(default_factory=dict)  # peer name -> patch uuids


class OvsdbModel:
    """The monitored OVSDB tables and the graph view derived from them."""

    def __init__(self) -> None:
        self._t = _Tables()
        self._warned: set[tuple[str, str]] = set()

    # -- applying changes --------------------------------------------------------------------

    def reset(self, changes: Iterable[RowChange]) -> set[str]:
        """Replace the whole state with a fresh monitor reply; returns old and new UUIDs."""
        dirty = self.uuids()
        self._t = _Tables()
        return dirty | self.apply(changes)

    def apply(self, changes: Iterable[RowChange]) -> set[str]:
        """Apply row changes; return the UUIDs whose intent may have changed."""
        dirty: set[str] = set()
        for change in changes:
            rows = self._t.rows.get(change.table)
            if rows is None:
                self._warn(change.table, "*", "a table that was not monitored")
                continue
            before = rows.get(change.uuid)
            if change.new is None:
                rows.pop(change.uuid, None)
                after = None
            else:
                after = dict(before or {})
                after.update(change.new)
                rows[change.uuid] = after
            dirty.add(change.uuid)
            if change.table == "Bridge":
                self._relink(change.uuid, before, after, "ports", self._t.port_bridge, dirty)
                for port in self._refs("Bridge", before, "ports") | self._refs(
                    "Bridge", after, "ports"
                ):
                    dirty.update(self._refs("Port", self._t.rows["Port"].get(port), "interfaces"))
            elif change.table == "Port":
                self._relink(change.uuid, before, after, "interfaces", self._t.iface_port, dirty)
            elif change.table == "Interface":
                self._reindex(change.uuid, before, after, dirty)
        return dirty

    def _relink(
        self,
        uuid: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        column: str,
        back: dict[str, str],
        dirty: set[str],
    ) -> None:
        table = "Bridge" if column == "ports" else "Port"
        old = self._refs(table, before, column)
        new = self._refs(table, after, column)
        for child in old - new:
            if back.get(child) == uuid:
                del back[child]
        for child in new:
            back[child] = uuid
        dirty.update(old | new)

    def _reindex(
        self,
        uuid: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        dirty: set[str],
    ) -> None:
        for row, add in ((before, False), (after, True)):
            if row is None:
                continue
            name = self._str("Interface", row, "name")
            peer = self._map("Interface", row, "options").get("peer", "")
            for index, key in ((self._t.by_name, name), (self._t.peer_of, peer)):
                if not key:
                    continue
                if add:
                    index.setdefault(key, set()).add(uuid)
                else:
                    uuids = index.get(key)
                    if uuids is not None:
                        uuids.discard(uuid)
                        if not uuids:
                            del index[key]
            # Both ends of a patch pair show the edge: a change of one is a change of both.
            dirty.update(self._t.by_name.get(peer, ()))
            dirty.update(self._t.peer_of.get(name, ()))

    # -- reading ---------------------------------------------------------------------------

    def uuids(self) -> set[str]:
        return {u for t in ("Bridge", "Port", "Interface") for u in self._t.rows[t]}

    def kind(self, uuid: str) -> Kind | None:
        for kind in Kind:
            if uuid in self._t.rows[kind.value]:
                return kind
        return None

    def interfaces_named(self, name: str) -> set[str]:
        return set(self._t.by_name.get(name, ()))

    def netdev_names(self) -> set[str]:
        """Names of the interfaces that a netlink node may stand for."""
        return {
            name
            for name, uuids in self._t.by_name.items()
            if any(self._itype(self._t.rows["Interface"][u]) in NETDEV_TYPES for u in uuids)
        }

    def ordered(self, uuids: Iterable[str]) -> list[str]:
        """``uuids`` with bridges first, then ports, then interfaces (parents before children)."""
        rank = {Kind.BRIDGE: 0, Kind.PORT: 1, Kind.INTERFACE: 2}
        known = [(rank[k], u) for u in uuids if (k := self.kind(u)) is not None]
        return [u for _, u in sorted(known)]

    def intent(self, uuid: str) -> NodeIntent | None:
        """What the graph should show for ``uuid``; ``None`` when the row is gone."""
        rows = self._t.rows
        if uuid in rows["Bridge"]:
            return self._bridge(uuid, rows["Bridge"][uuid])
        if uuid in rows["Port"]:
            return self._port(uuid, rows["Port"][uuid])
        if uuid in rows["Interface"]:
            return self._interface(uuid, rows["Interface"][uuid])
        return None

    def _bridge(self, uuid: str, row: dict[str, Any]) -> NodeIntent:
        t = "Bridge"
        name = self._str(t, row, "name") or uuid
        ovs = _compact(
            {
                "DatapathType": self._str(t, row, "datapath_type"),
                "DatapathID": self._str(t, row, "datapath_id"),
                "FailMode": self._str(t, row, "fail_mode"),
                "Protocols": self._strs(t, row, "protocols"),
                "STP": self._bool(t, row, "stp_enable"),
                "OtherConfig": self._map(t, row, "other_config"),
            }
        )
        md = _compact(
            {
                "Name": name,
                "Type": "ovsbridge",
                "UUID": uuid,
                "ExtID": self._map(t, row, "external_ids"),
                "Ovs": ovs,
            }
        )
        return NodeIntent(uuid, Kind.BRIDGE, name, md, (EdgeIntent(HOST, "ownership"),))

    def _port(self, uuid: str, row: dict[str, Any]) -> NodeIntent:
        t = "Port"
        name = self._str(t, row, "name") or uuid
        tag = self._int(t, row, "tag")
        bond_mode = self._str(t, row, "bond_mode")
        lacp = self._str(t, row, "lacp")
        ovs = _compact(
            {
                "Tag": tag,
                "Trunks": self._ints(t, row, "trunks"),
                "VlanMode": self._str(t, row, "vlan_mode"),
                "BondMode": bond_mode,
                "LACP": lacp,
                "OtherConfig": self._map(t, row, "other_config"),
            }
        )
        md = _compact(
            {
                "Name": name,
                "Type": "ovsport",
                "UUID": uuid,
                "ExtID": self._map(t, row, "external_ids"),
                "Ovs": ovs,
                "BondMode": bond_mode,
                "LACP": lacp,
                "Vlans": [tag] if tag is not None else None,
            }
        )
        bridge = self._t.port_bridge.get(uuid)
        parents: tuple[EdgeIntent, ...] = ()
        if bridge is not None and bridge in self._t.rows["Bridge"]:
            parents = (EdgeIntent(bridge, "ownership"), EdgeIntent(bridge, "layer2"))
        return NodeIntent(uuid, Kind.PORT, name, md, parents)

    def _interface(self, uuid: str, row: dict[str, Any]) -> NodeIntent:
        t = "Interface"
        name = self._str(t, row, "name") or uuid
        itype = self._itype(row)
        options = self._map(t, row, "options")
        ofport = self._int(t, row, "ofport")
        mac = self._str(t, row, "mac_in_use") or None
        ovs = _compact(
            {
                "Type": itype,
                "Options": options,
                "OtherConfig": self._map(t, row, "other_config"),
                "Status": self._map(t, row, "status"),
                "Error": self._str(t, row, "error"),
                "AdminState": self._str(t, row, "admin_state"),
                "LinkState": self._str(t, row, "link_state"),
                "IfIndex": self._int(t, row, "ifindex"),
            }
        )
        netdev = itype in NETDEV_TYPES
        md: dict[str, Any] = {"UUID": uuid, "ExtID": self._map(t, row, "external_ids"), "Ovs": ovs}
        if ofport is not None:
            md["OfPort"] = ofport
        if itype not in ("", "system"):
            md["Type"] = itype
        if itype == "internal":
            md["Driver"] = "openvswitch"
        if itype in TUNNEL_TYPES:
            md["LocalIP"] = options.get("local_ip")
            md["RemoteIP"] = options.get("remote_ip")
        if not netdev:
            md["Name"] = name
            md["MAC"] = mac
            md["MTU"] = self._int(t, row, "mtu")
        md = _compact(md)
        parents: list[EdgeIntent] = []
        port = self._t.iface_port.get(uuid)
        bridge: str | None = None
        if port is not None and port in self._t.rows["Port"]:
            parents.append(EdgeIntent(port, "layer2"))
            bridge = self._t.port_bridge.get(port)
            if bridge is not None and bridge not in self._t.rows["Bridge"]:
                bridge = None
        if itype == "patch":
            peer = self._patch_peer(uuid, name, options.get("peer", ""))
            if peer is not None and self._str(t, self._t.rows[t][peer], "name") < name:
                parents.append(EdgeIntent(peer, "layer2", "patch"))
        return NodeIntent(
            uuid, Kind.INTERFACE, name, md, tuple(parents), netdev, itype, bridge, mac
        )

    def _patch_peer(self, uuid: str, name: str, peer_name: str) -> str | None:
        """The patch interface called ``peer_name`` that names us back as its peer."""
        for other in sorted(self._t.by_name.get(peer_name, ())):
            row = self._t.rows["Interface"].get(other)
            if (
                other != uuid
                and row is not None
                and self._itype(row) == "patch"
                and self._map("Interface", row, "options").get("peer") == name
            ):
                return other
        return None

    # -- typed column access -------------------------------------------------------------------

    def _warn(self, table: str, column: str, reason: str) -> None:
        if (table, column) not in self._warned:
            self._warned.add((table, column))
            log.warning("ovsdb: %s.%s: %s, ignored", table, column, reason)

    def _itype(self, row: dict[str, Any]) -> str:
        return self._str("Interface", row, "type")

    def _scalar(self, table: str, row: dict[str, Any], column: str, types: tuple[type, ...]) -> Any:
        value = row.get(column)
        if isinstance(value, list):  # an optional column: a set of zero or one element
            if len(value) > 1:
                self._warn(table, column, f"a set of {len(value)} values where one was expected")
                return None
            value = value[0] if value else None
        if value is None:
            return None
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            self._warn(table, column, f"a {type(value).__name__} value")
            return None
        return value

    def _str(self, table: str, row: dict[str, Any], column: str) -> str:
        value = self._scalar(table, row, column, (str,))
        return value if isinstance(value, str) else ""

    def _int(self, table: str, row: dict[str, Any], column: str) -> int | None:
        value = self._scalar(table, row, column, (int,))
        return value if isinstance(value, int) else None

    def _bool(self, table: str, row: dict[str, Any], column: str) -> bool | None:
        value = self._scalar(table, row, column, (bool,))
        return value if isinstance(value, bool) else None

    def _set(self, table: str, row: dict[str, Any] | None, column: str) -> list[Any]:
        if row is None:
            return []
        value = row.get(column)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        if isinstance(value, dict):
            self._warn(table, column, "a map where a set was expected")
            return []
        return [value]  # a set of one element may be sent as the bare atom

    def _strs(self, table: str, row: dict[str, Any], column: str) -> list[str]:
        values = self._set(table, row, column)
        if not all(isinstance(v, str) for v in values):
            self._warn(table, column, "non-string members")
        return sorted(v for v in values if isinstance(v, str))

    def _ints(self, table: str, row: dict[str, Any], column: str) -> list[int]:
        values = self._set(table, row, column)
        good = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        if len(good) != len(values):
            self._warn(table, column, "non-integer members")
        return sorted(good)

    def _refs(self, table: str, row: dict[str, Any] | None, column: str) -> set[str]:
        values = self._set(table, row, column)
        refs: set[str] = {v for v in values if isinstance(v, Uuid)}
        if len(refs) != len(values):
            self._warn(table, column, "members that are not row references")
        return refs

    def _map(self, table: str, row: dict[str, Any], column: str) -> dict[str, str]:
        value = row.get(column)
        if value is None:
            return {}
        if isinstance(value, list) and not value:
            return {}
        if not isinstance(value, dict):
            self._warn(table, column, f"a {type(value).__name__} where a map was expected")
            return {}
        return {str(k): str(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}


def _compact(md: dict[str, Any]) -> dict[str, Any]:
    """Drop empty values: an unset OVS column shows as an absent key, not ``""`` or ``{}``."""
    return {k: v for k, v in md.items() if v is not None and v != "" and v != {} and v != []}
