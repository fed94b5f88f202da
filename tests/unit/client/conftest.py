"""The client tests' analyzer stand-in (client_standin.py), as the ``standin`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from client_standin import StandIn, serve


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    """A running stand-in, the only analyzer the client sees (SKYDIVE_ANALYZERS)."""
    for name in ("SKYDIVE_ANALYZERS", "SKYDIVE_USERNAME", "SKYDIVE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with serve() as state:
        monkeypatch.setenv("SKYDIVE_ANALYZERS", state.address)
        yield state
