"""RFC 6902 JSON Patch: every operation, pointers with escapes, all-or-nothing errors."""

from __future__ import annotations

from typing import Any

import pytest

from pyskydive.api.jsonpatch import PatchError, apply_patch, parse_pointer

DOC: dict[str, Any] = {"a": {"b": 1, "c/d": 2, "e~f": 3}, "l": [1, 2, 3]}


def test_pointers() -> None:
    assert parse_pointer("") == []
    assert parse_pointer("/a/c~1d") == ["a", "c/d"]
    assert parse_pointer("/a/e~0f") == ["a", "e~f"]
    assert parse_pointer("/a/~01") == ["a", "~1"]
    with pytest.raises(PatchError):
        parse_pointer("a")


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ([{"op": "add", "path": "/x", "value": 1}], {**DOC, "x": 1}),
        ([{"op": "add", "path": "/l/1", "value": 9}], {**DOC, "l": [1, 9, 2, 3]}),
        ([{"op": "add", "path": "/l/-", "value": 9}], {**DOC, "l": [1, 2, 3, 9]}),
        ([{"op": "remove", "path": "/a/c~1d"}], {**DOC, "a": {"b": 1, "e~f": 3}}),
        ([{"op": "remove", "path": "/l/0"}], {**DOC, "l": [2, 3]}),
        ([{"op": "replace", "path": "/a/b", "value": [1]}], {**DOC, "a": {**DOC["a"], "b": [1]}}),
        (
            [{"op": "move", "from": "/a/b", "path": "/z"}],
            {"a": {"c/d": 2, "e~f": 3}, "l": [1, 2, 3], "z": 1},
        ),
        ([{"op": "copy", "from": "/l", "path": "/m"}], {**DOC, "m": [1, 2, 3]}),
        ([{"op": "test", "path": "/a/b", "value": 1.0}], DOC),
        ([{"op": "replace", "path": "", "value": {"n": 1}}], {"n": 1}),
        ([], DOC),
    ],
)
def test_operations(patch: list[dict[str, Any]], expected: Any) -> None:
    assert apply_patch(DOC, patch) == expected


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"op": "add"}, "array of operations"),
        ([{"op": "nope", "path": "/a"}], "op must be one of"),
        ([{"op": "add", "value": 1}], "path is missing"),
        ([{"op": "add", "path": "/a/b"}], "value is missing"),
        ([{"op": "remove", "path": "/missing"}], "does not exist"),
        ([{"op": "replace", "path": "/missing", "value": 1}], "does not exist"),
        ([{"op": "add", "path": "/missing/x", "value": 1}], "does not exist"),
        ([{"op": "add", "path": "/l/7", "value": 1}], "out of range"),
        ([{"op": "add", "path": "/l/01", "value": 1}], "not an array index"),
        ([{"op": "test", "path": "/a/b", "value": True}], "test failed"),
        ([{"op": "test", "path": "/a/b", "value": "1"}], "test failed"),
        ([{"op": "move", "path": "/x"}], "from is missing"),
        ([{"op": "move", "from": "/a", "path": "/a/b/c"}], "own child"),
        ([{"op": "remove", "path": ""}], "whole document"),
    ],
)
def test_errors(patch: Any, reason: str) -> None:
    with pytest.raises(PatchError, match=reason):
        apply_patch(DOC, patch)


def test_all_or_nothing_and_input_untouched() -> None:
    doc = {"a": {"b": 1}}
    with pytest.raises(PatchError, match="operation 1"):
        apply_patch(
            doc, [{"op": "add", "path": "/a/c", "value": 2}, {"op": "remove", "path": "/x"}]
        )
    assert doc == {"a": {"b": 1}}
    out = apply_patch(doc, [{"op": "add", "path": "/a/c", "value": 2}])
    assert out == {"a": {"b": 1, "c": 2}}
    assert doc == {"a": {"b": 1}}
