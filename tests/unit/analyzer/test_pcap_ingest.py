"""POST /api/pcap: pcap bytes → flows with the packets' own timestamps; bad bodies are 400."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from pcap_sample import T0_MS, sample_pcap, sample_records
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pyskydive.analyzer.flows import FlowStore
from pyskydive.api.pcap import PcapIngest, pcap_upload
from pyskydive.errors import ProtocolError
from pyskydive.protocols.pcap import LINKTYPE_RAW, write_pcap

with warnings.catch_warnings():
    # starlette 1.x prefers "httpx2" for its test client; httpx (a test dependency) works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def by_path(flows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["LayersPath"]: f for f in flows}


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_ingest_in_chunks(chunk: int) -> None:
    ingest = PcapIngest("cap1")
    data = sample_pcap()
    for i in range(0, len(data), chunk):
        ingest.feed(data[i : i + chunk])
    ingest.finish()
    assert ingest.summary() == {"Packets": 9, "Flows": 3, "DecodeErrors": 0, "CaptureID": "cap1"}
    flows = by_path(list(ingest.flows.values()))
    icmp = flows["Ethernet/IPv4/ICMPv4"]
    assert icmp["Network"]["A"] == "10.0.0.1" and icmp["Network"]["B"] == "10.0.0.2"
    assert icmp["Metric"]["ABPackets"] == 1 and icmp["Metric"]["BAPackets"] == 1
    assert (icmp["Start"], icmp["Last"]) == (T0_MS, T0_MS + 5)
    assert icmp["Metric"]["RTT"] == 5_000_000  # nanoseconds
    tcp = flows["Ethernet/IPv4/TCP"]
    assert (tcp["Metric"]["ABPackets"], tcp["Metric"]["BAPackets"]) == (4, 2)
    assert (tcp["Transport"]["A"], tcp["Transport"]["B"]) == (40000, 80)
    assert tcp["FinishType"] == "TCP_FIN"
    assert tcp["Metric"]["RTT"] == 10_000_000  # SYN → SYN/ACK
    assert (tcp["Start"], tcp["Last"]) == (T0_MS + 100, T0_MS + 202)
    dns = flows["Ethernet/IPv4/UDP/DNS"]
    assert dns["Application"] == "DNS" and dns["Network"]["B"] == "10.0.0.3"
    assert all(f["NodeTID"] == "" and f["CaptureID"] == "cap1" for f in flows.values())


def test_decode_errors_are_counted() -> None:
    records = [*sample_records(), (T0_MS * 1_000_000 + 400_000_000, sample_records()[2][1][:40])]
    ingest = PcapIngest("c")
    ingest.feed(write_pcap(records))
    ingest.finish()
    assert ingest.summary()["DecodeErrors"] == 1 and ingest.summary()["Packets"] == 10


def test_truncated_and_unsupported() -> None:
    ingest = PcapIngest("c")
    ingest.feed(sample_pcap()[:-3])
    with pytest.raises(ProtocolError):
        ingest.finish()
    ingest = PcapIngest("c")
    with pytest.raises(ProtocolError, match="link type"):
        ingest.feed(write_pcap(sample_records(), linktype=LINKTYPE_RAW))


@pytest.fixture
def client_store() -> tuple[TestClient, FlowStore]:
    store = FlowStore()

    async def pcap(request: Request) -> Response:
        return await pcap_upload(request, store)

    app = Starlette(routes=[Route("/api/pcap", pcap, methods=["POST"])])
    return TestClient(app), store


def test_upload(client_store: tuple[TestClient, FlowStore]) -> None:
    client, store = client_store
    r = client.post("/api/pcap", content=sample_pcap())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["Packets"] == 9 and body["Flows"] == 3 and body["DecodeErrors"] == 0
    assert len(store) == 3
    assert {f.get("CaptureID") for f in store.flows()} == {body["CaptureID"]}
    r2 = client.post("/api/pcap", content=sample_pcap())
    assert r2.json()["CaptureID"] != body["CaptureID"] and len(store) == 6


def test_bad_bodies_are_400_and_store_nothing(client_store: tuple[TestClient, FlowStore]) -> None:
    client, store = client_store
    r = client.post("/api/pcap", content=b"")
    assert r.status_code == 400 and "empty" in r.json()["Error"]
    r = client.post("/api/pcap", content=b"this is not a pcap file at all, no")
    assert r.status_code == 400 and "magic" in r.json()["Error"] and r.json()["Offset"] == 0
    r = client.post("/api/pcap", content=sample_pcap()[:-3])
    assert r.status_code == 400 and "truncated" in r.json()["Error"]
    assert len(store) == 0
