"""The Arrow staging of flow batches (the C extension ``pyskydive.storage._flowarrow``).

Its oracle is the NDJSON staging: for any batch C accepts, the rows DuckDB stores from the
Arrow batch must be the rows it stores from the NDJSON text of the same flows; C must decline
exactly the batches holding a value it cannot convert exactly (those go as NDJSON).
"""

from __future__ import annotations

import collections
import gc
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyskydive.storage import embedded_flows as ef

if not ef.COMPILED and os.environ.get("PYSKYDIVE_REQUIRE_COMPILED") == "1":
    pytest.fail("pyskydive.storage._flowarrow did not build or load", pytrace=False)
pytestmark = pytest.mark.skipif(
    not ef.COMPILED, reason="the C extension pyskydive.storage._flowarrow is not built"
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def flow(uuid: str, last: int, **extra: Any) -> dict[str, Any]:
    metric = {"ABPackets": 1, "ABBytes": last, "BAPackets": 0, "BABytes": 0, "Start": 0}
    return {
        "UUID": uuid,
        "LayersPath": "Ethernet/IPv4/TCP",
        "NodeTID": "tid",
        "Start": 0,
        "Last": last,
        "Metric": {**metric, "Last": last, "RTT": 5},
        "LastUpdateMetric": {**metric, "Last": last},
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": "10.0.0.2", "ID": 0},
        **extra,
    }


def arrow(flows: list[Mapping[str, Any]]) -> Any:
    batch = ef.new_arrow_batch()
    assert ef.stage_arrow(batch, flows)
    return batch


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    ef.create_flow_tables(c)
    yield c
    c.close()


def stored(con: duckdb.DuckDBPyConnection) -> tuple[list[Any], list[Any]]:
    flows = con.execute("SELECT * FROM flows ORDER BY UUID").fetchall()
    metrics = con.execute("SELECT * FROM metrics ORDER BY ALL").fetchall()
    return flows, metrics


def test_a_batch_reads_back_as_its_flows(con: duckdb.DuckDBPyConnection) -> None:
    flows = [
        flow("u1", 10, Application="é✓ 𝄞", ICMP=None, Link={"A": "m1"}),
        flow("u2", 20, Custom={"k": [1, 2]}, Extra="a key named Extra"),
        {"UUID": "u3"},  # every other column NULL
    ]
    ef.write_flow_batch(con, flows, Path("/nonexistent"), arrow(flows))
    got = ef.query_flows(con, 0, 100)
    by_uuid = {f["UUID"]: f for f in got}
    assert by_uuid["u1"]["Application"] == "é✓ 𝄞"
    assert by_uuid["u1"]["Link"] == {"A": "m1"}
    assert "ICMP" not in by_uuid["u1"]
    assert by_uuid["u2"] == flows[1]
    assert con.execute("SELECT * EXCLUDE (UUID) FROM flows WHERE UUID = 'u3'").fetchone() == (
        (None,) * (len(ef.FLOW_COLUMNS) - 1)
    )


def test_the_last_update_of_a_uuid_wins_across_slices(con: duckdb.DuckDBPyConnection) -> None:
    n = 3 * ef._ARROW_SLICE + 17  # several C calls: a later one supersedes rows of an earlier one
    flows = [flow(f"u{i % 1000}", i) for i in range(n)]
    batch = arrow(flows)
    assert (len(batch), batch.latest) == (n, 1000)
    ef.write_flow_batch(con, flows, Path("/nonexistent"), batch)
    lasts = dict(con.execute("SELECT UUID, Last FROM flows").fetchall())
    assert lasts == {f"u{u}": max(i for i in range(n) if i % 1000 == u) for u in range(1000)}
    assert con.execute("SELECT count(*) FROM metrics").fetchone() == (n,)


def test_a_batch_scans_again_and_outlives_its_object(con: duckdb.DuckDBPyConnection) -> None:
    batch = arrow([flow("u1", 1), flow("u2", 2)])
    con.register("b", batch)
    assert con.execute("SELECT count(*) FROM b").fetchall() == [(2,)]
    assert con.execute("SELECT sum(Last) FROM b WHERE _latest").fetchall() == [(3,)]
    con.unregister("b")
    with pytest.raises(RuntimeError, match="exported"):
        batch.append([flow("u3", 3)])
    capsule = batch.__arrow_c_stream__()  # noqa: F841 (read by DuckDB, by name)
    del batch
    gc.collect()  # the buffers belong to the exported stream now
    assert con.execute("SELECT list(UUID ORDER BY UUID) FROM capsule").fetchone() == (["u1", "u2"],)


@pytest.mark.parametrize(
    "bad",
    [
        {"Start": True},
        {"Start": 1.0},
        {"Start": "1"},
        {"Start": INT64_MAX + 1},
        {"Last": INT64_MIN - 1},
        {"Application": 7},
        {"Application": "\ud800"},
        {"Metric": [1, 2]},
        {"Metric": {"ABBytes": 2.5}},
        {"Network": {"A": 10}},
        {1: "a non-string key"},
        {"Custom": {1, 2}},  # not JSON
    ],
)
def test_c_declines_what_it_cannot_convert_exactly(bad: dict[Any, Any]) -> None:
    batch = ef.new_arrow_batch()
    assert not ef.stage_arrow(batch, [flow("ok", 1), {**flow("odd", 2), **bad}])
    assert not batch.usable
    assert not batch.append([flow("later", 3)])  # declined for good: stage it all as NDJSON
    with pytest.raises(RuntimeError, match="JSON"):
        batch.__arrow_c_stream__()


class Key(str):
    """A str subclass: Python compares it by its own methods, C will not."""


@pytest.mark.parametrize(
    "odd",
    [
        {Key("Start"): 5, **flow("u1", 1)},  # the first key object of an equal pair stays
        collections.OrderedDict(flow("u1", 1)),  # NDJSON takes other mappings with dict()
    ],
    ids=["str-subclass-key", "dict-subclass"],
)
def test_c_declines_odd_keys_and_mappings(odd: dict[Any, Any]) -> None:
    assert not ef.stage_arrow(ef.new_arrow_batch(), [odd])


class OddHash(str):
    def __hash__(self) -> int:  # equal strings, unequal hashes: Python's dedup would miss it
        return id(self)


def test_the_latest_update_is_found_by_the_uuid_text(con: duckdb.DuckDBPyConnection) -> None:
    flows = [flow(OddHash("u1"), 1), flow(OddHash("u1"), 2)]
    batch = arrow(flows)
    assert batch.latest == 1
    ef.write_flow_batch(con, flows, Path("/nonexistent"), batch)
    assert con.execute("SELECT UUID, Last FROM flows").fetchall() == [("u1", 2)]


def test_keys_that_are_not_ours_match_by_value(con: duckdb.DuckDBPyConnection) -> None:
    # orjson.loads makes its own key objects (as the analyzer's flows have): matched by
    # value once, then by identity
    flows = orjson.loads(orjson.dumps([flow(f"u{i}", i, Custom=i) for i in range(50)]))
    assert next(iter(flows[0])) is not sys.intern("UUID")
    ef.write_flow_batch(con, flows, Path("/nonexistent"), arrow(flows))
    assert stored(con) == _ndjson(flows)


def test_int64_bounds_are_exact(con: duckdb.DuckDBPyConnection) -> None:
    flows = [flow("lo", 1, Start=INT64_MIN), flow("hi", 1, Start=INT64_MAX)]
    ef.write_flow_batch(con, flows, Path("/nonexistent"), arrow(flows))
    assert dict(con.execute("SELECT UUID, Start FROM flows").fetchall()) == {
        "lo": INT64_MIN,
        "hi": INT64_MAX,
    }


# -- the NDJSON staging as the oracle --------------------------------------------------------

_odd = st.one_of(st.booleans(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2))
_int = st.one_of(st.none(), st.integers(INT64_MIN, INT64_MAX), st.integers(INT64_MAX, 2**64), _odd)
_text = st.one_of(st.none(), st.text(max_size=8), st.integers(0, 9), _odd)


def _value(kind: ef.Kind) -> st.SearchStrategy[Any]:
    if kind == "BIGINT":
        return _int
    if kind == "VARCHAR":
        return _text
    assert isinstance(kind, tuple)
    fields = st.fixed_dictionaries({}, optional={name: _value(k) for name, k in kind})
    with_unknown = st.builds(lambda d: {**d, "Unknown": 1}, fields)
    return st.one_of(st.none(), fields, with_unknown, _odd)


def _make_flow(uuid: str, fields: dict[str, Any], extra: dict[str, Any], reload: bool) -> Any:
    flow = {"UUID": uuid, **fields, **extra}
    if reload:  # keys and values as the analyzer gets them off the wire
        try:
            return orjson.loads(orjson.dumps(flow))
        except TypeError:
            pass
    return flow


_flow = st.builds(
    _make_flow,
    st.sampled_from(["u1", "u2", "u3"]),
    st.fixed_dictionaries(
        {}, optional={name: _value(kind) for name, kind in ef.FLOW_SCHEMA if name != "UUID"}
    ),
    st.dictionaries(st.sampled_from(["Custom", "Extra", "RawPackets"]), st.integers(0, 3)),
    st.booleans(),
)


def _exact(value: Any, kind: ef.Kind) -> bool:
    """Whether C converts ``value`` exactly (the rules of _flowarrow.c, restated)."""
    if value is None:
        return True
    if kind == "BIGINT":
        return type(value) is int and INT64_MIN <= value <= INT64_MAX
    if kind == "VARCHAR":
        return isinstance(value, str)
    assert isinstance(kind, tuple)
    return isinstance(value, dict) and all(
        _exact(value.get(name), k) for name, k in kind if name in value
    )


def _ndjson(flows: list[dict[str, Any]]) -> tuple[list[Any], list[Any]] | str:
    con = duckdb.connect()
    ef.create_flow_tables(con)
    staged = None
    try:
        staged = [ef.stage_flows(flows)]
    except TypeError as exc:  # not JSON: the store rejects such a flow too
        return type(exc).__name__
    fd = os.memfd_create("skt-flowarrow", os.MFD_CLOEXEC)  # the store's staging file
    try:
        ef.write_flow_batch(con, flows, Path(f"/proc/self/fd/{fd}"), staged)
    except duckdb.Error as exc:
        return type(exc).__name__
    finally:
        os.close(fd)
    return stored(con)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_flow, min_size=1, max_size=6))
def test_arrow_stores_what_ndjson_stores(flows: list[dict[str, Any]]) -> None:
    exact = all(
        _exact(f.get(name), kind) for f in flows for name, kind in ef.FLOW_SCHEMA if name != "Extra"
    )
    batch = ef.new_arrow_batch()
    accepted = ef.stage_arrow(batch, flows)
    assert accepted == exact
    if not accepted:
        return
    con = duckdb.connect()
    ef.create_flow_tables(con)
    ef.write_flow_batch(con, flows, Path("/nonexistent"), batch)
    assert stored(con) == _ndjson(flows)
