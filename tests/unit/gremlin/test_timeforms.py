"""Skydive's time forms for At()/Context(): numbers, RFC 1123 dates, Go durations, NOW, FOREVER."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyskydive.gremlin import QuerySyntaxError, parse
from pyskydive.gremlin.ast import Keyword
from pyskydive.gremlin.timeforms import (
    INT32_MAX,
    TimeWindow,
    parse_duration,
    parse_go_duration,
    parse_time,
    time_window,
)

NOW = 1_700_000_000_123  # ms
GO_EPOCH = 1_136_214_245_000  # Mon, 02 Jan 2006 15:04:05 UTC


def window(query: str, now: int = NOW) -> TimeWindow:
    step = parse(query).steps[0]
    return time_window(
        step.args, now, positions=step.arg_positions, step=step.text, step_position=step.position
    )


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (1479899809, 1479899809_000),  # seconds
        (INT32_MAX, INT32_MAX * 1000),  # still seconds
        (INT32_MAX + 1, INT32_MAX + 1),  # milliseconds from there on
        (1479899809_000, 1479899809_000),
        (0, 0),
        ("Mon, 02 Jan 2006 15:04:05 MST", GO_EPOCH),  # a zone name means UTC, as Go on UTC
        ("Mon, 02 Jan 2006 15:04:05 GMT", GO_EPOCH),
        ("Mon, 02 Jan 2006 15:04:05 UTC", GO_EPOCH),
        ("mon, 02 jan 2006 15:04:05 UTC", GO_EPOCH),
        ("Mon, 02 Jan 2006 17:04:05 +0200", GO_EPOCH),
        ("Mon, 02 Jan 2006 10:04:05 -0500", GO_EPOCH),
        ("-1m", NOW - 60_000),
        ("-1h30m", NOW - 5_400_000),
        ("-10s", NOW - 10_000),
        ("-1.5h", NOW - 5_400_000),
        ("-300ms", NOW - 300),
        ("-1500us", NOW - 2),  # floor to the millisecond, as Go's UnixMilli
        ("-2\u00b5s", NOW - 1),
        ("1m", NOW + 60_000),
        ("+1m", NOW + 60_000),
        ("0", NOW),
        ("-.5s", NOW - 500),
        ("-1h2m3s4ms", NOW - 3_723_004),
        (Keyword("NOW", 5), NOW),
    ],
)
def test_times(arg: object, expected: int) -> None:
    assert parse_time(arg, NOW) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (3600, 3_600_000),  # seconds
        (0, 0),
        ("1h", 3_600_000),
        ("90s", 90_000),
        ("1m30s", 90_000),
        (Keyword("FOREVER", 3), NOW),  # Skydive: the time since the epoch
    ],
)
def test_durations(arg: object, expected: int) -> None:
    assert parse_duration(arg, NOW) == expected  # type: ignore[arg-type]


def test_windows_of_at_and_context() -> None:
    assert window("G.At('-1m')") == TimeWindow(NOW - 60_000, NOW - 60_000, point=True)
    assert window("G.At(1479899809, 3600)") == TimeWindow(
        1479899809_000 - 3_600_000, 1479899809_000, point=False
    )
    assert window("G.Context(NOW, FOREVER)") == TimeWindow(0, NOW, point=False)
    assert window("g.at('-1m', '30s')") == TimeWindow(NOW - 90_000, NOW - 60_000, point=False)


@pytest.mark.parametrize(
    ("query", "position", "reason"),
    [
        ("G.At('-1x')", 8, "unknown unit 'x'"),
        ("G.At('-1')", 8, "missing unit"),
        ("G.At('')", 6, "a duration needs a number"),
        ("G.At('-')", 7, "a duration needs a number"),
        ("G.At('yesterday')", 6, "expected a number"),
        ("G.At('-1m', 'soon')", 13, "bad duration"),
        ("G.At('-1m', '-5s')", 12, "is negative"),
        ("G.At(1.5)", 5, "an integer or a string"),
        ("G.At(true)", 5, "an integer or a string"),
        ("G.At(FOREVER)", 5, "FOREVER is not a time"),
        ("G.At(NOW, NOW)", 10, "NOW is not a duration"),
        ("G.At(NOW, 1.5)", 10, "seconds or a string"),
        ("G.At(Within(1))", 5, "an integer or a string"),
        ("G.At()", 2, "at least one parameter"),
        ("G.At(1, 2, 3)", 2, "at most two parameters"),
        ("G.At('Mon, 32 Jan 2006 15:04:05 MST')", 11, "bad date"),
        ("G.At('Xyz, 02 Jan 2006 15:04:05 MST')", 6, "unknown day name"),
        ("G.At('Mon, 02 Foo 2006 15:04:05 MST')", 14, "unknown month"),
        ("G.At('Mon, 02 Jan 2006 25:04:05 MST')", 11, "bad date"),
        ("G.At('Mon, 02 Jan 2006 15:04:05 +2500')", 32, "bad zone offset"),
        ("G.At('2006-01-02T15:04:05Z')", 10, "unknown unit '-'"),
        ("G.At('-99999999999h')", 7, "out of range"),
    ],
)
def test_bad_forms_carry_their_position(query: str, position: int, reason: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        window(query)
    assert info.value.position == position
    assert reason in str(info.value)
    assert str(info.value).startswith(f"position {position}: At: ")
    assert "\n" not in str(info.value)


@given(st.integers(min_value=-(2**40), max_value=INT32_MAX))
def test_small_integers_are_seconds(n: int) -> None:
    assert parse_time(n, NOW) == n * 1000


@given(st.integers(min_value=INT32_MAX + 1, max_value=2**62))
def test_large_integers_are_milliseconds(n: int) -> None:
    assert parse_time(n, NOW) == n


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9999, 1, 1)))
def test_rfc1123_round_trip(when: datetime) -> None:
    when = when.replace(microsecond=0, tzinfo=UTC)
    text = format_datetime(when, usegmt=True)  # 'Mon, 02 Jan 2006 15:04:05 GMT'
    assert parse_time(text, NOW) == int(when.timestamp()) * 1000


@given(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=999),
)
def test_go_duration_round_trip(h: int, m: int, s: int, ms: int) -> None:
    text = f"-{h}h{m}m{s}s{ms}ms"
    expected = ((h * 60 + m) * 60 + s) * 1000 + ms
    assert parse_go_duration(text) == -expected * 1_000_000
    assert parse_time(text, NOW) == NOW - expected


@given(st.text(max_size=40))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        parse_time(text, NOW)
    except QuerySyntaxError as exc:
        assert exc.position >= 0
        assert "\n" not in exc.reason or "\n" in text
