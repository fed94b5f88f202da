"""Composition root of the analyzer: the merged graph, the agents' hub, the API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pyskydive.analyzer.flow_steps import build_flow_registry  # flows (issue 5)
from pyskydive.analyzer.flows import DEFAULT_MAX_FLOWS, FlowStore  # flows (issue 5)
from pyskydive.analyzer.hub import Hub
from pyskydive.analyzer.ondemand import OnDemand  # captures (issue 5)
from pyskydive.analyzer.rules import RuleEngine  # resources (issue 3)
from pyskydive.api.agent_flow import FlowIngestStats, FlowUDPServer  # flows (issue 5)
from pyskydive.api.app import ServiceContext, build_app
from pyskydive.api.auth import build_auth  # auth (issue 3)
from pyskydive.api.broadcast import Broadcaster
from pyskydive.api.elements import ApiElements  # resources (issue 3)
from pyskydive.api.resources import (  # resources (issue 3)
    ResourceContext,
    restore_resources,
    resync_resources,
)
from pyskydive.api.server import HTTPServer
from pyskydive.api.tls import server_context  # auth (issue 3)
from pyskydive.config import Config
from pyskydive.graph import Graph, HistoryRecorder  # history (issue 6)
from pyskydive.graph.elements import now_ms
from pyskydive.storage.base import FlowQuery  # storage (issue 6)
from pyskydive.storage.open import Storage, open_storage  # storage (issue 6)

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
    storage: Storage | None = None  # storage (issue 6)


@contextlib.asynccontextmanager
async def run_analyzer(config: Config) -> AsyncIterator[Analyzer]:
    # -- auth (issue 3): read htpasswd files and TLS files first, so bad ones fail at once --
    auth = build_auth(config, "analyzer")
    tls = server_context(config.tls)
    async with contextlib.AsyncExitStack() as stack:
        graph = Graph(host=config.host_id)
        # -- storage (issue 6): history, flows and resources in the configured backends --
        storage = await asyncio.to_thread(open_storage, config)
        stack.push_async_callback(_close_storage, storage)  # whatever fails after this
        live_flows = await asyncio.to_thread(_recent_flows, storage, config.flow.expire)
        # Skydive archives what was live when the analyzer stopped: the agents re-sync it.
        storage.topology.close_live(now_ms())
        HistoryRecorder(storage.topology.record).attach(graph)
        hub = Hub(graph)
        broadcaster = Broadcaster(graph)
        # -- resources (issue 3): in the topology backend, API nodes/edges, live rules --
        origin = f"analyzer.{config.host_id}"
        store = storage.resources
        rules = RuleEngine(graph, origin)
        resources = ResourceContext(
            store=store,
            rules=rules,
            elements=ApiElements(graph, store, origin, transient_keys=rules.merged_keys),
        )
        restore_resources(resources)
        # -- end resources --
        # flows (issue 5): POST /api/pcap, agents' captures, Gremlin steps; every update is
        # written to the flow backend (issue 6), the recent ones come back at start
        flows = FlowStore()
        flows.put_many(live_flows)
        flows.add_listener(storage.flows.write_flows)
        flow_ingest = FlowIngestStats()
        ondemand = OnDemand(graph, hub, store)  # captures (issue 5): tell agents what to capture
        hub.on_synced = lambda session: ondemand.changed()
        resources.captures_changed = ondemand.changed
        loop = asyncio.get_running_loop()

        def resources_changed() -> None:  # another analyzer changed a shared resource
            loop.call_soon_threadsafe(resync_resources, resources)

        if hasattr(store, "on_resources_changed"):  # a shared backend (Elasticsearch)
            store.on_resources_changed = resources_changed
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
                gremlin_steps=build_flow_registry(  # flows (issue 5), in the past (issue 6)
                    flows,
                    backend=storage.flows,
                    topology=storage.topology,
                    flow_expire_ms=config.flow.expire * 1000,
                ),
                history=storage.topology,  # history (issue 6)
                extra_status=lambda: {"Storage": storage.status()},
            )
        )
        listen = config.analyzer.listen
        server = await stack.enter_async_context(
            HTTPServer(app, listen.host, listen.port, name="analyzer", ssl_context=tls)
        )
        # agents sending flows over UDP (flow.protocol: udp) use the same port number
        host, port = server.address
        await stack.enter_async_context(FlowUDPServer(host, port, flows, flow_ingest))
        await stack.enter_async_context(ondemand)
        log.info("analyzer %s started; %s", config.host_id, storage.describe())
        yield Analyzer(config, graph, hub, server, flows, ondemand, storage)


def _recent_flows(storage: Storage, expire_s: int) -> list[dict[str, Any]]:
    """What the analyzer takes back from its store at start: the flows updated within
    ``flow.expire`` (the agents' next updates replace them)."""
    now = now_ms()
    flows = storage.flows.query_flows(
        FlowQuery(now - expire_s * 1000, now, limit=DEFAULT_MAX_FLOWS)
    )
    if flows:
        log.info("reloaded %d recent flows from storage", len(flows))
    return flows


async def _close_storage(storage: Storage) -> None:
    if not await asyncio.to_thread(storage.close):
        log.error("storage: buffered writes were not all written before closing")
