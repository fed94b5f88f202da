"""Recursive-descent parser of the Gremlin dialect (DESIGN.md §2.4).

Grammar (names are case-insensitive, as in Skydive's scanner)::

    query := ("G" | "g") ("." step)* EOF
    step  := IDENT "(" [arg ("," arg)*] ")"
    arg   := STRING | NUMBER | ASC | DESC | NOW | FOREVER | TRUE | FALSE
           | PREDICATE "(" [arg ("," arg)*] ")"          -- NE, WITHIN, REGEX, Metadata, ...

Step names are not checked here (extensions registered on a
:class:`~pyskydive.gremlin.registry.StepRegistry` add steps); the evaluator rejects unknown
ones with their position. Predicate arity is checked here. Input is bounded: at most
:data:`MAX_QUERY_LENGTH` characters and :data:`MAX_DEPTH` nested calls, so a hostile query
fails with a :class:`QuerySyntaxError`, never a ``RecursionError``.
"""

from __future__ import annotations

from pyskydive.gremlin._lexer import Kind, Token, tokenize
from pyskydive.gremlin.ast import Arg, Call, Keyword, Query, Step
from pyskydive.gremlin.errors import QuerySyntaxError

__all__ = ["KEYWORDS", "MAX_DEPTH", "MAX_QUERY_LENGTH", "PREDICATES", "parse"]

MAX_QUERY_LENGTH = 64 * 1024
MAX_DEPTH = 64

#: Bare constants usable as arguments.
KEYWORDS = frozenset({"ASC", "DESC", "NOW", "FOREVER"})

#: Predicate name -> (min, max) number of arguments (max None: unbounded).
PREDICATES: dict[str, tuple[int, int | None]] = {
    "NE": (1, 1),
    "NEE": (1, 1),
    "LT": (1, 1),
    "GT": (1, 1),
    "LTE": (1, 1),
    "GTE": (1, 1),
    "INSIDE": (2, 2),
    "OUTSIDE": (2, 2),
    "BETWEEN": (2, 2),
    "WITHIN": (1, None),
    "WITHOUT": (1, None),
    "REGEX": (1, 1),
    "IPV4RANGE": (1, 1),
    "METADATA": (0, None),
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind is not Kind.EOF:
            self.i += 1
        return tok

    def expect(self, kind: Kind, what: str) -> Token:
        tok = self.next()
        if tok.kind is not kind:
            raise QuerySyntaxError.expected(tok.position, what, tok.describe())
        return tok

    def query(self, text: str) -> Query:
        tok = self.next()
        if tok.kind is not Kind.IDENT or tok.text.upper() != "G":
            raise QuerySyntaxError.expected(tok.position, "'G'", tok.describe())
        steps: list[Step] = []
        while True:
            tok = self.next()
            if tok.kind is Kind.EOF:
                break
            if tok.kind is not Kind.DOT:
                raise QuerySyntaxError.expected(tok.position, "'.' or end of input", tok.describe())
            name = self.expect(Kind.IDENT, "a step name")
            self.expect(Kind.LPAREN, f"'(' after {name.text}")
            positions: list[int] = []
            args = self.args(1, positions)
            steps.append(
                Step(name.text.upper(), name.text, tuple(args), name.position, tuple(positions))
            )
        return Query(tuple(steps), text)

    def args(self, depth: int, positions: list[int] | None = None) -> list[Arg]:
        """Arguments up to and including the closing parenthesis (their offsets go to
        ``positions`` when given)."""
        out: list[Arg] = []
        if self.peek().kind is Kind.RPAREN:
            self.next()
            return out
        while True:
            if positions is not None:
                positions.append(self.peek().position)
            out.append(self.arg(depth))
            tok = self.next()
            if tok.kind is Kind.RPAREN:
                return out
            if tok.kind is not Kind.COMMA:
                raise QuerySyntaxError.expected(tok.position, "',' or ')'", tok.describe())

    def arg(self, depth: int) -> Arg:
        tok = self.next()
        if tok.kind is Kind.STRING or tok.kind is Kind.NUMBER:
            assert tok.value is not None
            return tok.value
        if tok.kind is not Kind.IDENT:
            raise QuerySyntaxError.expected(tok.position, "a value", tok.describe())
        upper = tok.text.upper()
        if upper in ("TRUE", "FALSE"):
            return upper == "TRUE"
        if upper in KEYWORDS:
            return Keyword(upper, tok.position)
        bounds = PREDICATES.get(upper)
        if bounds is None:
            raise QuerySyntaxError.expected(
                tok.position, "a value (string, number, predicate or Metadata)", tok.describe()
            )
        if depth >= MAX_DEPTH:
            raise QuerySyntaxError(tok.position, f"nesting deeper than {MAX_DEPTH} levels")
        self.expect(Kind.LPAREN, f"'(' after {tok.text}")
        args = self.args(depth + 1)
        low, high = bounds
        if len(args) < low or (high is not None and len(args) > high):
            want = str(low) if low == high else f"at least {low}"
            raise QuerySyntaxError.expected(
                tok.position, f"{want} argument(s) to {tok.text}", str(len(args))
            )
        if upper == "METADATA":
            _check_metadata(tok, args)
        return Call(upper, tuple(args), tok.position)


def _check_metadata(tok: Token, args: list[Arg]) -> None:
    if len(args) % 2:
        raise QuerySyntaxError.expected(
            tok.position, f"key/value pairs in {tok.text}", f"{len(args)} arguments"
        )
    for key in args[::2]:
        if not isinstance(key, str):
            raise QuerySyntaxError.expected(tok.position, f"string keys in {tok.text}", repr(key))


def parse(text: str) -> Query:
    """Parse ``text``; raise :class:`QuerySyntaxError` (a ``QueryError``) on bad input."""
    if len(text) > MAX_QUERY_LENGTH:
        raise QuerySyntaxError(MAX_QUERY_LENGTH, f"query longer than {MAX_QUERY_LENGTH} characters")
    return _Parser(text).query(text)
