"""The syntax tree of a Gremlin query: a start (``G``) followed by steps with arguments.

Names are kept as written (``text``) and in canonical upper case (``name``), since Skydive's
lexer is case-insensitive (``g.v().has(...)`` is the same query as ``G.V().Has(...)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = ["Arg", "Call", "Keyword", "Query", "Step"]


@dataclass(frozen=True, slots=True)
class Keyword:
    """A bare constant: ``ASC``, ``DESC``, ``NOW`` or ``FOREVER``."""

    name: str
    position: int


@dataclass(frozen=True, slots=True)
class Call:
    """A predicate or ``Metadata(...)`` argument, e.g. ``Within('a', 'b')``."""

    name: str
    args: tuple[Arg, ...]
    position: int


#: One argument of a step or of a predicate.
Arg: TypeAlias = "str | int | float | bool | Keyword | Call"


@dataclass(frozen=True, slots=True)
class Step:
    """One ``.Name(args)`` of the query."""

    name: str
    text: str
    args: tuple[Arg, ...]
    position: int
    #: Offset of each argument in the query text (for errors about one argument).
    arg_positions: tuple[int, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: the steps after ``G``, in order."""

    steps: tuple[Step, ...]
    text: str
