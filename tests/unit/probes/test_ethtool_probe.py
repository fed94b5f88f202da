"""The ethtool probe's graph logic, without root: a fake query function stands for the ioctls
(the real kernel path is covered by tests/functional/test_ethtool.py)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Sequence
from typing import Any

from pyskydive.graph import Graph, Node
from pyskydive.probes.topology.ethtool import EthtoolProbe, Result
from pyskydive.probes.topology.ethtool_codec import DriverInfo, EthtoolInfo, LinkSettings
from pyskydive.probes.topology.nsutil import NetnsRunner
from pyskydive.probes.topology.registry import TopologyContext, new_id

ORIGIN = "agent.test"
NS_PATH = "/var/run/netns/ns1"


def info(
    driver: str = "veth",
    *,
    speed: int | None = 10000,
    features: dict[str, bool] | None = None,
    stats: dict[str, int] | None = None,
) -> EthtoolInfo:
    return EthtoolInfo(
        driver=DriverInfo(driver, "1.0", "", "", "", 0, 0) if driver else None,
        link=LinkSettings(speed, "full" if speed else None, False),
        features=tuple((features if features is not None else {"highdma": True}).items()),
        stats=tuple((stats or {}).items()),
    )


class FakeEthtool:
    """Answers from ``answers[(path, name)]`` (an EthtoolInfo or an exception)."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str | None, str], Result] = {}
        self.calls: list[tuple[str | None, list[str]]] = []
        self.gone: set[str | None] = set()  # namespaces that cannot be entered
        self.during: Callable[[], None] | None = None  # runs while a query is "in flight"

    async def __call__(self, path: str | None, names: Sequence[str]) -> Sequence[Result]:
        self.calls.append((path, list(names)))
        if self.during is not None:
            self.during()
        if path in self.gone:
            raise FileNotFoundError(errno.ENOENT, "no such namespace", path)
        return [self.answers.get((path, n), OSError(errno.ENODEV, "No such device")) for n in names]


class World:
    def __init__(self) -> None:
        self.graph = Graph("test")
        self.host = self.graph.add_node("host", {"Name": "test", "Type": "host"}, origin=ORIGIN)
        self.ctx = TopologyContext(self.graph, ORIGIN, self.host)
        self.netns = self.add(self.host, {"Name": "ns1", "Type": "netns", "Path": NS_PATH})
        self.fake = FakeEthtool()
        self.probe = EthtoolProbe(self.ctx, NetnsRunner(), query_fn=self.fake, delay=0)

    def add(self, owner: Node | None, md: dict[str, Any]) -> Node:
        node = self.graph.add_node(new_id(), md, origin=ORIGIN)
        if owner is not None:
            self.own(owner, node)
        return node

    def own(self, owner: Node, node: Node) -> None:
        self.graph.add_edge(
            new_id(), owner.id, node.id, {"RelationType": "ownership"}, origin=ORIGIN
        )

    def intf(self, owner: Node | None, name: str, index: int, kind: str = "veth") -> Node:
        return self.add(owner, {"Name": name, "Type": kind, "IfIndex": index, "State": "UP"})


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def run(body: Callable[[World], Any]) -> None:
    async def main() -> None:
        world = World()
        await world.probe.start()
        try:
            await body(world)
        finally:
            await world.probe.stop()

    asyncio.run(main())


def test_interfaces_are_asked_in_their_namespace_and_merged() -> None:
    async def body(w: World) -> None:
        w.fake.answers[(None, "eth0")] = info("e1000", speed=1000)
        w.fake.answers[(NS_PATH, "eth0")] = info("veth", stats={"peer_ifindex": 7})
        host_eth0 = w.intf(w.host, "eth0", 2, "device")
        ns_eth0 = w.intf(w.netns, "eth0", 2)
        await settle()
        assert len(w.fake.calls) == 2
        assert (None, ["eth0"]) in w.fake.calls and (NS_PATH, ["eth0"]) in w.fake.calls
        assert host_eth0.metadata["Driver"] == "e1000"
        assert host_eth0.metadata["Speed"] == 1000
        assert ns_eth0.metadata["Driver"] == "veth"
        assert ns_eth0.get("Features.highdma") is True
        assert ns_eth0.get("EthtoolStats.peer_ifindex") == 7
        assert ns_eth0.metadata["PeerIfIndex"] == 7  # netlink had none: filled in

    run(body)


def test_a_burst_is_one_query_per_namespace_and_non_interfaces_are_skipped() -> None:
    async def body(w: World) -> None:
        for i in range(5):
            w.fake.answers[(NS_PATH, f"v{i}")] = info()
            w.intf(w.netns, f"v{i}", 10 + i)
        w.add(w.host, {"Name": "br-int", "Type": "ovsbridge"})
        w.add(w.host, {"Name": "nothing", "Type": "device"})  # no IfIndex
        await settle()
        assert w.fake.calls == [(NS_PATH, ["v0", "v1", "v2", "v3", "v4"])]

    run(body)


def test_only_rename_state_or_ifindex_changes_ask_again() -> None:
    async def body(w: World) -> None:
        w.fake.answers[(None, "a")] = info(features={"tx-checksum-ip-generic": True})
        node = w.intf(w.host, "a", 3)
        await settle()
        w.graph.update_node(node, {"MTU": 9000, "IPV4": ["10.0.0.1/24"]})
        await settle()
        assert len(w.fake.calls) == 1

        w.fake.answers[(None, "b")] = info(features={"tx-checksum-ip-generic": False})
        w.graph.update_node(node, {"Name": "b"})
        await settle()
        assert w.fake.calls[-1] == (None, ["b"])
        assert node.get("Features.tx-checksum-ip-generic") is False

        w.graph.update_node(node, {"State": "DOWN"})
        await settle()
        assert len(w.fake.calls) == 3

    run(body)


def test_values_that_disappear_are_removed_but_other_probes_keys_stay() -> None:
    async def body(w: World) -> None:
        w.fake.answers[(None, "p")] = info(speed=1000, stats={"rx": 1})
        node = w.intf(w.host, "p", 4, "internal")
        await settle()
        assert node.metadata["Speed"] == 1000
        # The OVS probe's Driver, then a driver that answers nothing but features.
        w.fake.answers[(None, "p")] = info("", speed=None)
        w.graph.update_node(node, {"Driver": "openvswitch"})
        w.graph.update_node(node, {"State": "DOWN"})
        await settle()
        assert "Speed" not in node.metadata and "Duplex" not in node.metadata
        assert "EthtoolStats" not in node.metadata
        assert node.metadata["Driver"] == "openvswitch"
        assert node.metadata["Features"] == {"highdma": True}

    run(body)


def test_netlink_peer_ifindex_is_not_overwritten() -> None:
    async def body(w: World) -> None:
        w.fake.answers[(None, "v")] = info(stats={"peer_ifindex": 99})
        node = w.add(w.host, {"Name": "v", "Type": "veth", "IfIndex": 5, "PeerIfIndex": 6})
        await settle()
        assert node.metadata["PeerIfIndex"] == 6

    run(body)


def test_errors_are_quiet_and_not_retried() -> None:
    async def body(w: World) -> None:
        gone = w.intf(w.host, "gone", 6)  # ENODEV: vanished before the query
        w.fake.gone.add(NS_PATH)
        in_dead_ns = w.intf(w.netns, "x", 7)
        await settle()
        await settle()
        assert len(w.fake.calls) == 2
        assert "Driver" not in gone.metadata and "Features" not in in_dead_ns.metadata
        assert w.probe.idle

    run(body)


def test_deleted_or_renamed_meanwhile_is_not_applied() -> None:
    async def body(w: World) -> None:
        w.fake.answers[(None, "old")] = info()
        node = w.intf(w.host, "old", 8)
        deleted = w.intf(w.host, "del", 9)
        w.graph.delete_node(deleted)

        def rename() -> None:
            w.fake.during = None
            w.graph.update_node(node, {"Name": "new"})

        w.fake.during = rename
        await settle()
        assert w.fake.calls[0] == (None, ["old"])  # "del" was never asked
        assert w.fake.calls[1] == (None, ["new"])  # the rename asked again
        assert "Driver" not in node.metadata  # the answer for "old" was dropped

    run(body)


def test_a_node_without_owner_yet_is_asked_once_owned() -> None:
    async def body(w: World) -> None:
        w.fake.answers[(NS_PATH, "late")] = info()
        node = w.intf(None, "late", 10)
        await settle()
        assert w.fake.calls == []
        w.own(w.netns, node)
        await settle()
        assert w.fake.calls == [(NS_PATH, ["late"])]
        assert node.metadata["Driver"] == "veth"

    run(body)


def test_existing_interfaces_are_asked_at_start() -> None:
    async def main() -> None:
        w = World()
        w.fake.answers[(None, "eth0")] = info("virtio_net")
        node = w.intf(w.host, "eth0", 2, "device")
        await w.probe.start()
        await settle()
        await w.probe.stop()
        assert node.metadata["Driver"] == "virtio_net"

    asyncio.run(main())
