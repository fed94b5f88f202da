"""Seed probe paths are accepted wherever a capture query is (DESIGN.md §2.4)."""

from __future__ import annotations

import pytest

from pyskydive.gremlin.probepath import capture_query, is_probe_path


@pytest.mark.parametrize(
    ("text", "gremlin"),
    [
        (
            "host1[Type=host]/br1[Type=ovsbridge]",
            "G.V().Has('Name', 'host1', 'Type', 'host').Out('Name', 'br1', 'Type', 'ovsbridge')",
        ),
        (
            "*/br1[Type=ovsbridge]",
            "G.V().Has('Type', 'host').Out('Name', 'br1', 'Type', 'ovsbridge')",
        ),
        ("G.V().Has('Name', 'eth0')", "G.V().Has('Name', 'eth0')"),
        ("g.V()", "g.V()"),
    ],
)
def test_capture_query(text: str, gremlin: str) -> None:
    assert capture_query(text) == gremlin


def test_gremlin_with_mistakes_is_left_to_the_gremlin_parser() -> None:
    assert not is_probe_path("V(")
    assert not is_probe_path("G")
    assert is_probe_path("host1/eth0")


def test_bad_probe_path_says_why() -> None:
    with pytest.raises(ValueError, match="probe path"):
        capture_query("host1//eth0")
