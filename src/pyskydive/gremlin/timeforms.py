"""Skydive's time forms for ``At(t[, d])`` / ``Context(...)`` (DESIGN.md §2.4), pure.

Semantics are Skydive v0.28's (``graffiti/graph/traversal/traversal_parser.go``,
``GremlinTraversalStepContext.Exec``, and ``parseTimeContext``):

* the time ``t``:

  - an integer: Unix **seconds**, or Unix **milliseconds** when it is larger than
    2**31 - 1 (``At(1500000000)`` and ``At(1500000000000)`` are the same instant);
  - a string in RFC 1123 form, ``'Mon, 02 Jan 2006 15:04:05 MST'``. As Go's ``time.Parse``
    does on a UTC host, a zone abbreviation is not looked up: it means UTC (``GMT``, ``UTC``,
    ``MST`` alike). A numeric offset (``+0200``, RFC 1123 allows it) is applied;
  - a string in Go duration form, relative to now: ``'-1m'``, ``'-1h30m'``, ``'-10s'``,
    ``'-1.5h'``, ``'-300ms'`` (units ``ns``, ``us``, ``µs``, ``ms``, ``s``, ``m``, ``h``;
    a positive duration is in the future);
  - ``NOW``.

* the duration ``d``: an integer number of **seconds**, a Go duration string (``'1h'``), or
  ``FOREVER`` (since the Unix epoch: Skydive subtracts the current time). A negative duration
  is refused here (Skydive would silently answer an empty window).

``At(t)`` is the graph as it was at ``t``; ``At(t, d)`` every element that existed at some
point of ``[t - d, t]``, each in its latest revision in that window.

Every error is a :class:`~pyskydive.gremlin.errors.QuerySyntaxError` carrying the position of
the offending character in the query text (the argument's, plus the offset inside a string).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction

from pyskydive.gremlin.ast import Arg, Keyword
from pyskydive.gremlin.errors import QuerySyntaxError

__all__ = [
    "INT32_MAX",
    "TimeWindow",
    "parse_duration",
    "parse_go_duration",
    "parse_rfc1123",
    "parse_time",
    "time_window",
]

#: Integers above this are milliseconds, at or below seconds (Go's ``math.MaxInt32``).
INT32_MAX = 2**31 - 1

_NS_PER_MS = 1_000_000
_INT64_MAX = 2**63 - 1

_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_RFC1123 = re.compile(
    r"(?P<wd>[A-Za-z]{3}), (?P<day>\d{2}) (?P<mon>[A-Za-z]{3}) (?P<year>\d{4}) "
    r"(?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2}) (?P<zone>[A-Za-z]{3,5}|[+-]\d{4})",
    re.ASCII,
)


class _FormError(ValueError):
    """A bad form: ``offset`` in the string, and why."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """What ``At``/``Context`` asks for, in Unix ms: the instant ``end`` when ``point``,
    else every element alive at some point of ``[start, end]``."""

    start: int
    end: int
    point: bool


def parse_go_duration(text: str) -> int:
    """A Go ``time.ParseDuration`` string in nanoseconds (``ValueError`` with an offset)."""
    i, n = 0, len(text)
    negative = False
    if i < n and text[i] in "+-":
        negative = text[i] == "-"
        i += 1
    if text[i:] == "0":
        return 0
    if i == n:
        raise _FormError(i, "a duration needs a number and a unit, such as -1m or 1h30m")
    total = Fraction(0)
    while i < n:
        start = i
        while i < n and text[i].isdigit() and text[i].isascii():
            i += 1
        whole = text[start:i]
        frac = ""
        if i < n and text[i] == ".":
            i += 1
            f0 = i
            while i < n and text[i].isdigit() and text[i].isascii():
                i += 1
            frac = text[f0:i]
        if not whole and not frac:
            raise _FormError(start, f"expected a number, got {text[start : start + 1]!r}")
        u0 = i
        while i < n and not (text[i].isdigit() and text[i].isascii()) and text[i] != ".":
            i += 1
        unit = text[u0:i]
        if not unit:
            raise _FormError(u0, "missing unit (ns, us, ms, s, m or h)")
        scale = _UNITS.get(unit)
        if scale is None:
            raise _FormError(u0, f"unknown unit {unit!r} (ns, us, ms, s, m or h)")
        value = Fraction(int(whole or "0"))
        if frac:
            value += Fraction(int(frac), 10 ** len(frac))
        total += value * scale
        if total > _INT64_MAX:
            raise _FormError(start, "duration out of range")
    ns = int(total)  # truncated toward zero, as Go does
    return -ns if negative else ns


def parse_rfc1123(text: str) -> int | None:
    """An RFC 1123 date in Unix ms; ``None`` if ``text`` is not in that shape at all."""
    m = _RFC1123.fullmatch(text)
    if m is None:
        return None
    if m["wd"].lower() not in _DAYS:
        raise _FormError(m.start("wd"), f"unknown day name {m['wd']!r}")
    month = m["mon"].lower()
    if month not in _MONTHS:
        raise _FormError(m.start("mon"), f"unknown month {m['mon']!r}")
    zone = m["zone"]
    tz = UTC
    if zone[0] in "+-":
        hours, minutes = int(zone[1:3]), int(zone[3:5])
        if hours > 23 or minutes > 59:
            raise _FormError(m.start("zone"), f"bad zone offset {zone!r}")
        offset = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-offset if zone[0] == "-" else offset)
    try:
        when = datetime(
            int(m["year"]),
            _MONTHS.index(month) + 1,
            int(m["day"]),
            int(m["h"]),
            int(m["m"]),
            int(m["s"]),
            tzinfo=tz,
        )
    except ValueError as exc:
        raise _FormError(m.start("day"), f"bad date: {exc}") from exc
    return int(when.timestamp()) * 1000


def _error(step: str, position: int, what: str, reason: str) -> QuerySyntaxError:
    return QuerySyntaxError(position, f"{step}: bad {what}: {reason}")


def _string_offset(position: int, offset: int) -> int:
    """Position in the query of ``offset`` inside a string literal starting at ``position``."""
    return position + 1 + offset


def parse_time(arg: Arg, now_ms: int, *, position: int = 0, step: str = "At") -> int:
    """The instant (Unix ms) that ``At``'s first argument names."""
    if isinstance(arg, Keyword):
        if arg.name == "NOW":
            return now_ms
        raise _error(step, arg.position, "time", f"{arg.name} is not a time (NOW is)")
    if isinstance(arg, bool | float):
        raise _error(step, position, "time", f"{arg!r}: an integer or a string is expected")
    if isinstance(arg, int):
        return arg if arg > INT32_MAX else arg * 1000
    if isinstance(arg, str):
        try:
            at = parse_rfc1123(arg)
            if at is not None:
                return at
            return (now_ms * _NS_PER_MS + parse_go_duration(arg)) // _NS_PER_MS
        except _FormError as exc:
            raise _error(
                step,
                _string_offset(position, exc.offset),
                "time",
                f"{arg!r}: {exc.reason} (an RFC 1123 date or a duration such as '-1m')",
            ) from exc
    raise _error(step, getattr(arg, "position", position), "time", "an integer or a string")


def parse_duration(arg: Arg, now_ms: int, *, position: int = 0, step: str = "At") -> int:
    """The length (ms) that ``At``'s second argument names."""
    if isinstance(arg, Keyword):
        if arg.name == "FOREVER":
            return now_ms  # Skydive: time.Duration(time.Now().UnixNano())
        raise _error(step, arg.position, "duration", f"{arg.name} is not a duration (FOREVER is)")
    if isinstance(arg, bool | float):
        raise _error(step, position, "duration", f"{arg!r}: seconds or a string is expected")
    if isinstance(arg, int):
        ms = arg * 1000
    elif isinstance(arg, str):
        try:
            ms = parse_go_duration(arg) // _NS_PER_MS
        except _FormError as exc:
            raise _error(
                step, _string_offset(position, exc.offset), "duration", f"{arg!r}: {exc.reason}"
            ) from exc
    else:
        raise _error(step, getattr(arg, "position", position), "duration", "seconds or a string")
    if ms < 0:
        raise _error(step, position, "duration", f"{arg!r} is negative")
    return ms


def time_window(
    args: tuple[Arg, ...],
    now_ms: int,
    *,
    positions: tuple[int, ...] = (),
    step: str = "At",
    step_position: int = 0,
) -> TimeWindow:
    """The window ``At(args)`` asks for; ``positions`` are the arguments' offsets."""
    if not args:
        raise QuerySyntaxError(step_position, f"{step}: at least one parameter is required")
    if len(args) > 2:
        raise QuerySyntaxError(step_position, f"{step}: at most two parameters are accepted")
    pos = positions if len(positions) == len(args) else (step_position,) * len(args)
    at = parse_time(args[0], now_ms, position=pos[0], step=step)
    if len(args) == 1:
        return TimeWindow(at, at, point=True)
    duration = parse_duration(args[1], now_ms, position=pos[1], step=step)
    return TimeWindow(at - duration, at, point=False)
