"""rtnl_decode against netlink_msg: the same records from raw bytes, and only ProtocolError.

The reference is what the probe did before: pyroute2's ``MarshalRtnl.parse`` then
:mod:`netlink_msg`. Every golden message (``tests/data/netlink``), variants of them built here
for the edge cases, and a live dump of this host's root namespace must decode to equal
records; truncated and corrupted ones may only raise ``ProtocolError``.

``python tests/unit/probes/test_rtnl_decode.py`` prints a micro-benchmark (no test times).
"""

from __future__ import annotations

import ast
import dataclasses
import errno
import json
import random
import socket
import struct
import timeit
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pyskydive.errors import ProtocolError
from pyskydive.probes.topology import netlink_metadata as names
from pyskydive.probes.topology import netlink_msg as nlm
from pyskydive.probes.topology import rtnl_decode as rd
from pyskydive.probes.topology.rtnl_decode import Done, Error, Skip, decode, decode_with_seq

DATA = Path(__file__).resolve().parents[2] / "data" / "netlink"
CASES = {path.stem: json.loads(path.read_text()) for path in sorted(DATA.glob("*.json"))}
BY_TYPE: dict[int, Callable[[Any], Any]] = {
    16: nlm.link_from_msg,
    17: nlm.link_from_msg,
    20: nlm.addr_from_msg,
    21: nlm.addr_from_msg,
    24: nlm.route_from_msg,
    25: nlm.route_from_msg,
    28: nlm.neigh_from_msg,
    29: nlm.neigh_from_msg,
}
FIXED = {"link": 16, "addr": 8, "route": 12, "neigh": 12}  # ifinfomsg, ifaddrmsg, rtmsg, ndmsg
RECORDS = (nlm.Link, nlm.Addr, nlm.Route, nlm.Neighbor, Skip, Done, Error)


def raw(name: str) -> bytes:
    return bytes.fromhex(CASES[name]["hex"])


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def comparable(record: Any) -> Any:
    """A record as both sides can give it: a Skip's reason is ours alone."""
    if isinstance(record, Skip):
        return ("Skip", record.msg_type)
    return jsonable(record)


def reference(data: bytes) -> list[Any]:
    """pyroute2 + netlink_msg on a datagram, in rtnl_decode's terms."""
    out: list[Any] = []
    for msg in MarshalRtnl().parse(data):
        header = msg["header"]
        mtype, seq = header["type"], header["sequence_number"]
        if mtype in BY_TYPE:
            record = BY_TYPE[mtype](msg)
            out.append(record if record is not None else Skip(mtype, ""))
        elif mtype == rd.NLMSG_DONE:
            out.append(Done(seq))
        elif mtype == rd.NLMSG_ERROR:
            out.append(Error(seq, abs(msg["error"])))
        else:
            out.append(Skip(mtype, ""))
    return out


def assert_agree(data: bytes) -> list[Any]:
    """Decode ``data`` both ways, check the records are equal, return ours."""
    ours = list(decode(data))
    assert [comparable(r) for r in ours] == [comparable(r) for r in reference(data)]
    return ours


def one(data: bytes) -> Any:
    """The one record of a one-message datagram (typed loosely, for the tests)."""
    (record,) = decode(data)
    return record


def valid_or_protocol_error(data: bytes) -> int:
    """Decode; only ProtocolError may escape. Return how many records came out."""
    count = 0
    try:
        for record in decode(data):
            assert isinstance(record, RECORDS)
            count += 1
    except ProtocolError as exc:
        assert exc.offset is not None and 0 <= exc.offset <= len(data)
    return count


# -- building messages ---------------------------------------------------------------------


def nla(atype: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), atype) + payload
    return data + bytes(-len(data) % 4)


def attributes(data: bytes, offset: int, end: int) -> list[tuple[int, bytes]]:
    out = []
    while offset + 4 <= end:
        length, atype = struct.unpack_from("=HH", data, offset)
        out.append((atype, data[offset + 4 : offset + length]))
        offset += (length + 3) & ~3
    return out


def message(head: bytes, attrs: Iterable[tuple[int, bytes]]) -> bytes:
    """nlmsghdr + fixed header (``head``) + attributes, nlmsg_len set."""
    body = head + b"".join(nla(t, p) for t, p in attrs)
    return struct.pack("=I", len(body)) + body[4:]


def edit(
    name: str,
    *,
    drop: Iterable[int] = (),
    replace: dict[int, bytes] | None = None,
    add: Iterable[tuple[int, bytes]] = (),
    first: Iterable[tuple[int, bytes]] = (),
    head: Callable[[bytearray], None] | None = None,
) -> bytes:
    """Golden message ``name`` with top-level attributes dropped/replaced/added."""
    data = raw(name)
    size = 16 + FIXED[CASES[name]["kind"]]
    fixed = bytearray(data[:size])
    if head is not None:
        head(fixed)
    replace = replace or {}
    attrs = [
        (t, replace.get(t & 0x3FFF, p))
        for t, p in attributes(data, size, len(data))
        if t & 0x3FFF not in drop
    ]
    return message(bytes(fixed), [*first, *attrs, *add])


def header(mtype: int, payload: bytes = b"", seq: int = 7, flags: int = 2) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 4242) + payload


def linkinfo(kind: bytes, data: bytes | None = None, *rest: tuple[int, bytes]) -> bytes:
    attrs = [(1, kind)] + ([(2, data)] if data is not None else []) + list(rest)
    return b"".join(nla(t, p) for t, p in attrs)


# -- golden files --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_message_gives_the_netlink_msg_record(name: str) -> None:
    data = raw(name)
    (ours,) = assert_agree(data)
    expected = CASES[name]["expected"]
    if expected is None:
        assert isinstance(ours, Skip) and ours.msg_type == data[4] and ours.reason
    else:
        assert jsonable(ours) == expected
        assert type(ours).__name__.lower()[:4] == CASES[name]["kind"][:4]


def test_one_datagram_of_every_golden_message() -> None:
    data = b"".join(raw(n) + bytes(-len(raw(n)) % 4) for n in CASES)
    data += header(rd.NLMSG_DONE, struct.pack("=i", 0), seq=99)
    ours = assert_agree(data)
    assert len(ours) == len(CASES) + 1 and ours[-1] == Done(99)
    seqs = [seq for seq, _ in decode_with_seq(data)]
    assert seqs == [struct.unpack_from("=I", raw(n), 8)[0] for n in CASES] + [99]
    assert [r for _, r in decode_with_seq(data)] == ours


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_any_buffer(kind: Callable[[bytes], Any]) -> None:
    assert list(decode(kind(raw("link_veth")))) == list(decode(raw("link_veth")))


def test_metrics_are_netlink_metadata_counters() -> None:
    assert list(names.STATS_TO_METRIC) == [n for n, _ in ifinfmsg.ifstats64.fields]
    assert list(names.STATS_TO_METRIC) == [n for n, _ in ifinfmsg.ifstats.fields]
    counters = list(range(1, 24))
    data = edit("link_veth", replace={23: struct.pack("=23Q", *counters) + bytes(16)})
    (link,) = assert_agree(data)
    assert link.metrics == names.metrics_from_stats(
        dict(zip(names.STATS_TO_METRIC, counters, strict=True))
    )


def test_attribute_numbers_are_pyroute2s() -> None:
    def codes(nla_map: Any) -> dict[str, int]:
        return {e[-2]: (e[0] if len(e) == 3 else i) for i, e in enumerate(nla_map)}

    plugins = ifinfmsg.ifinfo.data_map
    tables = [
        (ifinfmsg.nla_map, "IFLA_"),
        (ifinfmsg.ifinfo.nla_map, "IFLA_INFO_"),
        (plugins["vlan"].nla_map, "IFLA_VLAN_"),
        (plugins["bond"].nla_map, "IFLA_BOND_MODE"),
        (plugins["vxlan"].nla_map, "IFLA_VXLAN_"),
        (plugins["geneve"].nla_map, "IFLA_GENEVE_"),
        (plugins["tun"].nla_map, "IFLA_TUN_"),
        (ifinfmsg.ifinfo.bond_slave_data.nla_map, "IFLA_BOND_SLAVE_"),
        (ifaddrmsg.nla_map, "IFA_"),
        (rtmsg.nla_map, "RTA_"),
        (ndmsg.nla_map, "NDA_"),
    ]
    checked = set()
    for nla_map, prefix in tables:
        for name, code in codes(nla_map).items():
            ours = getattr(rd, name, None)
            if name.startswith(prefix) and isinstance(ours, int):
                assert ours == code, name
                checked.add(name)
    assert checked == {n for n in dir(rd) if n.startswith(("IFLA_", "IFA_", "RTA_", "NDA_"))}


# -- edge cases, each checked against netlink_msg ------------------------------------------


def test_bridge_module_notices_keep_their_family() -> None:
    notice, left = assert_agree(raw("link_bridge_port_notice") + raw("link_bridge_port_left"))
    assert notice.family == left.family == rd.AF_BRIDGE and left.deleted
    assert notice.metrics is None


@pytest.mark.parametrize(
    ("link", "peer"),
    [(None, 50), (struct.pack("=I", 0), None), (struct.pack("=I", 7), 7), (b"\x07", None)],
)
def test_veth_peer_index(link: bytes | None, peer: int | None) -> None:
    base = "link_veth_same_index"
    data = edit(base, drop=[5]) if link is None else edit(base, replace={5: link})
    # A 1-byte IFLA_LINK is undecodable here; pyroute2 reads its padding too (7).
    record = one(data) if link == b"\x07" else assert_agree(data)[0]
    assert record.peer_index == peer and record.parent_index is None
    assert record.metadata.get("PeerIfIndex") == peer


def test_vxlan_parent_from_its_info_data() -> None:
    (vxlan,) = assert_agree(raw("link_vxlan"))
    assert vxlan.parent_index == 3 and 5 not in dict(attributes(raw("link_vxlan"), 32, 1708))
    (own,) = assert_agree(edit("link_vxlan", add=[(5, struct.pack("=I", 28))]))
    assert own.parent_index == 28
    (self_,) = assert_agree(edit("link_vxlan", add=[(5, struct.pack("=I", vxlan.index))]))
    assert self_.parent_index is None  # IFLA_LINK == own index: no parent (VXLAN_LINK unread)


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        (b"vlan\0", nla(1, struct.pack("=H", 42)), {"Vlan": 42}),
        (b"bond\0", nla(1, b"\x04"), {"BondMode": "802.3ad"}),
        (b"bond\0", nla(1, b"\x09"), {"BondMode": "unknown"}),
        (b"vxlan\0", nla(1, struct.pack("=I", 7)) + nla(3, struct.pack("=I", 9)), {"VNI": 7}),
        (b"geneve\0", nla(1, struct.pack("=I", 8)), {"VNI": 8}),
        (b"tun\0", nla(3, b"\x02"), {"TunMode": "tap"}),
        (b"tun\0", nla(3, b"\x05"), {}),
        (b"tun\0", nla(3, b""), {}),  # undecodable: skipped
        (b"\0macvlan\0\0", nla(1, struct.pack("=I", 4)), {"Type": "macvlan"}),
        (b"", None, {"Type": "device"}),
        (b"\xff\xfe", None, {"Type": "device"}),  # not UTF-8
    ],
)
def test_kind_metadata(kind: bytes, data: bytes | None, expected: dict[str, Any]) -> None:
    (link,) = assert_agree(edit("link_dummy", replace={18: linkinfo(kind, data)}))
    assert {k: link.metadata.get(k) for k in expected} == expected


def test_info_data_before_its_kind_is_not_read() -> None:
    info = nla(2, nla(1, struct.pack("=H", 42))) + nla(1, b"vlan\0")
    (link,) = assert_agree(edit("link_dummy", replace={18: info}))
    assert link.metadata["Type"] == "vlan" and "Vlan" not in link.metadata


@pytest.mark.parametrize(
    "slave",
    [
        nla(4, b"bond\0") + nla(5, nla(1, b"\x01") + nla(2, b"\x07") + nla(5, b"\x03\x00")),
        nla(4, b"bond\0"),  # no slave data: zeros
        nla(5, nla(1, b"\x01")) + nla(4, b"bond\0"),  # data before the slave kind
        nla(4, b"bridge\0") + nla(5, nla(1, b"\x01")),  # not a bond port
    ],
)
@pytest.mark.parametrize("kind", [b"bond\0", b"veth\0"])
def test_bond_slave(slave: bytes, kind: bytes) -> None:
    (link,) = assert_agree(edit("link_bond_slave", replace={18: nla(1, kind) + slave}))
    assert ("BondSlave" in link.metadata) == (b"bond" in slave)


def test_link_attribute_decoding_rules() -> None:
    # The first of two attributes counts; flag bits are masked; NULs stripped at both ends.
    (link,) = assert_agree(
        edit(
            "link_veth",
            replace={3: b"\0\0nlrec-x\0"},
            first=[(4 | 0x4000, struct.pack("=I", 9000))],
            add=[(4, struct.pack("=I", 1280))],
        )
    )
    assert link.name == "nlrec-x" and link.metadata["MTU"] == 9000
    # A longer IFLA_ADDRESS (infiniband) is cut to 6 bytes, as pyroute2 does.
    ib = edit(
        "link_veth",
        replace={1: bytes(range(20))},
        head=lambda h: struct.pack_into("=H", h, 18, 32),
    )
    (link,) = assert_agree(ib)
    assert link.metadata["MAC"] == "00:01:02:03:04:05"
    # 32-bit IFLA_STATS when there is no IFLA_STATS64.
    (link,) = assert_agree(
        edit("link_veth", drop=[23], replace={7: struct.pack("=23I", *range(23))})
    )
    assert link.metrics is not None and link.metrics["TxPackets"] == 1
    # Nested flag on IFLA_LINKINFO.
    data = raw("link_vxlan")
    info = dict((t & 0x3FFF, p) for t, p in attributes(data, 32, len(data)))[18]
    (link,) = assert_agree(edit("link_vxlan", drop=[18], add=[(18 | 0x8000, info)]))
    assert link.metadata["VNI"] == 42


@pytest.mark.parametrize(
    ("attr", "payload"),
    [
        (16, b"\xff"),  # IFLA_OPERSTATE 255: no such state, and we don't read it
        (4, b""),  # IFLA_MTU without its value
        (10, b"\x01\x00"),  # IFLA_MASTER too short
        (37, b""),  # IFLA_LINK_NETNSID too short
        (1, b"\x02\x00"),  # IFLA_ADDRESS too short
    ],
)
def test_undecodable_optional_attributes_are_skipped(attr: int, payload: bytes) -> None:
    link = one(edit("link_veth_netnsid", replace={attr: payload}))
    golden = one(raw("link_veth_netnsid"))
    differs = {k for k in golden.metadata if link.metadata.get(k) != golden.metadata[k]}
    assert differs <= {"MTU", "MasterIndex", "LinkNetNsID", "MAC"}
    if attr == 16:
        assert_agree(edit("link_veth_netnsid", replace={attr: payload}))
        assert link == golden


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({3: b"nlrec-\xff"}, "IFLA_IFNAME"),
        ({3: b"\0\0"}, "IFLA_IFNAME"),
    ],
)
def test_link_without_a_name(change: dict[int, bytes], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        list(decode(edit("link_veth", replace=change)))
    with pytest.raises(ProtocolError, match=match):
        reference(edit("link_veth", replace=change))
    with pytest.raises(ProtocolError, match="IFLA_IFNAME"):
        list(decode(edit("link_veth", drop=[3])))


@pytest.mark.parametrize("index", [0, -3])
def test_link_without_an_index(index: int) -> None:
    data = edit("link_veth", head=lambda h: struct.pack_into("=i", h, 20, index))
    with pytest.raises(ProtocolError, match="index") as exc:
        list(decode(data))
    assert exc.value.offset == 0
    with pytest.raises(ProtocolError, match="index"):
        reference(data)


def test_ipv6_link_settings_are_skipped() -> None:
    data = edit("link_veth", head=lambda h: h.__setitem__(16, 10))
    skip = one(data)
    assert skip == Skip(16, skip.reason) and "AF_INET6" in skip.reason


@pytest.mark.parametrize(
    ("local", "address", "cidr"),
    [
        (None, bytes([10, 1, 2, 3]), "10.1.2.3/24"),
        (bytes([10, 1, 2, 4]), bytes([10, 1, 2, 3]), "10.1.2.4/24"),
    ],
)
def test_addr_local_or_address(local: bytes | None, address: bytes, cidr: str) -> None:
    attrs = [(1, address)] + ([(2, local)] if local is not None else [])
    head = raw("addr_v4")[:24]
    (addr,) = assert_agree(message(head, attrs))
    assert addr.cidr == cidr


@pytest.mark.parametrize(
    "attrs",
    [
        [],
        [(2, bytes(5))],
        [(2, bytes(16))],  # an IPv6 address in an AF_INET message
        [(1, b"\x0a\x00")],
    ],
)
def test_bad_addresses(attrs: list[tuple[int, bytes]]) -> None:
    data = message(raw("addr_v4")[:24], attrs)
    with pytest.raises(ProtocolError):
        list(decode(data))
    with pytest.raises(ProtocolError):
        reference(data)


def test_addr_of_another_family_is_a_protocol_error() -> None:
    data = edit("addr_v4", head=lambda h: h.__setitem__(16, 45))  # AF_MCTP
    with pytest.raises(ProtocolError, match="family 45"):
        list(decode(data))
    with pytest.raises(ProtocolError, match="family 45"):
        reference(data)


def _route_head(family: int, table: int = 254, flags: int = 0, dst_len: int = 24) -> bytes:
    return header(24, struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, table, 3, 0, 1, flags))


@pytest.mark.parametrize(
    ("family", "attrs", "prefix", "hops"),
    [
        (2, [(1, bytes([10, 9, 0, 0])), (4, struct.pack("=I", 3))], "10.9.0.0/24", [(3, None)]),
        (  # a longer RTA_DST is cut to the family's size; RTA_OIF is unsigned
            2,
            [(1, bytes([10, 9, 0, 0, 1])), (4, struct.pack("=i", -1))],
            "10.9.0.0/24",
            [(0xFFFFFFFF, None)],
        ),
        (2, [(4, struct.pack("=I", 0))], "0.0.0.0/0", []),
        (10, [(5, bytes(15) + b"\1"), (4, struct.pack("=I", 2))], "::/0", [(2, "::1")]),
        (  # IPv4 via an IPv6 gateway (RTA_VIA), and a too-long RTA_GATEWAY cut to 4
            2,
            [(18, struct.pack("=H", 10) + bytes(15) + b"\2"), (4, struct.pack("=I", 2))],
            "0.0.0.0/0",
            [(2, "::2")],
        ),
        (
            2,
            [(5, bytes([1, 2, 3, 4, 5, 6, 7, 8])), (4, struct.pack("=I", 2))],
            None,
            [(2, "1.2.3.4")],
        ),
        (2, [(5, b""), (18, struct.pack("=H", 2) + bytes(4)), (4, b"\2\0\0\0")], None, [(2, None)]),
        (2, [(18, struct.pack("=H", 2)), (4, b"\2\0\0\0")], None, [(2, None)]),
        (2, [(9, b""), (4, struct.pack("=I", 5))], None, [(5, None)]),  # empty multipath
        (
            2,
            [
                (9, struct.pack("=HBBi", 16, 0, 0, 3) + nla(5, bytes([10, 0, 0, 1]))),
                (6, struct.pack("=I", 20)),
            ],
            None,
            [(3, "10.0.0.1")],
        ),
    ],
)
def test_routes(
    family: int, attrs: list[tuple[int, bytes]], prefix: str | None, hops: list[Any]
) -> None:
    (route,) = assert_agree(message(_route_head(family), attrs))
    if prefix is not None:
        assert route.prefix == prefix
    assert [(h["IfIndex"], h.get("IP")) for h in route.nexthops] == hops


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (_route_head(2, table=255), "local"),
        (_route_head(2, flags=0x200), "cloned"),
        (_route_head(128), "family 128"),  # RTNL_FAMILY_IPMR
    ],
)
def test_skipped_routes(head: bytes, why: str) -> None:
    (skip,) = assert_agree(message(head, [(4, struct.pack("=I", 3))]))
    assert isinstance(skip, Skip) and why in skip.reason
    (local,) = assert_agree(message(_route_head(2), [(15, struct.pack("=I", 255))]))
    assert isinstance(local, Skip)  # RTA_TABLE wins over rtm_table


@pytest.mark.parametrize("size", [0, 3])
def test_rta_dst_too_short_raises(size: int) -> None:
    # netlink_msg would take pyroute2's raw attribute (header included) for an address.
    data = message(_route_head(2), [(1, bytes(size)), (4, b"\2\0\0\0")])
    with pytest.raises(ProtocolError, match="RTA_DST") as exc:
        list(decode(data))
    assert exc.value.offset == 28


def test_rta_via_of_the_wrong_size_raises() -> None:
    data = message(_route_head(2), [(18, struct.pack("=H", 2) + bytes(8)), (4, b"\2\0\0\0")])
    with pytest.raises(ProtocolError, match="RTA_VIA"):
        list(decode(data))


@pytest.mark.parametrize(
    ("lladdr", "mac"),
    [
        (bytes([2, 0, 0, 0, 0, 0xAB]), "02:00:00:00:00:ab"),
        (bytes([10, 0, 0, 1]), "10.0.0.1"),  # NBMA tunnel: an IPv4 "link-layer" address
        (bytes(10) + b"\xff\xff" + bytes([1, 2, 3, 4]), "::ffff:1.2.3.4"),
        (bytes(12) + bytes([1, 2, 3, 4]), "::1.2.3.4"),
        (bytes(15) + b"\x01", "::1"),
        (bytes(range(1, 21)), ":".join(f"{i:02x}" for i in range(1, 21))),  # infiniband
        (b"", ""),
    ],
)
def test_neighbour_lladdr(lladdr: bytes, mac: str) -> None:
    (neigh,) = assert_agree(edit("neigh_v4_permanent", replace={2: lladdr}))
    assert neigh.mac == mac and neigh.deleted == (mac == "")


@pytest.mark.parametrize(
    ("dst", "ip"),
    [(bytes([10, 0, 0, 9]), "10.0.0.9"), (bytes(5), ""), (bytes(15) + b"\x05", "::5")],
)
def test_neighbour_dst(dst: bytes, ip: str) -> None:
    (neigh,) = assert_agree(edit("neigh_v4_permanent", replace={1: dst}))
    assert neigh.ip == ip


@pytest.mark.parametrize(
    ("state", "flags", "skipped"),
    [(0x40, 0, True), (0x40, 0x08, True), (0x80, 0x08, True), (0x02, 0x80, False), (0, 0, False)],
)
def test_neighbour_states(state: int, flags: int, skipped: bool) -> None:
    def set_head(h: bytearray) -> None:
        struct.pack_into("=HB", h, 24, state, flags)

    (neigh,) = assert_agree(edit("neigh_loopback", head=set_head))
    assert isinstance(neigh, Skip) == skipped


# -- other messages ------------------------------------------------------------------------


def test_done_error_and_others() -> None:
    data = (
        header(rd.NLMSG_DONE, struct.pack("=i", 0), seq=5)
        + header(rd.NLMSG_DONE, struct.pack("=i", -errno.EINTR), seq=6)
        + header(rd.NLMSG_DONE, seq=7)
        + header(rd.NLMSG_ERROR, struct.pack("=i", 0) + header(18), seq=8)
        + header(rd.NLMSG_ERROR, struct.pack("=i", -errno.EPERM) + header(18), seq=9)
        + header(88, struct.pack("=BxxxI", 0, 0), seq=0)  # RTM_NEWNSID
        + header(rd.NLMSG_NOOP, seq=0)
    )
    assert list(decode_with_seq(data)) == [
        (5, Done(5)),
        (6, Done(6, errno.EINTR)),
        (7, Done(7)),
        (8, Error(8, 0)),
        (9, Error(9, errno.EPERM)),
        (0, Skip(88, "RTM_NEWNSID: not translated")),
        (0, Skip(1, "NLMSG_NOOP: not translated")),
    ]
    with pytest.raises(ProtocolError, match="NLMSG_ERROR") as exc:
        list(decode(raw("addr_v4") + header(rd.NLMSG_ERROR, b"\0\0")))
    assert exc.value.offset == len(raw("addr_v4"))


# -- malformed input -----------------------------------------------------------------------


def _offset_of_attr(data: bytes | bytearray, start: int, atype: int) -> int:
    offset = start
    while struct.unpack_from("=H", data, offset + 2)[0] & 0x3FFF != atype:
        offset += (struct.unpack_from("=H", data, offset)[0] + 3) & ~3
    return offset


@pytest.mark.parametrize(
    ("mangle", "where", "match"),
    [
        (lambda d: d[:10], 0, "nlmsghdr"),
        (lambda d: struct.pack("=I", 12) + d[4:], 0, "nlmsg_len"),
        (lambda d: struct.pack("=I", len(d) + 4) + d[4:], 0, "nlmsg_len"),
        (lambda d: struct.pack("=I", 24) + d[4:24], 0, "ifinfomsg"),
        (lambda d: d + bytes(8), len(raw("link_veth")), "nlmsghdr"),
    ],
)
def test_broken_messages(mangle: Callable[[bytes], bytes], where: int, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as exc:
        list(decode(mangle(raw("link_veth"))))
    assert exc.value.offset == where


@pytest.mark.parametrize("length", [0, 3, 2000])
def test_broken_attribute(length: int) -> None:
    data = bytearray(raw("link_veth"))
    at = _offset_of_attr(data, 32, 4)  # IFLA_MTU
    struct.pack_into("=H", data, at, length)
    with pytest.raises(ProtocolError, match="nla_len") as exc:
        list(decode(bytes(data)))
    assert exc.value.offset == at


def test_broken_nested_attribute() -> None:
    data = bytearray(raw("link_vxlan"))
    info = _offset_of_attr(data, 32, 18)  # IFLA_LINKINFO
    struct.pack_into("=H", data, info + 4, 1000)  # its IFLA_INFO_KIND, now too long
    with pytest.raises(ProtocolError) as exc:
        list(decode(bytes(data)))
    assert exc.value.offset == info + 4


def test_broken_multipath() -> None:
    hop = struct.pack("=HBBi", 40, 0, 0, 3)  # rtnh_len beyond the attribute
    with pytest.raises(ProtocolError, match="rtnh_len"):
        list(decode(message(_route_head(2), [(9, hop)])))
    with pytest.raises(ProtocolError, match="rtnexthop"):
        list(decode(message(_route_head(2), [(9, hop[:4])])))


def test_the_messages_before_a_bad_one_are_yielded() -> None:
    bad = edit("link_veth", drop=[3])
    data = raw("addr_v4") + raw("route_default_v4") + bad + raw("neigh_v4_permanent")
    out: list[Any] = []
    with pytest.raises(ProtocolError, match="IFLA_IFNAME") as exc:
        out.extend(decode(data))
    assert exc.value.offset == len(raw("addr_v4")) + len(raw("route_default_v4"))
    assert [type(r) for r in out] == [nlm.Addr, nlm.Route]


def test_not_strict_skips_a_bad_message_and_goes_on() -> None:
    bad = edit("link_veth", drop=[3])
    done = header(rd.NLMSG_DONE, struct.pack("=i", 0), seq=3)
    out: list[Any] = list(
        decode(raw("addr_v4") + bad + raw("neigh_v4_permanent") + done, strict=False)
    )
    assert [type(r) for r in out] == [nlm.Addr, Skip, nlm.Neighbor, Done]
    assert out[1].msg_type == 16 and out[1].reason.startswith("malformed: ")
    with pytest.raises(ProtocolError, match="nlmsghdr"):
        list(decode(raw("addr_v4") + bytes(5), strict=False))


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_truncation(name: str) -> None:
    data = raw(name)
    for size in range(1, len(data)):
        with pytest.raises(ProtocolError) as exc:
            list(decode(data[:size]))
        assert exc.value.offset == 0
    # Cut, with nlmsg_len fixed to match: a record (cut at an attribute's end) or an error.
    records = 0
    for size in range(16, len(data)):
        records += valid_or_protocol_error(struct.pack("=I", size) + data[4:size])
    assert records >= 1 or len(attributes(data, 16 + FIXED[CASES[name]["kind"]], len(data))) < 2


@pytest.mark.parametrize("name", sorted(CASES))
def test_random_corruption(name: str) -> None:
    data = raw(name)
    rng = random.Random(f"rtnl_decode {name}")
    records = 0
    for _ in range(300):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        records += valid_or_protocol_error(bytes(corrupt))
    assert records > 0


def test_random_garbage() -> None:
    rng = random.Random("rtnl_decode garbage")
    for _ in range(3000):
        size = rng.randrange(0, 120)
        mtype = rng.choice([2, 3, 16, 17, 20, 21, 24, 25, 28, 29, rng.randrange(65536)])
        body = bytes(rng.randrange(256) for _ in range(size))
        valid_or_protocol_error(struct.pack("=IHHII", 16 + size, mtype, 0, 0, 0) + body)
        valid_or_protocol_error(body)


# -- a live dump ---------------------------------------------------------------------------

NETLINK_ROUTE = 0
NLM_F_REQUEST_DUMP = 0x1 | 0x300
DUMPS = [  # (message type, its fixed header)
    (18, struct.pack("=BxHiII", 0, 0, 0, 0, 0)),  # RTM_GETLINK
    (18, struct.pack("=BxHiII", rd.AF_BRIDGE, 0, 0, 0, 0)),  # bridge ports
    (22, struct.pack("=BBBBI", 0, 0, 0, 0, 0)),  # RTM_GETADDR
    (26, struct.pack("=BBBBBBBBI", 0, 0, 0, 0, 0, 0, 0, 0, 0)),  # RTM_GETROUTE, all families
    (30, struct.pack("=BxxxiHBB", 0, 0, 0, 0, 0)),  # RTM_GETNEIGH (with FDB entries)
    (30, struct.pack("=BxxxiHBB", rd.AF_BRIDGE, 0, 0, 0, 0)),
]


def _dump(sock: socket.socket, seq: int, mtype: int, fixed: bytes) -> list[bytes]:
    request = struct.pack("=IHHII", 16 + len(fixed), mtype, NLM_F_REQUEST_DUMP, seq, 0) + fixed
    sock.send(request)
    datagrams = []
    while True:
        data, _, flags, _ = sock.recvmsg(1 << 20)
        assert not flags & socket.MSG_TRUNC
        datagrams.append(data)
        if any(isinstance(r, Done | Error) and r.seq == seq for r in decode(data)):
            return datagrams


def test_live_dump_agrees_with_netlink_msg() -> None:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    except OSError as exc:
        pytest.skip(f"no rtnetlink socket here: {exc}")
    seen: dict[type, int] = {}
    with sock:
        sock.settimeout(10)
        sock.bind((0, 0))
        for seq, (mtype, fixed) in enumerate(DUMPS, start=1000):
            for data in _dump(sock, seq, mtype, fixed):
                for record in assert_agree(data):
                    seen[type(record)] = seen.get(type(record), 0) + 1
    assert seen.get(nlm.Link, 0) >= 1 and seen.get(Done, 0) == len(DUMPS)  # lo, at least


# -- purity --------------------------------------------------------------------------------


def test_the_decoder_does_no_io() -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(Path(rd.__file__).read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {
        "__future__",
        "collections",
        "dataclasses",
        "ipaddress",
        "struct",
        "typing",
        "pyskydive",
    }


# -- benchmark (run by hand) ---------------------------------------------------------------


def _parse(data: bytes) -> list[Any]:
    return list(MarshalRtnl().parse(data))


def _parse_translate(data: bytes, translate: Callable[[Any], Any]) -> list[Any]:
    return [translate(m) for m in MarshalRtnl().parse(data)]


def _decode_all(data: bytes) -> list[Any]:
    return list(decode(data))


def _bench(
    names_: Iterable[str] = ("link_tap", "link_veth", "addr_v4", "route_default_v4"),
) -> None:
    """Print µs per message: pyroute2 parse, + netlink_msg, and rtnl_decode."""
    for name in names_:
        data = raw(name)
        translate = BY_TYPE[data[4]]
        runs: dict[str, Callable[[], object]] = {
            "pyroute2 parse": partial(_parse, data),
            "pyroute2 + netlink_msg": partial(_parse_translate, data, translate),
            "rtnl_decode": partial(_decode_all, data),
        }
        timing = {}
        for label, run in runs.items():
            loops = 20 if label.startswith("pyroute2") else 200
            best = min(timeit.repeat(run, number=loops, repeat=200)) / loops  # quietest run
            timing[label] = best * 1e6
        speedup = timing["pyroute2 + netlink_msg"] / timing["rtnl_decode"]
        print(
            f"{name:18} ({len(data):4} bytes): "
            + ", ".join(f"{label} {us:7.1f} µs" for label, us in timing.items())
            + f"  -> {speedup:.0f}x"
        )


if __name__ == "__main__":
    _bench()
