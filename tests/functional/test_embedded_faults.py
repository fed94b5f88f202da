"""The embedded store when its disk fills up: a real tmpfs mounted for the test (root).

DuckDB fails the commit (``No space left on device``); the store keeps the batch, reports the
error and the backlog, retries, and once there is room again writes everything, with both
stagings of flow batches (Arrow, built in C, and NDJSON).
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyskydive.storage import embedded_flows
from pyskydive.storage.base import FlowQuery, Revision
from pyskydive.storage.embedded import EmbeddedStore


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs; ``remount(size)`` grows it."""
    mnt = tmp_path / "skt-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "skt-tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def flows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """``n`` updates of n // 2 flows with random ids (what compresses least)."""
    out = []
    for i in range(n):
        uuid = f"{rng.getrandbits(64):016x}{i % (n // 2):08x}"
        start = 1_767_225_600_000 + i
        metric = {"ABPackets": i, "ABBytes": 60 * i, "BAPackets": 1, "BABytes": 60}
        out.append(
            {
                "UUID": uuid if i < n // 2 else out[i - n // 2]["UUID"],
                "TrackingID": f"{rng.getrandbits(128):032x}",
                "L3TrackingID": f"{rng.getrandbits(128):032x}",
                "NodeTID": "skt-node",
                "Start": start,
                "Last": start + i,
                "Metric": {**metric, "Start": start, "Last": start + i},
                "LastUpdateMetric": {**metric, "Start": start, "Last": start + i},
                "Network": {"Protocol": "IPV4", "A": f"10.0.{i % 250}.1", "B": "10.1.0.1"},
            }
        )
    return out


def remount(mnt: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("staging", ["arrow", "ndjson"])
def test_a_full_disk_loses_nothing(
    small_disk: Path, staging: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if staging == "arrow" and not embedded_flows.COMPILED:
        if os.environ.get("PYSKYDIVE_REQUIRE_COMPILED") == "1":
            pytest.fail("pyskydive.storage._flowarrow did not build or load")
        pytest.skip("the C extension pyskydive.storage._flowarrow is not built")
    monkeypatch.setenv("PYSKYDIVE_PURE", "1" if staging == "ndjson" else "0")
    rng = random.Random(20261207)
    first = flows(rng, 20_000)  # ~4 MiB stored: more than the disk holds
    store = EmbeddedStore(small_disk / "store", retry_interval=0.2)
    try:
        assert store.compiled == (staging == "arrow")
        store.write_flows(first)
        deadline = time.monotonic() + 60
        while store.status().connected and time.monotonic() < deadline:
            time.sleep(0.05)
        store.record([Revision("node", "n1", {"ID": "n1", "Metadata": {"Name": "eth0"}}, 1)])
        status = store.status()
        assert not status.connected
        assert "No space left on device" in status.last_error
        assert status.queued == 20_001  # every flow and the revision, held for the retry
        assert status.dropped == 0

        remount(small_disk, "256m")
        second = flows(rng, 20_000)
        store.write_flows(second)
        assert store.flush(120)
        status = store.status()
        assert status.connected and status.queued == 0 and status.dropped == 0
        assert status.written == 40_001
    finally:
        store.close()

    updates = first + second
    latest = {f["UUID"]: f for f in updates}
    with EmbeddedStore(small_disk / "store") as again:  # and all of it is on the disk
        stored = again.query_flows(FlowQuery(0, 2**62))
        assert len(stored) == len(latest)
        assert {f["UUID"]: f["Last"] for f in stored} == {u: f["Last"] for u, f in latest.items()}
        assert again.sql("SELECT count(*) FROM metrics") == [(len(updates),)]
        assert again.live()[0] == [{"ID": "n1", "Metadata": {"Name": "eth0"}}]
