"""Graphs the Gremlin tests query: Skydive's real reference topology and a small own graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyskydive.graph import Graph

# shared/ sits beside the repository (in CI too: a copy beside the clone).
REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "skydive-0.3"
DATA = Path(__file__).resolve().parents[2] / "data" / "gremlin"


def load_topology(doc: dict[str, Any], host: str = "sk-anchor-host") -> Graph:
    """A graph from a ``GET /api/topology`` document; fills fields the 2016 build lacked."""
    graph = Graph(host, clock=lambda: 1_000)
    for i, n in enumerate(doc["Nodes"]):
        graph.add_node(
            n["ID"],
            n["Metadata"],
            origin=n.get("Origin", f"agent.{host}"),
            host=n.get("Host", host),
            created_at=n.get("CreatedAt", i * 1000),
            updated_at=n.get("UpdatedAt", i * 1000),
            revision=n.get("Revision", 1),
        )
    for i, e in enumerate(doc["Edges"]):
        graph.add_edge(
            e["ID"],
            e["Parent"],
            e["Child"],
            e["Metadata"],
            origin=e.get("Origin", f"agent.{host}"),
            host=e.get("Host", host),
            created_at=e.get("CreatedAt", i * 1000),
            updated_at=e.get("UpdatedAt", i * 1000),
            revision=e.get("Revision", 1),
        )
    return graph


def _small() -> Graph:
    doc = json.loads((DATA / "small-topology.json").read_text())
    return load_topology(doc, host="host1")


def need_reference() -> None:
    """Skip (with the reason) where shared/ is not beside the repository; CI has it."""
    if not REFERENCE.is_dir():
        pytest.skip(f"the reference captures are not at {REFERENCE}")


def _reference() -> Graph:
    need_reference()
    doc = json.loads((REFERENCE / "skydive-topology-scenario.json").read_text())
    return load_topology(doc)


GRAPHS = {"small": _small, "reference": _reference}
