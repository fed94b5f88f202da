"""Tokens of the Gremlin dialect (after Skydive's ``traversal_scanner.go``).

Identifiers are letters, digits and ``_`` starting with a letter; numbers are decimal integers
or floats (an optional leading ``-`` is accepted); strings are quoted with ``'`` or ``"`` and
may escape the quote or a backslash with ``\\``. Whitespace is space, tab, CR and LF. Anything
else becomes an ``ILLEGAL`` token, which the parser reports with what it expected instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pyskydive.gremlin.errors import QuerySyntaxError

__all__ = ["Kind", "Token", "tokenize"]


class Kind(Enum):
    IDENT = "identifier"
    STRING = "string"
    NUMBER = "number"
    DOT = "'.'"
    LPAREN = "'('"
    RPAREN = "')'"
    COMMA = "','"
    ILLEGAL = "illegal"
    EOF = "end of input"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str
    position: int
    value: str | int | float | None = None

    def describe(self) -> str:
        """How an error message shows this token."""
        if self.kind is Kind.EOF:
            return "end of input"
        if self.kind is Kind.STRING:
            return f"string {self.text}"
        shown = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return f"'{shown}'"


_PUNCT = {".": Kind.DOT, "(": Kind.LPAREN, ")": Kind.RPAREN, ",": Kind.COMMA}
_SPACE = frozenset(" \t\r\n")


def _is_letter(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with one ``EOF`` token."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPACE:
            i += 1
        elif ch in _PUNCT:
            tokens.append(Token(_PUNCT[ch], ch, i))
            i += 1
        elif _is_letter(ch):
            j = i + 1
            while j < n and (_is_letter(text[j]) or _is_digit(text[j]) or text[j] == "_"):
                j += 1
            tokens.append(Token(Kind.IDENT, text[i:j], i))
            i = j
        elif _is_digit(ch) or (ch == "-" and i + 1 < n and _is_digit(text[i + 1])):
            j = i + 1
            while j < n and _is_digit(text[j]):
                j += 1
            is_float = j + 1 < n and text[j] == "." and _is_digit(text[j + 1])
            if is_float:
                j += 1
                while j < n and _is_digit(text[j]):
                    j += 1
            lit = text[i:j]
            value: int | float = float(lit) if is_float else int(lit)
            tokens.append(Token(Kind.NUMBER, lit, i, value))
            i = j
        elif ch in "'\"":
            i = _string(text, i, tokens)
        else:
            tokens.append(Token(Kind.ILLEGAL, ch, i))
            i += 1
    tokens.append(Token(Kind.EOF, "", n))
    return tokens


def _string(text: str, start: int, tokens: list[Token]) -> int:
    quote = text[start]
    out: list[str] = []
    i, n = start + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in (quote, "\\"):
            out.append(text[i + 1])
            i += 2
        elif ch == quote:
            tokens.append(Token(Kind.STRING, text[start : i + 1], start, "".join(out)))
            return i + 1
        else:
            out.append(ch)
            i += 1
    raise QuerySyntaxError.expected(
        n, f"closing {quote} of the string opened at {start}", "end of input"
    )
