"""RFC 6902 JSON Patch over RFC 6901 JSON Pointers, sans I/O.

:func:`apply_patch` returns a patched deep copy (the input is never modified) or raises
:class:`PatchError` (a :class:`~pyskydive.errors.MessageError`) with a one-line reason that
names the operation's index. Operations: add, remove, replace, move, copy, test. A patch is
all or nothing: an error in any operation leaves nothing changed.
"""

from __future__ import annotations

import copy
from typing import Any

from pyskydive.errors import MessageError

__all__ = ["PatchError", "apply_patch", "parse_pointer"]

_OPS = ("add", "remove", "replace", "move", "copy", "test")


class PatchError(MessageError):
    """A JSON Patch that is malformed or cannot be applied."""


def parse_pointer(pointer: Any) -> list[str]:
    """``"/a/b~1c/0"`` -> ``["a", "b/c", "0"]``; ``""`` is the whole document."""
    if not isinstance(pointer, str):
        raise PatchError("a JSON pointer must be a string")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"JSON pointer {pointer!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def _index(container: list[Any], token: str, pointer: str, *, insert: bool) -> int:
    if token == "-" and insert:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"{pointer}: {token!r} is not an array index")
    i = int(token)
    limit = len(container) if insert else len(container) - 1
    if i > limit:
        raise PatchError(f"{pointer}: index {i} is out of range")
    return i


def _parent(doc: Any, tokens: list[str], pointer: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"{pointer}: path does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, pointer, insert=False)]
        else:
            raise PatchError(f"{pointer}: path does not exist")
    return node


def _get(doc: Any, pointer: str) -> Any:
    tokens = parse_pointer(pointer)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"{pointer}: path does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, pointer, insert=False)]
    raise PatchError(f"{pointer}: path does not exist")


def _add(doc: Any, pointer: str, value: Any) -> Any:
    tokens = parse_pointer(pointer)
    if not tokens:
        return value
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, pointer, insert=True), value)
    else:
        raise PatchError(f"{pointer}: parent is not an object or an array")
    return doc


def _remove(doc: Any, pointer: str) -> tuple[Any, Any]:
    tokens = parse_pointer(pointer)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"{pointer}: path does not exist")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, pointer, insert=False))
    raise PatchError(f"{pointer}: path does not exist")


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: 1 == 1.0, but true != 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    num_a, num_b = isinstance(a, (int, float)), isinstance(b, (int, float))
    if num_a or num_b:
        return num_a and num_b and bool(a == b)
    return type(a) is type(b) and bool(a == b)


def apply_patch(doc: Any, patch: Any) -> Any:
    """Apply ``patch`` (a list of operation objects) to a copy of ``doc``; return the copy."""
    if not isinstance(patch, list):
        raise PatchError("a JSON Patch must be an array of operations")
    result = copy.deepcopy(doc)
    for i, op in enumerate(patch):
        if not isinstance(op, dict):
            raise PatchError(f"operation {i} must be an object")
        name = op.get("op")
        if name not in _OPS:
            raise PatchError(f"operation {i}: op must be one of {', '.join(_OPS)}")
        if "path" not in op:
            raise PatchError(f"operation {i} ({name}): path is missing")
        path = op["path"]
        try:
            if name in ("add", "replace", "test") and "value" not in op:
                raise PatchError("value is missing")
            if name == "add":
                result = _add(result, path, copy.deepcopy(op["value"]))
            elif name == "remove":
                result, _ = _remove(result, path)
            elif name == "replace":
                _get(result, path)
                if parse_pointer(path):
                    result, _ = _remove(result, path)
                result = _add(result, path, copy.deepcopy(op["value"]))
            elif name == "test":
                if not _equal(_get(result, path), op["value"]):
                    raise PatchError(f"{path}: test failed")
            else:  # move, copy
                source = op.get("from")
                if source is None:
                    raise PatchError("from is missing")
                if name == "move":
                    if path != source and path.startswith(f"{source}/"):
                        raise PatchError(f"cannot move {source} into its own child {path}")
                    result, value = _remove(result, source)
                else:
                    value = copy.deepcopy(_get(result, source))
                result = _add(result, path, value)
        except PatchError as exc:
            raise PatchError(f"operation {i} ({name}): {exc}") from None
    return result
