"""Filters built from step arguments: ``Has('k', v, 'k2', Within(...))``, ``Metadata(...)``.

Semantics follow Skydive's ``KeyValueToFilter``:

* a plain value is an equality term; a list value in the metadata matches if any element does
  (this holds for every predicate); keys may be dotted (``Ovs.Metric.RxBytes``); the element
  fields ``ID``, ``Host``, ``Origin``, ``CreatedAt``, ``UpdatedAt``, ``DeletedAt``,
  ``Revision`` (and ``Parent``/``Child`` on edges) are reachable as keys too (a metadata key
  of the same name wins);
* ``Has('k')`` (one argument) means "key present"; ``HasNot('k')`` "key absent";
* ``NE(v)`` needs the key present, ``NEE(v)`` also matches when it is absent; ``WITHOUT``
  matches absent keys as well, ``WITHIN`` does not;
* ``LT/GT/LTE/GTE`` compare numbers; ``INSIDE(a, b)`` is exclusive (a < x < b),
  ``BETWEEN(a, b)`` half-open (a <= x < b), ``OUTSIDE(a, b)`` is x < a or x > b;
* ``REGEX(p)`` is anchored (the whole string must match);
* ``IPV4RANGE(cidr)`` matches an address, or the address part of a CIDR value, in the range.

Items are tested through :func:`field_of`, so extension objects only need ``get(key)``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyskydive.errors import QueryError
from pyskydive.graph import Element, get_field
from pyskydive.gremlin.ast import Arg, Call, Keyword
from pyskydive.gremlin.values import Getter

__all__ = ["Filter", "ValueTest", "compile_filter", "field_of", "freeze"]

#: Tests one actual value (``None`` when the key is absent).
ValueTest = Callable[[Any], bool]

_ELEMENT_FIELDS = {
    "ID": "id",
    "Host": "host",
    "Origin": "origin",
    "CreatedAt": "created_at",
    "UpdatedAt": "updated_at",
    "DeletedAt": "deleted_at",
    "Revision": "revision",
    "Parent": "parent",
    "Child": "child",
}


def field_of(item: object, key: str) -> Any:
    """Value of ``key`` on a node, edge, mapping or :class:`Getter`; ``None`` when absent."""
    if isinstance(item, Element):
        md = item.metadata
        if key in md:
            return md[key]
        attr = _ELEMENT_FIELDS.get(key)
        if attr is not None:
            return getattr(item, attr, None)
        return get_field(md, key)
    if isinstance(item, dict):
        return get_field(item, key)
    if isinstance(item, Getter):
        return item.get(key)
    return None


def getter_for(key: str) -> Callable[[object], Any]:
    """A fast :func:`field_of` specialised for one key."""
    if "." in key or key in _ELEMENT_FIELDS:
        return lambda item: field_of(item, key)

    def get(item: object) -> Any:
        if isinstance(item, Element):
            return item.metadata.get(key)
        return field_of(item, key)

    return get


def freeze(value: Any) -> Hashable:
    """A hashable image of a JSON value (for ``Dedup``)."""
    if isinstance(value, list | tuple):
        return ("[", *(freeze(v) for v in value))
    if isinstance(value, dict):
        return ("{", *sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, Hashable):
        return (type(value) is bool, value)
    return repr(value)


# -- value tests -------------------------------------------------------------------------------


def _any(actual: Any, test: Callable[[Any], bool]) -> bool:
    if isinstance(actual, list):
        return any(test(a) for a in actual)
    return test(actual)


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _number_arg(call: Call, value: Arg) -> int | float:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    n = _number(value)
    if n is None:
        raise QueryError(f"position {call.position}: {call.name} values should be numbers")
    return n


def _cmp(op: Callable[[int | float], bool]) -> ValueTest:
    def test(actual: Any) -> bool:
        def one(v: Any) -> bool:
            n = _number(v)
            return n is not None and op(n)

        return actual is not None and _any(actual, one)

    return test


def _equal_test(expected: Any) -> ValueTest:
    is_bool = isinstance(expected, bool)

    def test(actual: Any) -> bool:
        if actual is None:
            return False
        if actual.__class__ is list:
            return any(_eq(v, expected) for v in actual)
        return bool(actual == expected) and isinstance(actual, bool) == is_bool

    return test


def _predicate_test(call: Call) -> ValueTest:
    name, args = call.name, call.args
    if name in ("NE", "NEE"):
        value = _scalar(call, args[0])

        def differs(actual: Any) -> bool:
            return not _any(actual, lambda v: _eq(v, value))

        if name == "NEE":
            return lambda actual: actual is None or differs(actual)
        return lambda actual: actual is not None and differs(actual)
    if name in ("WITHIN", "WITHOUT"):
        values = [_scalar(call, a) for a in args]

        def within(actual: Any) -> bool:
            return _any(actual, lambda v: any(_eq(v, w) for w in values))

        if name == "WITHOUT":
            return lambda actual: actual is None or not within(actual)
        return lambda actual: actual is not None and within(actual)
    if name in ("LT", "GT", "LTE", "GTE"):
        x = _number_arg(call, args[0])
        ops: dict[str, Callable[[int | float], bool]] = {
            "LT": lambda n: n < x,
            "GT": lambda n: n > x,
            "LTE": lambda n: n <= x,
            "GTE": lambda n: n >= x,
        }
        return _cmp(ops[name])
    if name in ("INSIDE", "BETWEEN", "OUTSIDE"):
        lo, hi = _number_arg(call, args[0]), _number_arg(call, args[1])
        if name == "INSIDE":
            return _cmp(lambda n: lo < n < hi)
        if name == "BETWEEN":
            return _cmp(lambda n: lo <= n < hi)
        return _cmp(lambda n: n < lo or n > hi)
    if name == "REGEX":
        return _regex_test(call)
    if name == "IPV4RANGE":
        return _ipv4range_test(call)
    raise QueryError(f"position {call.position}: {name} cannot be used as a value here")


def _scalar(call: Call, value: Arg) -> Any:
    if isinstance(value, Call | Keyword):
        raise QueryError(f"position {call.position}: {call.name} takes plain values")
    return value


def _regex_test(call: Call) -> ValueTest:
    pattern = call.args[0]
    if not isinstance(pattern, str):
        raise QueryError(f"position {call.position}: REGEX takes a string")
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise QueryError(f"position {call.position}: bad regular expression: {exc}") from exc

    fullmatch = rx.fullmatch

    def test(actual: Any) -> bool:
        if actual.__class__ is str:
            return fullmatch(actual) is not None
        if actual.__class__ is list:
            return any(isinstance(v, str) and fullmatch(v) is not None for v in actual)
        return False

    return test


def _ipv4range_test(call: Call) -> ValueTest:
    cidr = call.args[0]
    if not isinstance(cidr, str):
        raise QueryError(f"position {call.position}: IPV4RANGE takes a CIDR string")
    try:
        net = ipaddress.IPv4Network(cidr, strict=False)
    except ValueError as exc:
        raise QueryError(f"position {call.position}: bad IPv4 range {cidr!r}: {exc}") from exc

    def one(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        try:
            return ipaddress.IPv4Interface(v).ip in net
        except ValueError:
            return False

    return lambda actual: actual is not None and _any(actual, one)


def _present(actual: Any) -> bool:
    return actual is not None


def _absent(actual: Any) -> bool:
    return actual is None


# -- filters -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Filter:
    """A compiled filter: ``(key, test)`` clauses joined by AND (or OR when ``any_of``).

    ``terms`` holds the plain equality clauses (key -> value) when the filter is a pure AND:
    the evaluator looks those up in the graph indexes instead of scanning.
    """

    clauses: list[tuple[str, ValueTest]]
    any_of: bool = False
    terms: dict[str, Any] = field(default_factory=dict)

    _compiled: Callable[[object], bool] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __call__(self, item: object) -> bool:
        if self._compiled is None:
            self._compiled = self._compile()
        return self._compiled(item)

    def _compile(self) -> Callable[[object], bool]:
        parts = [(getter_for(k), test) for k, test in self.clauses]
        if len(parts) == 1:
            get, test = parts[0]
            return lambda item: test(get(item))
        if self.any_of:
            return lambda item: any(test(get(item)) for get, test in parts)
        return lambda item: all(test(get(item)) for get, test in parts)

    @property
    def only_terms(self) -> bool:
        return not self.any_of and len(self.terms) == len(self.clauses)


def _value_test(value: Arg, position: int) -> tuple[ValueTest, bool]:
    """The test for one value, and whether it is a plain equality term."""
    if isinstance(value, Call):
        if value.name == "METADATA":
            raise QueryError(f"position {value.position}: Metadata cannot be a value")
        return _predicate_test(value), False
    if isinstance(value, Keyword):
        raise QueryError(f"position {value.position}: {value.name} cannot be a value")
    return _equal_test(value), True


def compile_filter(args: Sequence[Arg], position: int, *, any_of: bool = False) -> Filter:
    """Filter for ``k1, v1, k2, v2...``, a lone key (presence) or one ``Metadata(...)``."""
    if len(args) == 1 and isinstance(args[0], Call) and args[0].name == "METADATA":
        return compile_filter(args[0].args, args[0].position, any_of=any_of)
    if len(args) == 1:
        key = args[0]
        if not isinstance(key, str):
            raise QueryError(f"position {position}: key must be a string")
        return Filter([(key, _present)], any_of)
    if len(args) % 2:
        raise QueryError(f"position {position}: expected key/value pairs, got {len(args)} args")
    clauses: list[tuple[str, ValueTest]] = []
    terms: dict[str, Any] = {}
    for key, value in zip(args[::2], args[1::2], strict=True):
        if not isinstance(key, str):
            raise QueryError(f"position {position}: keys should be strings, got {key!r}")
        test, is_term = _value_test(value, position)
        clauses.append((key, test))
        if is_term and key not in terms:
            terms[key] = value
    return Filter(clauses, any_of, terms if not any_of else {})


def absent_filter(key: str) -> Filter:
    """``HasNot(key)``."""
    return Filter([(key, _absent)])
