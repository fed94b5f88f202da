"""``POST /api/topology``: a Gremlin query over the live graph (DESIGN.md §2.2, §2.4).

Body ``{"GremlinQuery": "G.V().Has('Type', 'netns')"}``; the answer is the query's JSON result,
or Graphviz DOT when the client sends ``Accept: text/vnd.graphviz``. A malformed or failing
query is a 400 with the position and the reason, never a 500. The query runs on the event
loop that owns the graph (no copy, no lock), bounded by the evaluator's time limit.

A query starting with ``G.At(...)``/``G.Context(...)`` (time travel) runs whole in a worker
thread: it reads the topology history, then flows and metrics from storage, all of which may
block, and works on a throwaway graph built from the history, never on the live one (see
:mod:`pyskydive.gremlin.timetravel`), so the loop goes on serving meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from pyskydive.errors import QueryError, StorageError
from pyskydive.graph import Graph, now_ms
from pyskydive.gremlin import (
    HistorySource,
    StepRegistry,
    evaluate,
    parse,
    query_window,
    to_dot,
)

__all__ = ["QUERY_TIMEOUT", "evaluate_query", "json_error", "topology_query"]

#: Seconds a query may run before it is stopped with a clear error.
QUERY_TIMEOUT = 10.0

DOT_MEDIA_TYPE = "text/vnd.graphviz"


def json_error(status: int, reason: str) -> Response:
    return Response(
        orjson.dumps({"Error": reason}), status_code=status, media_type="application/json"
    )


async def read_json_body(request: Request) -> Any:
    """The request body as JSON, or ``ValueError`` with a one-line reason."""
    raw = await request.body()
    if not raw.strip():
        raise ValueError("the request body is empty (a JSON object is expected)")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the request body is not JSON: {exc}") from exc


async def evaluate_query(
    text: str,
    graph: Graph,
    registry: StepRegistry | None = None,
    history: HistorySource | None = None,
    *,
    timeout: float = QUERY_TIMEOUT,
) -> Any:
    """Evaluate ``text``: on the loop over the live graph, or, for a time-travel query, in a
    worker thread (its reads of storage block; it never touches the live graph).

    Raises :class:`~pyskydive.errors.QueryError` for a bad query."""
    query = parse(text)
    now = now_ms()
    if query_window(query, now) is None:
        return evaluate(query, graph, registry=registry, timeout=timeout, now_ms=now)
    return await asyncio.to_thread(
        evaluate, query, graph, registry=registry, timeout=timeout, now_ms=now, history=history
    )


async def topology_query(
    request: Request,
    graph: Graph,
    registry: StepRegistry | None = None,
    history: HistorySource | None = None,
) -> Response:
    try:
        body = await read_json_body(request)
    except ValueError as exc:
        return json_error(400, str(exc))
    query = body.get("GremlinQuery") if isinstance(body, dict) else None
    if not isinstance(query, str) or not query.strip():
        return json_error(400, "GremlinQuery: a Gremlin query string is required")
    try:
        result = await evaluate_query(query, graph, registry, history)
    except QueryError as exc:
        return json_error(400, str(exc))
    except StorageError as exc:  # the topology history could not be read
        return json_error(503, f"topology history: {exc}")
    if DOT_MEDIA_TYPE in request.headers.get("accept", ""):
        return Response(to_dot(result), media_type=DOT_MEDIA_TYPE)
    return Response(orjson.dumps(result), media_type="application/json")
