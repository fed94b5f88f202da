"""The flow stream's subscriber: namespaces, per-batch Gremlin filter, bounded queue with
counted drops; and the endpoint through Starlette's test client."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from pyskydive.analyzer.flows import FlowStore
from pyskydive.api.flow_ws import FlowSubscriber, flow_subscriber_endpoint, make_flow_filter
from pyskydive.errors import QueryError
from pyskydive.graph import Graph

with warnings.catch_warnings():
    # starlette 1.10 asks for the httpx2 fork; the pinned httpx works the same for these tests
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def flow(uuid: str, capture: str = "c1", proto: str = "TCP") -> dict[str, Any]:
    return {
        "UUID": uuid,
        "CaptureID": capture,
        "NodeTID": "",
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": "10.0.0.2", "ID": 0},
        "Transport": {"Protocol": proto, "A": 1, "B": 2, "ID": 0},
        "Metric": {"ABPackets": 1},
    }


def decoded(texts: list[str]) -> list[tuple[str, str, Any]]:
    out = []
    for t in texts:
        m = orjson.loads(t)
        out.append((m["Namespace"], m["Type"], m["Obj"]))
    return out


def uuids(obj: Any) -> list[str]:
    return [f["UUID"] for f in obj]


def test_namespaces_split_a_batch_by_capture() -> None:
    async def main() -> None:
        sub = FlowSubscriber("r", ["flow", "flow/c2"])
        sub.offer([flow("a"), flow("b", "c2"), flow("c", "c3")])
        got = decoded(await sub.next_messages())
        assert [(ns, t, uuids(o)) for ns, t, o in got] == [
            ("flow", "store", ["a", "b", "c"]),
            ("flow/c2", "store", ["b"]),
        ]
        stats = FlowSubscriber("r", ["stats"])
        stats.offer([flow("a")])
        assert stats.messages([flow("a")]) == []

    asyncio.run(main())


def test_slow_subscriber_loses_oldest_batches_and_is_told() -> None:
    async def main() -> None:
        sub = FlowSubscriber("r", ["flow"], limit=2)
        sub.offer([flow("a"), flow("b")])
        sub.offer([flow("c")])
        sub.offer([flow("d")])  # the queue holds 2 batches: [a, b] goes
        got = decoded(await sub.next_messages())
        assert got[0] == ("flow", "dropped", {"Batches": 1, "Flows": 2})
        assert uuids(got[1][2]) == ["c"]
        assert uuids(decoded(await sub.next_messages())[0][2]) == ["d"]  # told only once
        assert sub.status()["DroppedFlows"] == 2 and sub.status()["DroppedBatches"] == 1

        by_flows = FlowSubscriber("r", ["flow"], max_flows=3)
        by_flows.offer([flow("a"), flow("b")])
        by_flows.offer([flow("c"), flow("d")])  # 4 flows queued: [a, b] goes
        by_flows.offer([flow(str(i)) for i in range(5)])  # alone above the bound: kept
        got = decoded(await by_flows.next_messages())
        assert got[0] == ("flow", "dropped", {"Batches": 2, "Flows": 4})
        assert uuids(got[1][2]) == ["0", "1", "2", "3", "4"]

    asyncio.run(main())


def test_filter_runs_over_each_batch_only() -> None:
    keep = make_flow_filter("G.Flows().Has('Transport.Protocol', 'UDP')", Graph(host="h"))
    assert uuids(keep([flow("a"), flow("b", proto="UDP")])) == ["b"]
    assert keep([flow("a")]) == []
    with pytest.raises(QueryError, match="must give flows"):
        make_flow_filter("G.V()", Graph(host="h"))
    with pytest.raises(QueryError):
        make_flow_filter("G.Flows(", Graph(host="h"))


def app(store: FlowStore, limit: int = 1024) -> Starlette:
    async def endpoint(ws: WebSocket) -> None:
        await flow_subscriber_endpoint(ws, store, Graph(host="h"), limit=limit)

    return Starlette(routes=[WebSocketRoute("/ws/subscriber/flow", endpoint)])


def test_endpoint_streams_batches_and_lets_go_of_the_store() -> None:
    store = FlowStore()
    with TestClient(app(store)) as client:
        headers = {"X-Gremlin-Filter": "G.Flows().Has('Transport.Protocol', 'TCP')"}
        with client.websocket_connect("/ws/subscriber/flow", headers=headers) as ws:
            ws.send_text("ignored")  # Skydive ignores what subscribers send
            client.portal.call(_put, store, [flow("a"), flow("b", proto="UDP")])
            msg = ws.receive_json()
            assert (msg["Namespace"], msg["Type"], uuids(msg["Obj"])) == ("flow", "store", ["a"])
        with client.websocket_connect("/ws/subscriber/flow?x-websocket-namespace=flow") as ws:
            client.portal.call(_put, store, [flow("c")])
            assert uuids(ws.receive_json()["Obj"]) == ["c"]
    assert store._listeners == []  # every subscriber unregistered on disconnect


async def _put(store: FlowStore, flows: list[dict[str, Any]]) -> None:
    store.put_many(flows)


def test_endpoint_refuses_a_filter_that_does_not_give_flows() -> None:
    with (
        TestClient(app(FlowStore())) as client,
        client.websocket_connect(
            "/ws/subscriber/flow", headers={"X-Gremlin-Filter": "G.V().Count()"}
        ) as ws,
    ):
        msg = ws.receive_json()
        assert (msg["Namespace"], msg["Type"]) == ("flow", "Error")
        assert msg["Obj"]["Error"].startswith("X-Gremlin-Filter:")
        assert ws.receive()["type"] == "websocket.close"
