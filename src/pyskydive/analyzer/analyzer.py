"""Composition root of the analyzer: the merged graph, the agents' hub, the API."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pyskydive.analyzer.flow_steps import build_flow_registry  # flows (issue 5)
from pyskydive.analyzer.flows import FlowStore  # flows (issue 5)
from pyskydive.analyzer.hub import Hub
from pyskydive.analyzer.ondemand import OnDemand  # captures (issue 5)
from pyskydive.analyzer.rules import RuleEngine  # resources (issue 3)
from pyskydive.analyzer.store import ResourceStore  # resources (issue 3)
from pyskydive.api.agent_flow import FlowIngestStats, FlowUDPServer  # flows (issue 5)
from pyskydive.api.app import ServiceContext, build_app
from pyskydive.api.auth import build_auth  # auth (issue 3)
from pyskydive.api.broadcast import Broadcaster
from pyskydive.api.elements import ApiElements  # resources (issue 3)
from pyskydive.api.resources import ResourceContext, restore_resources  # resources (issue 3)
from pyskydive.api.server import HTTPServer
from pyskydive.api.tls import server_context  # auth (issue 3)
from pyskydive.config import Config
from pyskydive.graph import Graph, HistoryRecorder, MemoryHistory  # history (issue 6)

__all__ = ["Analyzer", "run_analyzer"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Analyzer:
    config: Config
    graph: Graph
    hub: Hub
    server: HTTPServer
    flows: FlowStore | None = None  # flows (issue 5)
    ondemand: OnDemand | None = None  # captures (issue 5)


@contextlib.asynccontextmanager
async def run_analyzer(config: Config) -> AsyncIterator[Analyzer]:
    # -- auth (issue 3): read htpasswd files and TLS files first, so bad ones fail at once --
    auth = build_auth(config, "analyzer")
    tls = server_context(config.tls)
    graph = Graph(host=config.host_id)
    # history (issue 6): in memory until a storage backend is configured; bounded to the last
    # hour and 200,000 past revisions. The storage backend replaces MemoryHistory here.
    history = MemoryHistory(max_age_ms=3_600_000, max_revisions=200_000)
    HistoryRecorder(history.record).attach(graph)
    hub = Hub(graph)
    broadcaster = Broadcaster(graph)
    # -- resources (issue 3): the embedded store, API nodes/edges, live rules --
    origin = f"analyzer.{config.host_id}"
    store = ResourceStore(config.analyzer.data_dir)
    rules = RuleEngine(graph, origin)
    resources = ResourceContext(
        store=store,
        rules=rules,
        elements=ApiElements(graph, store, origin, transient_keys=rules.merged_keys),
    )
    restore_resources(resources)
    # -- end resources --
    flows = FlowStore()  # flows (issue 5): POST /api/pcap, agents' captures, Gremlin steps
    flow_ingest = FlowIngestStats()
    ondemand = OnDemand(graph, hub, store)  # captures (issue 5): tell agents what to capture
    hub.on_synced = lambda session: ondemand.changed()
    resources.captures_changed = ondemand.changed
    app = build_app(
        ServiceContext(
            service="analyzer",
            host_id=config.host_id,
            graph=graph,
            broadcaster=broadcaster,
            hub=hub,
            resources=resources,  # issue 3
            auth=auth,  # auth (issue 3)
            flows=flows,  # flows (issue 5)
            flow_ingest=flow_ingest,
            gremlin_steps=build_flow_registry(flows),  # flows (issue 5)
            history=history,  # history (issue 6)
        )
    )
    listen = config.analyzer.listen
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            HTTPServer(app, listen.host, listen.port, name="analyzer", ssl_context=tls)
        )
        # agents sending flows over UDP (flow.protocol: udp) use the same port number
        host, port = server.address
        await stack.enter_async_context(FlowUDPServer(host, port, flows, flow_ingest))
        await stack.enter_async_context(ondemand)
        log.info("analyzer %s started", config.host_id)
        yield Analyzer(config, graph, hub, server, flows, ondemand)
