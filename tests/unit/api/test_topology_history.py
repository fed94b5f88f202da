"""POST /api/topology with time travel and flows in the past, through the real app.

The analyzer's pieces as ``build_app`` gets them: a live graph whose history is recorded in a
MemoryHistory, flows stored in a real EmbeddedStore, a live FlowStore, the flow steps.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyskydive.analyzer.flow_steps import build_flow_registry
from pyskydive.analyzer.flows import FlowStore
from pyskydive.api.app import ServiceContext, build_app
from pyskydive.api.broadcast import Broadcaster
from pyskydive.graph import Graph, HistoryRecorder, MemoryHistory
from pyskydive.storage.base import FlowQuery
from pyskydive.storage.embedded import EmbeddedStore

with warnings.catch_warnings():
    # starlette 1.10 asks for the httpx2 fork; the pinned httpx works the same for these tests
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

T0 = 1_700_000_000_000


def _on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Reads:
    """The real backends, noting every read made from a thread running an event loop."""

    def __init__(self, history: MemoryHistory, store: EmbeddedStore) -> None:
        self.history = history
        self.store = store
        self.on_loop: list[str] = []
        self.count = 0

    def _note(self, what: str) -> None:
        self.count += 1
        if _on_a_loop():
            self.on_loop.append(what)

    # TopologyBackend
    def record(self, revisions: Any) -> None:
        self.history.record(revisions)

    def graph_at(self, t: int) -> Any:
        self._note("graph_at")
        return self.history.graph_at(t)

    def graph_during(self, start: int, end: int) -> Any:
        self._note("graph_during")
        return self.history.graph_during(start, end)

    def live(self) -> Any:
        return self.history.live()

    def revisions(self, kind: Any, ids: Iterable[str], start: int, end: int) -> Any:
        self._note("revisions")
        return self.history.revisions(kind, ids, start, end)

    # FlowBackend
    def write_flows(self, flows: Any) -> None:
        self.store.write_flows(flows)

    def query_flows(self, query: FlowQuery) -> Any:
        self._note("query_flows")
        return self.store.query_flows(query)

    def metrics(self, uuids: Iterable[str], start: int, end: int) -> Any:
        self._note("metrics")
        return self.store.metrics(uuids, start, end)


class Analyzer:
    def __init__(self, tmp_path: Path) -> None:
        self.t = T0
        self.graph = Graph("h1", clock=lambda: self.t)
        history = MemoryHistory(clock=lambda: self.t)
        HistoryRecorder(history.record).attach(self.graph)
        self.store = EmbeddedStore(tmp_path / "store")
        self.reads = Reads(history, self.store)
        eth = self.graph.add_node(
            "eth0", {"Name": "eth0", "Type": "veth", "TID": "tid-0"}, origin="o"
        )
        self.t = T0 + 10_000
        self.graph.update_node(
            eth, {"LastUpdateMetric": {"ABPackets": 4, "Start": T0, "Last": self.t}}
        )
        self.t = T0 + 20_000
        self.graph.delete_node(eth)
        self.store.write_flows(
            [
                {
                    "UUID": "past",
                    "NodeTID": "tid-0",
                    "Start": T0 + 1000,
                    "Last": T0 + 9000,
                    "LastUpdateMetric": {"ABPackets": 7, "Start": T0 + 1000, "Last": T0 + 9000},
                }
            ]
        )
        assert self.store.flush()
        self.live = FlowStore()
        self.live.put({"UUID": "live", "NodeTID": "tid-1", "Metric": {"ABPackets": 1}})
        ctx = ServiceContext(
            service="analyzer",
            host_id="h1",
            graph=self.graph,
            broadcaster=Broadcaster(self.graph),
            flows=self.live,
            gremlin_steps=build_flow_registry(
                self.live, backend=self.reads, topology=self.reads, flow_expire_ms=0
            ),
            history=self.reads,
        )
        self.client = TestClient(build_app(ctx))

    def query(self, text: str) -> Any:
        return self.client.post("/api/topology", json={"GremlinQuery": text})


@pytest.fixture
def analyzer(tmp_path: Path) -> Iterator[Analyzer]:
    a = Analyzer(tmp_path)
    yield a
    a.client.close()
    a.store.close()


def test_flows_in_a_window_through_the_api(analyzer: Analyzer) -> None:
    window = f"G.At({T0 + 10_000}, 10)"
    got = analyzer.query(f"{window}.V().Has('Name', 'eth0').Flows()")
    assert got.status_code == 200, got.text
    assert [f["UUID"] for f in got.json()] == ["past"]
    got = analyzer.query(f"{window}.Flows().Metrics()")
    assert got.json() == [{"past": [{"ABPackets": 7, "Start": T0 + 1000, "Last": T0 + 9000}]}]
    got = analyzer.query(f"{window}.V().Metrics().Sum('ABPackets')")
    assert got.json() == 4
    # every read of storage ran in a worker thread, none on the loop
    assert analyzer.reads.count >= 6 and analyzer.reads.on_loop == []
    # live queries see the live store only
    assert [f["UUID"] for f in analyzer.query("G.Flows()").json()] == ["live"]
    assert analyzer.query("G.V().Has('Name', 'eth0').Count()").json() == 0


def test_errors_of_windowed_queries_are_400(analyzer: Analyzer) -> None:
    got = analyzer.query(f"G.At({T0}).Flows().Metrics('x')")
    assert got.status_code == 400
    assert got.json()["Error"].startswith("position ")
    analyzer.store.close()
    got = analyzer.query(f"G.At({T0 + 10_000}, 10).Flows()")
    assert got.status_code == 400
    assert "flow storage" in got.json()["Error"]
