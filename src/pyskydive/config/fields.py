"""Value types shared by the config sections, with the lenient input forms users write.

Each validator accepts what a YAML file or an environment variable naturally gives
(``"30s"``, ``"warn"``, ``"netlink, netns"``) and raises ``ValueError`` with a one-line reason
that quotes the bad value; :mod:`pyskydive.config.validation` puts the dotted key in front.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator

from pyskydive.config.address import Address

__all__ = [
    "KNOWN_PROBES",
    "AddressList",
    "LogLevel",
    "LogLevelName",
    "NonEmptyStr",
    "ProbeList",
    "Seconds",
    "SecondsOrZero",
    "StringList",
    "closest",
]

#: Topology probe names accepted in ``agent.topology.probes``; the probe registry uses the
#: same names.  Add a name here when its probe lands.
KNOWN_PROBES: frozenset[str] = frozenset(
    {"netlink", "netns", "ovsdb", "docker", "neutron", "ethtool"}
)

LogLevelName = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_LEVELS: dict[str, LogLevelName] = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}
_DURATION_RE = re.compile(r"(\d+)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_LIST_SEP_RE = re.compile(r"[,\s]+")


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to ``word`` (difflib), or None when nothing is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def _split_list(value: object) -> object:
    """Let a list be written as one string, ``"a, b"`` or ``"a b"`` (env vars, short YAML)."""
    if isinstance(value, str):
        return [item for item in _LIST_SEP_RE.split(value) if item]
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return value


def _check_probe(name: str) -> str:
    if name not in KNOWN_PROBES:
        hint = closest(name, KNOWN_PROBES)
        known = ", ".join(sorted(KNOWN_PROBES))
        did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
        raise ValueError(f"unknown probe {name!r}{did_you_mean}; known probes: {known}")
    return name


def _no_duplicates(names: list[str]) -> list[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"probe {name!r} listed twice")
        seen.add(name)
    return names


def _parse_seconds(value: object, minimum: int = 1) -> int:
    """A whole number of seconds >= 1: ``30``, ``"30"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"7d"``."""
    seconds: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if match:
            seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    if seconds is None or seconds < minimum:
        raise ValueError(f"expected an integer number of seconds >= {minimum}, got {value!r}")
    return seconds


def _parse_seconds_or_zero(value: object) -> int:
    """As :func:`_parse_seconds`, 0 accepted (it means "no limit")."""
    return _parse_seconds(value, minimum=0)


def _parse_level(value: object) -> LogLevelName:
    """A logging level name, any case; ``warn`` is taken as ``WARNING``."""
    level = _LEVELS.get(value.strip().upper()) if isinstance(value, str) else None
    if level is None:
        names = ", ".join(sorted(set(_LEVELS.values())))
        raise ValueError(f"expected a logging level ({names}), got {value!r}")
    return level


NonEmptyStr = Annotated[str, Field(min_length=1)]
Seconds = Annotated[int, PlainValidator(_parse_seconds)]
SecondsOrZero = Annotated[int, PlainValidator(_parse_seconds_or_zero)]
StringList = Annotated[list[NonEmptyStr], BeforeValidator(_split_list)]
LogLevel = Annotated[LogLevelName, PlainValidator(_parse_level)]
AddressList = Annotated[list[Address], BeforeValidator(_split_list)]
ProbeList = Annotated[
    list[Annotated[str, AfterValidator(_check_probe)]],
    BeforeValidator(_split_list),
    AfterValidator(_no_duplicates),
]
