"""RFC 7047 codec: stream framing, value notation, row changes, on real recorded messages."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from pyskydive.errors import ProtocolError
from pyskydive.protocols.ovsdb import (
    Notification,
    Request,
    Response,
    RowChange,
    StreamDecoder,
    Uuid,
    classify,
    decode_table_updates,
    decode_value,
    echo_reply,
    monitor_request,
    update_params,
)

DATA = Path(__file__).parents[2] / "data" / "ovsdb"
RECORDINGS = sorted(DATA.glob("*.json"))


def recorded(name: str) -> list[Any]:
    return json.loads((DATA / f"{name}.json").read_text())  # type: ignore[no-any-return]


def wire(messages: list[Any]) -> bytes:
    """Messages as ovsdb-server sends them: back to back, no delimiter."""
    return b"".join(json.dumps(m).encode() for m in messages)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_decoder_splits_recorded_stream_whatever_the_chunks(path: Path) -> None:
    messages = json.loads(path.read_text())
    data = wire(messages)
    rng = random.Random(path.stem)
    for _ in range(5):
        decoder = StreamDecoder()
        out: list[Any] = []
        pos = 0
        while pos < len(data):
            step = rng.choice((1, 2, 7, 64, 1000, 1 << 16))
            out += decoder.feed(data[pos : pos + step])
            pos += step
        assert out == messages
        assert decoder.pending == 0


def test_decoder_byte_by_byte_with_tricky_strings() -> None:
    messages = [
        {"s": 'a "quoted" {brace} [bracket] \\ backslash \\"', "n": [1, {"x": "}"}]},
        {"u": "\u00e9\u4e2d", "e": "\\\\"},
        [1, 2, "]"],
    ]
    data = b" \n".join(json.dumps(m, ensure_ascii=False).encode() for m in messages)
    decoder = StreamDecoder()
    out: list[Any] = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    assert out == messages


def test_decoder_bounds_its_buffer() -> None:
    decoder = StreamDecoder(max_size=100)
    assert decoder.feed(b'{"a": "' + b"x" * 50) == []
    with pytest.raises(ProtocolError, match="larger than 100"):
        decoder.feed(b"x" * 100)


@pytest.mark.parametrize("garbage", [b"hello", b'{"a": 1}}', b'{"a": tru}'])
def test_decoder_rejects_garbage(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        StreamDecoder().feed(garbage)


def test_values() -> None:
    assert decode_value("x") == "x"
    assert decode_value(3) == 3
    assert decode_value(["set", []]) == []
    assert decode_value(["set", [1, 2]]) == [1, 2]
    u = decode_value(["uuid", "0c98041f-6cc0-48b5-b0fd-36c0b549a6cf"])
    assert isinstance(u, Uuid) and u == "0c98041f-6cc0-48b5-b0fd-36c0b549a6cf"
    assert decode_value(["map", [["a", "1"], ["b", ["uuid", "u"]]]]) == {"a": "1", "b": "u"}
    for bad in (["set", 1], ["map", [["a"]]], ["frob", []], ["uuid", 3], {"a": 1}, [1, 2, 3]):
        with pytest.raises(ProtocolError):
            decode_value(bad)


def test_recorded_monitor_reply_and_updates() -> None:
    messages = recorded("internal")
    reply = classify(messages[0])
    assert isinstance(reply, Response) and reply.id == 1
    initial = decode_table_updates(reply.result)
    assert [c.table for c in initial] == ["Open_vSwitch"]
    note = classify(messages[1])
    assert isinstance(note, Notification) and note.method == "update"
    changes = decode_table_updates(update_params(note.params)[1])
    tables = {c.table: c for c in changes}
    assert set(tables) == {"Interface", "Port", "Bridge"}
    bridge = tables["Bridge"]
    assert bridge.old is None and bridge.new is not None
    assert bridge.new["name"].startswith("skobr")
    # A set of one member comes as the bare atom (RFC 7047 §5.1).
    assert isinstance(bridge.new["ports"], Uuid)
    # A modification: old holds only the changed columns, new all of them.
    mod = [c for c in decode_table_updates(messages[2]["params"][1]) if c.table == "Interface"]
    assert mod[0].old is not None and mod[0].new is not None
    assert set(mod[0].old) < set(mod[0].new)
    assert isinstance(mod[0].new["status"], dict)


def test_malformed_table_updates() -> None:
    for bad in (
        [],
        {"Bridge": []},
        {"Bridge": {"u": "x"}},
        {"Bridge": {"u": {}}},
        {"Bridge": {"u": {"new": []}}},
    ):
        with pytest.raises(ProtocolError):
            decode_table_updates(bad)
    assert decode_table_updates({"Bridge": {"u": {"old": {"name": "b"}}}}) == [
        RowChange("Bridge", "u", {"name": "b"}, None)
    ]


def test_requests_and_replies() -> None:
    msg = json.loads(monitor_request(7, None, {"Bridge": ("name", "ports")}))
    assert msg == {
        "method": "monitor",
        "params": ["Open_vSwitch", None, {"Bridge": {"columns": ["name", "ports"]}}],
        "id": 7,
    }
    echo = classify({"method": "echo", "params": ["x"], "id": "echo"})
    assert isinstance(echo, Request)
    assert json.loads(echo_reply(echo)) == {"id": "echo", "result": ["x"], "error": None}
    for bad in ([], {"method": 3}, {"foo": 1}):
        with pytest.raises(ProtocolError):
            classify(bad)
    with pytest.raises(ProtocolError):
        update_params([1])


def test_fuzzed_stream_only_raises_protocol_errors() -> None:
    """Seeded mutations of real traffic: values or ProtocolError, never anything else."""
    data = wire(recorded("tunnels"))
    rng = random.Random(7047)
    for _ in range(300):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(mutated))
            mutated[pos] = rng.choice(b'{}[]"\\, :x0\xff')
        decoder = StreamDecoder(max_size=1 << 20)
        try:
            for i in range(0, len(mutated), 997):
                for msg in decoder.feed(bytes(mutated[i : i + 997])):
                    try:
                        note = classify(msg)
                        if isinstance(note, Notification):
                            decode_table_updates(update_params(note.params)[1])
                        elif isinstance(note, Response):
                            decode_table_updates(note.result)
                    except ProtocolError:
                        pass
        except ProtocolError:
            pass
