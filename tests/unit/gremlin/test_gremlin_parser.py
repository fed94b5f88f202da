"""The parser: the tree it builds, and one-line errors carrying the position."""

from __future__ import annotations

import random

import pytest

from pyskydive.gremlin import (
    MAX_DEPTH,
    MAX_QUERY_LENGTH,
    Call,
    Keyword,
    QueryError,
    QuerySyntaxError,
    Step,
    parse,
)


def test_tree() -> None:
    text = "G.V().Has('Name', Regex(\"sk-.*\"), 'MTU', GT(1400)).Sort(DESC, 'Name').Limit(2)"
    q = parse(text)
    assert [s.name for s in q.steps] == ["V", "HAS", "SORT", "LIMIT"]
    has = q.steps[1]
    assert has == Step(
        "HAS",
        "Has",
        ("Name", Call("REGEX", ("sk-.*",), 18), "MTU", Call("GT", (1400,), text.index("GT"))),
        6,
    )
    assert q.steps[2].args == (Keyword("DESC", text.index("DESC")), "Name")
    assert q.steps[3].args == (2,)


def test_values() -> None:
    text = "g.V(1, -2, 3.5, 'a\\'b', \"c\", true, FALSE, NOW, forever)"
    [step] = parse(text).steps
    now, forever = Keyword("NOW", text.index("NOW")), Keyword("FOREVER", text.index("forever"))
    assert step.args == (1, -2, 3.5, "a'b", "c", True, False, now, forever)
    assert type(step.args[0]) is int and type(step.args[2]) is float


def test_case_insensitive_and_whitespace() -> None:
    a = parse("G.V().Has('Type', within('a', 'b')).out()")
    b = parse("g . v ( ) . HAS ( 'Type' , WITHIN ( 'a' , 'b' ) )\n\t.OUT()")
    assert [s.name for s in a.steps] == [s.name for s in b.steps] == ["V", "HAS", "OUT"]
    assert a.steps[1].args[1] == Call("WITHIN", ("a", "b"), 18)


def test_time_travel_and_flows_parse() -> None:
    parse("G.At('-1m', 3600).Flows().Sort(DESC, 'Metric.ABPackets')")
    parse("G.Context(NOW, FOREVER).V()")
    parse("G.Flows().Has('Network', IPV4RANGE('169.254.40.0/24')).Dedup().CaptureNode()")


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("", 0, "expected 'G', got end of input"),
        ("X.V()", 0, "expected 'G', got 'X'"),
        ("G.", 2, "expected a step name, got end of input"),
        ("G.V", 3, "expected '(' after V, got end of input"),
        ("G.V(", 4, "expected a value, got end of input"),
        ("G.V()#", 5, "expected '.' or end of input, got '#'"),
        ("G.V() .Has('a' 'b')", 15, "expected ',' or ')', got string 'b'"),
        ("G.V().Has('a',)", 14, "expected a value, got ')'"),
        ("G.V().Has('a', Foo(1))", 15, "expected a value (string, number, predicate or Metadata)"),
        ("G.V().Has('a', NE(1, 2))", 15, "expected 1 argument(s) to NE, got 2"),
        ("G.V().Has('a', INSIDE(1))", 15, "expected 2 argument(s) to INSIDE, got 1"),
        ("G.V().Has('a', Within())", 15, "expected at least 1 argument(s) to Within, got 0"),
        ("G.V().Has('a', Regex)", 20, "expected '(' after Regex, got ')'"),
        ("G.V().Has('a", 12, "expected closing ' of the string opened at 10, got end of input"),
        ("G.V().ShortestPathTo(Metadata('a'))", 21, "expected key/value pairs in Metadata"),
        ("G.V().ShortestPathTo(Metadata(1, 2))", 21, "expected string keys in Metadata"),
        ("G.V(12abc)", 6, "expected ',' or ')', got 'abc'"),
        ("G.V()..Out()", 6, "expected a step name, got '.'"),
        ("G V()", 2, "expected '.' or end of input, got 'V'"),
    ],
)
def test_errors(text: str, position: int, message: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        parse(text)
    err = info.value
    assert isinstance(err, QueryError)
    assert err.position == position
    assert str(err).startswith(f"position {position}: ")
    assert message in str(err)
    assert "\n" not in str(err)


def test_deep_nesting_is_bounded() -> None:
    depth = 5_000
    text = "G.V().Has('a', " + "Within(" * depth + "1" + ")" * depth + ")"
    with pytest.raises(QuerySyntaxError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        parse(text)
    ok = "G.V().Has('a', " + "Within(" * (MAX_DEPTH - 1) + "1" + ")" * (MAX_DEPTH - 1) + ")"
    parse(ok)


def test_huge_input_is_bounded() -> None:
    text = "G" + ".V()" * (MAX_QUERY_LENGTH // 4 + 1)
    with pytest.raises(QuerySyntaxError, match="longer than"):
        parse(text)
    parse("G.V().Has('Name', '" + "x" * (MAX_QUERY_LENGTH - 100) + "')")


def test_fuzz_never_escapes_as_another_exception() -> None:
    rng = random.Random(3)
    alphabet = "G.V()Has'\",0123456789 -aZ_#Within(Metadata)REGEX\\\n"
    seeds = ["G.V().Has('Name', Within('a', 1)).Out()", "G.V().ShortestPathTo(Metadata('a', 1))"]
    for _ in range(3000):
        if rng.random() < 0.5:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        else:
            s = list(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(s))
                op = rng.randrange(3)
                if op == 0:
                    del s[i]
                elif op == 1:
                    s.insert(i, rng.choice(alphabet))
                else:
                    s[i] = rng.choice(alphabet)
            text = "".join(s)
        try:
            parse(text)
        except QuerySyntaxError as err:
            assert 0 <= err.position <= len(text)
