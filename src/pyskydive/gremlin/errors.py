"""Errors of the Gremlin package, both under :class:`pyskydive.errors.QueryError`.

::

    QueryError                 (pyskydive.errors) evaluation failed: bad argument, time limit
     └── QuerySyntaxError      the text does not parse; carries ``position`` (0-based offset)

Every message is one line: ``position 12: expected '(', got '.'``.
"""

from __future__ import annotations

from pyskydive.errors import QueryError

__all__ = ["QueryError", "QuerySyntaxError"]


class QuerySyntaxError(QueryError):
    """A query that does not parse; ``position`` is the character offset of the problem."""

    def __init__(self, position: int, reason: str) -> None:
        self.position = position
        self.reason = reason
        super().__init__(f"position {position}: {reason}")

    @classmethod
    def expected(cls, position: int, what: str, got: str) -> QuerySyntaxError:
        return cls(position, f"expected {what}, got {got}")
