"""The HTTP + WebSocket application served by both the analyzer and the agent.

Composition only: :func:`build_app` takes the pieces a process already built (its graph, its
broadcaster, the analyzer's hub when there is one) and returns a Starlette app with the routes
of DESIGN.md §2.2/§2.3 that exist so far.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from pyskydive import __version__
from pyskydive.analyzer.flows import FlowStore  # flows (issue 5)
from pyskydive.analyzer.hub import Hub
from pyskydive.api.agent_flow import FlowIngestStats, agent_flow_endpoint
from pyskydive.api.auth import AuthPolicy, auth_middleware, auth_routes, open_policy
from pyskydive.api.broadcast import Broadcaster
from pyskydive.api.flow_ws import flow_subscriber_endpoint  # flow stream
from pyskydive.api.openapi import DOCS_HTML, openapi_spec
from pyskydive.api.pcap import pcap_upload  # flows (issue 5)
from pyskydive.api.publisher import publisher_endpoint  # resources & publisher (issue 3)
from pyskydive.api.resources import ResourceContext, resource_routes  # resources (issue 3)
from pyskydive.api.topology import topology_query
from pyskydive.api.ws import agent_endpoint, subscriber_endpoint
from pyskydive.graph import Graph
from pyskydive.graph.messages import encode
from pyskydive.gremlin import StepRegistry  # flows (issue 5)
from pyskydive.storage.base import TopologyBackend  # history (issue 6)

__all__ = ["ServiceContext", "build_app"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ServiceContext:
    """What the API needs of the process that serves it."""

    service: str  # "analyzer" or "agent"
    host_id: str
    graph: Graph
    broadcaster: Broadcaster
    hub: Hub | None = None
    extra_status: Callable[[], dict[str, Any]] | None = None
    resources: ResourceContext | None = None  # the analyzer's REST resources (issue 3)
    #: Authentication and roles (api/auth.py); None: noauth.
    auth: AuthPolicy | None = None
    #: The analyzer's flows (issue 5): enables POST /api/pcap.
    flows: FlowStore | None = None
    #: Counters of the agents' flow batches (/ws/agent/flow, UDP); None: no agent flows.
    flow_ingest: FlowIngestStats | None = None
    #: Extension Gremlin steps (flow steps, issue 5) for POST /api/topology.
    gremlin_steps: StepRegistry | None = None
    #: Topology history (issue 6): G.At(...) in POST /api/topology, SyncRequest.Time.
    history: TopologyBackend | None = None


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return encode(content).encode()


def build_app(ctx: ServiceContext) -> Starlette:
    async def api_root(request: Request) -> Response:
        return _JSON({"Host": ctx.host_id, "Version": __version__, "Service": ctx.service})

    async def topology(request: Request) -> Response:
        return _JSON(ctx.graph.to_wire())

    async def topology_post(request: Request) -> Response:
        return await topology_query(request, ctx.graph, ctx.gremlin_steps, ctx.history)

    async def openapi(request: Request) -> Response:
        return _JSON(openapi_spec())

    async def docs(request: Request) -> Response:
        return HTMLResponse(DOCS_HTML)

    async def status(request: Request) -> Response:
        body: dict[str, Any] = {
            "Host": ctx.host_id,
            "Service": ctx.service,
            "Version": __version__,
            "Nodes": len(ctx.graph.nodes),
            "Edges": len(ctx.graph.edges),
            "Subscribers": {f"{s.remote}": s.status() for s in ctx.broadcaster.subscribers},
        }
        if ctx.hub is not None:
            body["Agents"] = {h: s.status() for h, s in ctx.hub.agents.items()}
            body["Publishers"] = {h: s.status() for h, s in ctx.hub.publishers.items()}  # issue 3
        if ctx.flows is not None:
            body["Flows"] = ctx.flows.status()  # flows (issue 5)
            if ctx.flow_ingest is not None:
                body["Flows"]["FromAgents"] = ctx.flow_ingest.status()
        if ctx.extra_status is not None:
            body.update(ctx.extra_status())
        return _JSON(body)

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"Error": f"no route {request.url.path}"}, status_code=404)

    async def subscriber(ws: Any) -> None:
        await subscriber_endpoint(ws, ctx.graph, ctx.broadcaster, ctx.history)

    routes: list[Any] = [
        Route("/api", api_root, methods=["GET"]),
        Route("/api/", api_root, methods=["GET"]),
        Route("/api/topology", topology, methods=["GET"]),
        Route("/api/topology", topology_post, methods=["POST"]),
        Route("/api/openapi.json", openapi, methods=["GET"]),
        Route("/api/docs", docs, methods=["GET"]),
        Route("/api/status", status, methods=["GET"]),
        WebSocketRoute("/ws/subscriber", subscriber),
        WebSocketRoute("/ws/graph", subscriber),
        WebSocketRoute("/ws", subscriber),
    ]
    hub = ctx.hub
    if hub is not None:

        async def agent(ws: Any) -> None:
            await agent_endpoint(ws, hub)

        routes.append(WebSocketRoute("/ws/agent/topology", agent))

        # -- publishers (issue 3) --
        async def publisher(ws: Any) -> None:
            await publisher_endpoint(ws, hub)

        async def pubsub(ws: Any) -> None:
            await publisher_endpoint(ws, hub, ctx.broadcaster)

        routes.append(WebSocketRoute("/ws/publisher", publisher))
        routes.append(WebSocketRoute("/ws/pubsub", pubsub))
    # -- flows (issue 5): POST /api/pcap on the analyzer --
    flow_store = ctx.flows
    if flow_store is not None:

        async def pcap(request: Request) -> Response:
            return await pcap_upload(request, flow_store)

        routes.append(Route("/api/pcap", pcap, methods=["POST"]))

        async def flow_subscriber(ws: Any) -> None:  # flow stream
            await flow_subscriber_endpoint(ws, flow_store, ctx.graph)

        routes.append(WebSocketRoute("/ws/subscriber/flow", flow_subscriber))

        flow_stats = ctx.flow_ingest
        if flow_stats is not None:  # agents' capture flows (analyzer only)

            async def agent_flow(ws: Any) -> None:
                await agent_flow_endpoint(ws, flow_store, flow_stats)

            routes.append(WebSocketRoute("/ws/agent/flow", agent_flow))
    # -- REST resources (issue 3) --
    if ctx.resources is not None:
        routes += resource_routes(ctx.resources)
    # --- authentication (api/auth.py): /login, /logout, and a check on every /api and /ws path
    policy = ctx.auth or open_policy()
    routes.extend(auth_routes(policy))
    return Starlette(
        routes=routes,
        middleware=auth_middleware(policy),
        exception_handlers={404: not_found},
    )
