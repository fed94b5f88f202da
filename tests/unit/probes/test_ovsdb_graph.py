"""OVSDB updates → graph operations, without OVS: recorded JSON-RPC messages from a real
ovsdb-server (``tests/data/ovsdb/record.py``) are fed to the probe's message handler (the path a
socket read takes) and the graph is checked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from pyskydive.errors import ProbeError
from pyskydive.graph import Graph, Node
from pyskydive.probes.topology.ovsdb import OvsdbProbe, parse_address
from pyskydive.probes.topology.ovsdb_model import OvsdbModel
from pyskydive.probes.topology.registry import TopologyContext
from pyskydive.probes.topology.tid import host_tid
from pyskydive.protocols.ovsdb import StreamDecoder, decode_table_updates

DATA = Path(__file__).parents[2] / "data" / "ovsdb"
ORIGIN = "agent.h"


def recorded(name: str) -> list[Any]:
    return json.loads((DATA / f"{name}.json").read_text())  # type: ignore[no-any-return]


def make_probe() -> OvsdbProbe:
    graph = Graph(host="h")
    host = graph.add_node("h", {"Name": "h", "Type": "host", "TID": host_tid("h")}, origin=ORIGIN)
    ctx = TopologyContext(graph=graph, origin=ORIGIN, host=host)
    probe = OvsdbProbe(ctx, "unix:/nonexistent")
    graph.add_listener(probe)  # what start() does, without the connection
    return probe


def replay(probe: OvsdbProbe, messages: list[Any]) -> None:
    for msg in messages:
        assert probe.handle(msg) is None
    probe.flush()


def named(probe: OvsdbProbe, name: str, type_: str | None = None) -> list[Node]:
    md: dict[str, Any] = {"Name": name}
    if type_ is not None:
        md["Type"] = type_
    return probe.ctx.graph.get_nodes(md)


def the(probe: OvsdbProbe, name: str, type_: str) -> Node:
    (node,) = named(probe, name, type_)
    return node


def owners(probe: OvsdbProbe, node: Node) -> list[Node]:
    return probe.ctx.graph.parents(node.id, {"RelationType": "ownership"})


def l2_children(probe: OvsdbProbe, node: Node, **md: Any) -> list[Node]:
    return probe.ctx.graph.children(node.id, {"RelationType": "layer2", **md})


def netlink_node(probe: OvsdbProbe, name: str, type_: str, ifindex: int, owner: Node) -> Node:
    """A node as the netlink probe makes it: IfIndex, owned by the host or a netns."""
    graph = probe.ctx.graph
    node = graph.add_node(
        f"nl-{name}", {"Name": name, "Type": type_, "IfIndex": ifindex}, origin=ORIGIN
    )
    graph.add_edge(f"own-{name}", owner.id, node.id, {"RelationType": "ownership"}, origin=ORIGIN)
    return node


def test_addresses() -> None:
    assert parse_address("unix:///var/run/openvswitch/db.sock").path == (
        "/var/run/openvswitch/db.sock"
    )
    assert parse_address("unix:/tmp/db.sock").path == "/tmp/db.sock"
    tcp = parse_address("tcp:127.0.0.1:6640")
    assert (tcp.host, tcp.port) == ("127.0.0.1", 6640)
    assert parse_address("tcp:[::1]:6640").host == "::1"
    for bad in ("ssl:1.2.3.4:6640", "tcp:host", "unix:", "db.sock"):
        with pytest.raises(ProbeError, match=r"ovs\.ovsdb"):
            parse_address(bad)


def test_bridge_port_internal_then_netlink_node_merges() -> None:
    probe = make_probe()
    replay(probe, recorded("internal"))
    host = probe.ctx.host
    bridge = the(probe, "skobr0", "ovsbridge")
    assert owners(probe, bridge) == [host]
    assert bridge.metadata["ExtID"] == {"owner": "test"}
    assert bridge.metadata["Ovs"]["DatapathType"] == "netdev"
    port = the(probe, "skoint0", "ovsport")
    assert owners(probe, port) == [bridge]
    assert port in l2_children(probe, bridge)
    # No netlink node yet: the interface is the probe's own, owned by its bridge.
    iface = the(probe, "skoint0", "internal")
    assert owners(probe, iface) == [bridge]
    assert l2_children(probe, port) == [iface]
    assert iface.metadata["Driver"] == "openvswitch"
    assert iface.metadata["OfPort"] == 1

    # netlink reports the tap: it becomes THE node, with the OVS metadata merged in.
    tap = netlink_node(probe, "skoint0", "tun", 21924, host)
    probe.flush()
    assert probe.ctx.graph.get_node(iface.id) is None
    assert [n for n in named(probe, "skoint0") if n.metadata["Type"] != "ovsport"] == [tap]
    assert tap.metadata["Type"] == "internal"
    assert probe.ctx.type_overrides[tap.id] == "internal"
    assert tap.metadata["UUID"] and tap.metadata["OfPort"] == 1
    assert owners(probe, tap) == [host]
    assert l2_children(probe, port) == [tap]

    # The tap leaves (moved to a namespace netlink does not see yet): own node again.
    probe.ctx.graph.delete_node(tap)
    probe.flush()
    again = the(probe, "skoint0", "internal")
    assert owners(probe, again) == [bridge]
    assert l2_children(probe, port) == [again]


def test_patch_pair() -> None:
    probe = make_probe()
    replay(probe, recorded("patch"))
    pa, pb = the(probe, "skopa", "patch"), the(probe, "skopb", "patch")
    assert owners(probe, pa) == [the(probe, "skobra", "ovsbridge")]
    assert owners(probe, pb) == [the(probe, "skobrb", "ovsbridge")]
    assert l2_children(probe, pa, Type="patch") == [pb]
    assert l2_children(probe, pb, Type="patch") == []
    assert pa.metadata["Ovs"]["Options"] == {"peer": "skopb"}


def test_tunnels() -> None:
    probe = make_probe()
    replay(probe, recorded("tunnels"))
    bridge = the(probe, "skobrt", "ovsbridge")
    vx = the(probe, "skovx", "vxlan")
    assert (vx.metadata["LocalIP"], vx.metadata["RemoteIP"]) == ("192.0.2.2", "192.0.2.1")
    assert vx.metadata["Ovs"]["Options"]["key"] == "42"
    assert the(probe, "skogn", "geneve").metadata["RemoteIP"] == "192.0.2.3"
    assert the(probe, "skogr", "gre").metadata["RemoteIP"] == "192.0.2.4"
    for name, kind in (("skovx", "vxlan"), ("skogn", "geneve"), ("skogr", "gre")):
        node = the(probe, name, kind)
        assert owners(probe, node) == [bridge]
        assert l2_children(probe, the(probe, name, "ovsport")) == [node]
        assert node.metadata["TID"]


def test_bond_port_has_two_interfaces() -> None:
    probe = make_probe()
    replay(probe, recorded("bond"))
    bond = the(probe, "skobond", "ovsport")
    assert bond.metadata["BondMode"] == "balance-slb"
    assert bond.metadata["Ovs"]["BondMode"] == "balance-slb"
    names = sorted(n.metadata["Name"] for n in l2_children(probe, bond))
    assert names == ["skoi1", "skoi2"]


def test_deletions_leave_nothing() -> None:
    probe = make_probe()
    messages = recorded("delete")
    graph = probe.ctx.graph
    replay(probe, messages[:1])
    assert the(probe, "skoix", "internal") and the(probe, "skopx", "patch")
    replay(probe, messages[1:])
    assert [n.id for n in graph.nodes.values()] == ["h"]
    assert not graph.edges
    assert not probe.ctx.type_overrides


def test_ovs_deletion_strips_a_merged_netlink_node() -> None:
    probe = make_probe()
    messages = recorded("delete")
    tap = netlink_node(probe, "skoix", "tun", 7, probe.ctx.host)
    replay(probe, messages[:1])
    assert tap.metadata["Type"] == "internal" and "UUID" in tap.metadata
    port = the(probe, "skoix", "ovsport")
    assert l2_children(probe, port) == [tap]
    replay(probe, messages[1:])
    assert probe.ctx.graph.get_node(tap.id) is tap  # netlink's node: stays until netlink says
    assert tap.metadata == {"Name": "skoix", "Type": "tun", "IfIndex": 7}
    assert tap.id not in probe.ctx.type_overrides
    assert probe.ctx.graph.in_edges(tap.id, {"RelationType": "layer2"}) == []


def test_resync_removes_what_the_fresh_state_lacks() -> None:
    probe = make_probe()
    replay(probe, recorded("patch"))
    assert named(probe, "skopa", "patch")
    # After a reconnect the monitor reply is the whole state: here, the tunnels recording's.
    replay(probe, recorded("tunnels")[:1])
    assert not named(probe, "skopa")
    assert not named(probe, "skobra")
    assert [n.id for n in probe.ctx.graph.nodes.values() if n.metadata["Type"] != "host"] != []
    assert the(probe, "skobrt", "ovsbridge")


def test_unexpected_columns_and_types_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    probe = make_probe()
    replay(probe, recorded("bond"))
    bond = the(probe, "skobond", "ovsport")
    uuid = bond.metadata["UUID"]
    bad = {
        "id": None,
        "method": "update",
        "params": [
            None,
            {
                "Port": {
                    uuid: {
                        "new": {
                            "name": "skobond",
                            "bond_mode": 42,
                            "tag": ["set", [1, 2]],
                            "brand_new_column": ["map", [["a", "b"]]],
                            "external_ids": ["set", ["x"]],
                            "interfaces": bond_interfaces(probe, uuid),
                        },
                        "old": {"bond_mode": "balance-slb"},
                    }
                }
            },
        ],
    }
    caplog.set_level(logging.WARNING)
    replay(probe, [bad])
    first = [r.getMessage() for r in caplog.records]
    assert any("Port.bond_mode" in m for m in first)
    assert any("Port.tag" in m for m in first)
    assert any("Port.external_ids" in m for m in first)
    caplog.clear()
    replay(probe, [bad])
    assert caplog.records == []
    # Consistent: the port is still there, with its interfaces, without the bad values.
    bond = the(probe, "skobond", "ovsport")
    assert "BondMode" not in bond.metadata
    assert len(l2_children(probe, bond)) == 2


def bond_interfaces(probe: OvsdbProbe, uuid: str) -> list[Any]:
    ifaces = [
        n.metadata["UUID"]
        for n in probe.ctx.graph.children(
            probe.ctx.graph.get_nodes({"UUID": uuid})[0].id, {"RelationType": "layer2"}
        )
    ]
    return ["set", [["uuid", u] for u in ifaces]]


def test_echo_is_answered() -> None:
    probe = make_probe()
    reply = probe.handle({"method": "echo", "params": [], "id": "echo"})
    assert reply is not None and json.loads(reply) == {"id": "echo", "result": [], "error": None}


def test_model_reports_dirty_uuids() -> None:
    model = OvsdbModel()
    messages = recorded("patch")
    dirty = model.reset(decode_table_updates(messages[0]["result"]))
    assert {model.intent(u).name for u in dirty if model.intent(u)} >= {"skobra", "skobrb"}  # type: ignore[union-attr]
    changes = decode_table_updates(messages[2]["params"][1])
    dirty = model.apply(changes)
    # An update of one patch interface dirties its peer too (both ends show the edge).
    names = {model.intent(u).name for u in dirty}  # type: ignore[union-attr]
    assert {"skopa", "skopb"} <= names


def test_dropped_mid_update_reconnects_and_resyncs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real shell against a scripted server on a Unix socket: the first connection dies
    in the middle of an update, the second one's monitor reply is a different state."""
    patch, tunnels = recorded("patch"), recorded("tunnels")
    sock = str(tmp_path / "db.sock")
    connections = 0

    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writers.append(writer)
        decoder = StreamDecoder()
        request: list[Any] = []
        while not request:
            request = decoder.feed(await reader.read(65536))
        assert request[0]["method"] == "monitor"
        first = connections == 1
        reply = {"id": request[0]["id"], "error": None}
        reply["result"] = (patch if first else tunnels)[0]["result"]
        writer.write(json.dumps(reply).encode())
        if first:
            writer.write(json.dumps(patch[1]).encode())
            half = json.dumps(patch[2]).encode()
            writer.write(half[: len(half) // 2])
            await writer.drain()
            writer.close()
            return
        await writer.drain()
        await reader.read()  # hold the connection until the probe closes it

    async def scenario() -> OvsdbProbe:
        server = await asyncio.start_unix_server(serve, sock)
        probe = make_probe()
        probe.ctx.graph.remove_listener(probe)  # start() adds it
        probe = OvsdbProbe(probe.ctx, f"unix://{sock}", backoff_initial=0.01)
        await probe.start()
        try:
            for _ in range(500):
                if connections >= 2 and named(probe, "skobrt"):
                    break
                await asyncio.sleep(0.01)
        finally:
            await probe.stop(remove_nodes=False)
            server.close()
            for writer in writers:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            await server.wait_closed()
        return probe

    caplog.set_level(logging.WARNING)
    probe = asyncio.run(scenario())
    assert connections == 2
    assert the(probe, "skobrt", "ovsbridge")
    assert not named(probe, "skobra") and not named(probe, "skopa")
    kinds = sorted(n.metadata["Type"] for n in probe.ctx.graph.nodes.values())
    assert kinds.count("ovsbridge") == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("middle of a message" in m for m in warnings) == 1
