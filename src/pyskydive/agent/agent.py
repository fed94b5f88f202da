"""Composition root of the agent: graph, host node, topology probes, API, analyzer links."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pyskydive.agent.captures import CaptureManager, CaptureTypes  # issue 5
from pyskydive.agent.flow_sender import FlowSender  # issue 5
from pyskydive.agent.forwarder import Forwarder
from pyskydive.analyzer.ondemand import CAPTURE_SET, ONDEMAND_NS  # issue 5
from pyskydive.api.app import ServiceContext, build_app
from pyskydive.api.auth import build_auth
from pyskydive.api.broadcast import Broadcaster
from pyskydive.api.server import HTTPServer
from pyskydive.api.tls import client_context, server_context
from pyskydive.config import Config
from pyskydive.errors import ProbeError
from pyskydive.graph import Graph
from pyskydive.graph import messages as wire
from pyskydive.probes.flow.afpacket import AfpacketCapture  # issue 5
from pyskydive.probes.flow.base import CaptureEnv  # issue 5
from pyskydive.probes.flow.ovssflow import OvsSflowCapture  # issue 5
from pyskydive.probes.flow.pcap import PcapCapture  # issue 5
from pyskydive.probes.flow.pcapsocket import PcapSocketCapture  # issue 5
from pyskydive.probes.flow.sflow import SflowCapture  # issue 5
from pyskydive.probes.topology.ethtool import EthtoolProbe
from pyskydive.probes.topology.host import add_host_node
from pyskydive.probes.topology.netlink import NetlinkProbe
from pyskydive.probes.topology.netns import NetnsProbe
from pyskydive.probes.topology.nsutil import NetnsRunner
from pyskydive.probes.topology.ovsdb import OvsdbProbe
from pyskydive.probes.topology.registry import ROOT_NS, TopologyContext

__all__ = ["Agent", "run_agent"]

log = logging.getLogger(__name__)

#: Probes this version implements; the config accepts names of later ones too.
AVAILABLE_PROBES = ("netlink", "netns", "ethtool", "ovsdb")

#: Capture types (the capture resource's Type) and the probes that run them (issue 5).
CAPTURE_CLASSES: CaptureTypes = {
    "afpacket": AfpacketCapture,
    "pcap": PcapCapture,
    "pcapsocket": PcapSocketCapture,
    "sflow": SflowCapture,
    "ovssflow": OvsSflowCapture,
}


@dataclass(eq=False)
class Agent:
    config: Config
    graph: Graph
    topology: TopologyContext
    forwarder: Forwarder
    server: HTTPServer


@contextlib.asynccontextmanager
async def run_agent(config: Config, *, serve_api: bool = True) -> AsyncIterator[Agent]:
    """Build and start an agent; everything stops when the block exits."""
    host_id = config.host_id
    origin = f"agent.{host_id}"
    graph = Graph(host=host_id)
    host = add_host_node(graph, host_id, origin, dict(config.agent.metadata))
    ctx = TopologyContext(graph=graph, origin=origin, host=host)
    ctx.namespaces[ROOT_NS] = "/proc/self/ns/net"
    probes = list(config.agent.topology.probes)
    for name in probes:
        if name not in AVAILABLE_PROBES:
            log.warning("probe %r is not available in this version, skipped", name)
    metrics = float(config.agent.topology.netlink.metrics_update)
    broadcaster = Broadcaster(graph)
    cluster = config.agent.auth.cluster
    credentials = (cluster.username, cluster.password) if cluster.username else None
    client_tls = client_context(config.tls)
    analyzers = [str(a) for a in config.analyzers]
    # -- captures (issue 5): flows to the analyzers, captures the analyzers ask for --
    flow_sender = FlowSender(
        analyzers,
        host_id,
        protocol=config.flow.protocol,
        credentials=credentials,
        ssl_context=client_tls,
    )
    captures: CaptureManager | None = None

    def on_analyzer_message(address: str, msg: wire.Message) -> None:
        if msg.namespace == ONDEMAND_NS and msg.type == CAPTURE_SET and captures is not None:
            captures.apply(address, msg.obj)
        else:
            log.debug("analyzer %s: ignored %s/%s", address, msg.namespace, msg.type)

    forwarder = Forwarder(
        graph,
        host_id,
        analyzers,
        credentials=credentials,
        ssl_context=client_tls,
        on_message=on_analyzer_message,
    )
    app = build_app(
        ServiceContext(
            service="agent",
            host_id=host_id,
            graph=graph,
            broadcaster=broadcaster,
            extra_status=lambda: {
                "Analyzers": forwarder.status(),
                "FlowLinks": flow_sender.status(),  # issue 5
                "Captures": captures.status() if captures is not None else {},  # issue 5
            },
            auth=build_auth(config, "agent"),
        )
    )
    server = HTTPServer(
        app,
        config.agent.listen.host,
        config.agent.listen.port,
        name="agent",
        ssl_context=server_context(config.tls),
    )
    runner = NetnsRunner()
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(runner.close)
        root: NetlinkProbe | None = None
        if "netlink" in probes:
            root = NetlinkProbe(ctx, host, runner, metrics_update=metrics)
            try:
                await root.start()
            except OSError as exc:
                raise ProbeError(f"netlink probe cannot start: {exc}") from exc
            stack.push_async_callback(root.stop, remove_nodes=False)
        if "netns" in probes:
            netns = NetnsProbe(
                ctx,
                runner,
                config.agent.topology.netns.run_path,
                metrics_update=metrics,
                on_change=root.peers_may_have_changed if root is not None else None,
            )
            try:
                await netns.start()
            except OSError as exc:
                raise ProbeError(
                    f"netns probe cannot watch {config.agent.topology.netns.run_path}: {exc}"
                ) from exc
            stack.push_async_callback(netns.stop)
        if "ethtool" in probes:
            # After netlink and netns: it queues the interfaces they found, then follows.
            ethtool = EthtoolProbe(ctx, runner)
            await ethtool.start()
            stack.push_async_callback(ethtool.stop)
        if "ovsdb" in probes:
            ovsdb = OvsdbProbe(ctx, config.ovs.ovsdb)
            await ovsdb.start()
            stack.push_async_callback(ovsdb.stop, remove_nodes=False)
        # -- captures (issue 5) --
        await stack.enter_async_context(flow_sender)
        env = CaptureEnv.from_config(config, graph, runner)
        captures = await stack.enter_async_context(
            CaptureManager(ctx, env, CAPTURE_CLASSES, flow_sender)
        )
        if serve_api:
            await stack.enter_async_context(server)
        await stack.enter_async_context(forwarder)
        log.info(
            "agent %s started: %d nodes, %d edges, analyzers %s",
            host_id,
            len(graph.nodes),
            len(graph.edges),
            ", ".join(str(a) for a in config.analyzers) or "none",
        )
        yield Agent(config, graph, ctx, forwarder, server)
