"""Fixtures of the Gremlin tests (the graphs come from ``gremlin_graphs``)."""

from __future__ import annotations

import pytest
from gremlin_graphs import GRAPHS

from pyskydive.graph import Graph


@pytest.fixture(scope="session")
def graphs() -> dict[str, Graph]:
    return {name: build() for name, build in GRAPHS.items()}
