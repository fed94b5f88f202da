"""Composition root of the analyzer: the merged graph, the agents' hub, the API."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pyskydive.analyzer.hub import Hub
from pyskydive.api.app import ServiceContext, build_app
from pyskydive.api.broadcast import Broadcaster
from pyskydive.api.server import HTTPServer
from pyskydive.config import Config
from pyskydive.graph import Graph

__all__ = ["Analyzer", "run_analyzer"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Analyzer:
    config: Config
    graph: Graph
    hub: Hub
    server: HTTPServer


@contextlib.asynccontextmanager
async def run_analyzer(config: Config) -> AsyncIterator[Analyzer]:
    graph = Graph(host=config.host_id)
    hub = Hub(graph)
    broadcaster = Broadcaster(graph)
    app = build_app(
        ServiceContext(
            service="analyzer",
            host_id=config.host_id,
            graph=graph,
            broadcaster=broadcaster,
            hub=hub,
        )
    )
    listen = config.analyzer.listen
    async with HTTPServer(app, listen.host, listen.port, name="analyzer") as server:
        log.info("analyzer %s started", config.host_id)
        yield Analyzer(config, graph, hub, server)
