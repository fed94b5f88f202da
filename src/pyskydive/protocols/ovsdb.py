"""OVSDB management protocol (RFC 7047), sans I/O: bytes in, JSON-RPC messages and row changes out.

Theory of operation
-------------------
OVSDB speaks JSON-RPC 1.0 over a stream (RFC 7047 §4) and sends its messages back to back with
no delimiter. :class:`StreamDecoder` finds where each top-level JSON value ends by tracking the
brace/bracket depth outside of strings (a regular expression jumps to the next structural
character, so a multi-megabyte monitor reply is not walked byte by byte in Python), and parses
each complete value. A value that grows past ``max_size`` without ending raises
:class:`ProtocolError`: a peer can not make us buffer without bound.

The agent asks for one ``monitor`` (§4.1.5) of the tables it mirrors; the reply is the whole
current state as ``<table-updates>`` and every later change arrives as an ``update``
notification (§4.1.6) with the same shape. :func:`decode_table_updates` turns both into
:class:`RowChange` records: ``old`` and ``new`` are ``None`` for an insertion and a deletion; on
a modification ``old`` holds only the columns that changed and ``new`` every monitored column.

Values use the OVSDB notation (§5.1): an atom is a JSON scalar or ``["uuid", U]`` /
``["named-uuid", N]``; a set is one atom or ``["set", [atoms]]``; a map is
``["map", [[key, value], ...]]``. :func:`decode_value` turns them into plain Python values
(``str``/``int``/``float``/``bool``, :class:`Uuid` for references, ``list`` for sets and
``dict`` for maps).

The server sends ``echo`` requests to check that we are alive (§4.1.11); :func:`echo_reply`
answers them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyskydive.errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_SIZE",
    "MONITORED_COLUMNS",
    "Notification",
    "Request",
    "Response",
    "RowChange",
    "StreamDecoder",
    "Uuid",
    "classify",
    "decode_table_updates",
    "decode_value",
    "echo_reply",
    "encode",
    "monitor_request",
]

#: Largest single message accepted (a monitor reply of tens of thousands of rows fits).
DEFAULT_MAX_SIZE = 256 * 1024 * 1024

#: Columns of the Open_vSwitch database the topology probe mirrors. Statistics are left out:
#: ovs-vswitchd rewrites them every few seconds, which would turn into graph churn.
MONITORED_COLUMNS: dict[str, tuple[str, ...]] = {
    "Open_vSwitch": ("ovs_version", "external_ids"),
    "Bridge": (
        "name",
        "ports",
        "datapath_type",
        "datapath_id",
        "fail_mode",
        "protocols",
        "stp_enable",
        "external_ids",
        "other_config",
    ),
    "Port": (
        "name",
        "interfaces",
        "tag",
        "trunks",
        "vlan_mode",
        "bond_mode",
        "lacp",
        "external_ids",
        "other_config",
    ),
    "Interface": (
        "name",
        "type",
        "ofport",
        "ifindex",
        "mac_in_use",
        "admin_state",
        "link_state",
        "mtu",
        "error",
        "options",
        "status",
        "external_ids",
        "other_config",
    ),
}

_STRUCTURAL = re.compile(rb'[{}\[\]"\\]')
_SPACE = b" \t\r\n"


class Uuid(str):
    """A reference to a row (``["uuid", "…"]``); a ``str`` so it compares and hashes as one."""

    __slots__ = ()


class StreamDecoder:
    """Split a byte stream of back-to-back JSON values into parsed values."""

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._scan = 0  # where scanning resumes in _buf
        self._depth = 0
        self._in_string = False
        self._skip = -1  # index in _buf of a character escaped by a backslash
        self._consumed = 0  # bytes of the stream already returned (for error offsets)

    def feed(self, data: bytes) -> list[Any]:
        """Add ``data``; return the values it completes, in order."""
        buf = self._buf
        buf += data
        out: list[Any] = []
        start = 0
        pos = self._scan
        while True:
            if self._depth == 0 and not self._in_string:
                # Between values: skip white space; anything else must open an object/array.
                while pos < len(buf) and buf[pos] in _SPACE:
                    pos += 1
                start = pos
                if pos >= len(buf):
                    break
                if buf[pos] not in b"{[":
                    raise ProtocolError(
                        f"expected a JSON object, got {bytes(buf[pos : pos + 16])!r}",
                        self._consumed + pos,
                    )
            end = self._scan_value(buf, pos)
            if end < 0:
                pos = len(buf)
                break
            try:
                out.append(json.loads(bytes(buf[start:end])))
            except ValueError as exc:
                raise ProtocolError(f"invalid JSON: {exc}", self._consumed + start) from exc
            pos = end
            start = end
        if start:
            del buf[:start]
            self._consumed += start
            pos -= start
            self._skip -= start
        self._scan = pos
        if len(buf) > self.max_size:
            raise ProtocolError(
                f"message larger than {self.max_size} bytes without an end", self._consumed
            )
        return out

    def _scan_value(self, buf: bytearray, pos: int) -> int:
        """Advance the depth/string state from ``pos``; the end of the value, or -1."""
        for m in _STRUCTURAL.finditer(buf, pos):
            at = m.start()
            if at == self._skip:  # the character after a backslash in a string
                continue
            c = buf[at]
            if self._in_string:
                if c == 0x5C:  # backslash
                    self._skip = at + 1
                elif c == 0x22:  # quote
                    self._in_string = False
            elif c == 0x22:
                self._in_string = True
            elif c in (0x7B, 0x5B):  # { [
                self._depth += 1
            elif c in (0x7D, 0x5D):  # } ]
                self._depth -= 1
                if self._depth == 0:
                    return at + 1
                if self._depth < 0:
                    raise ProtocolError("unbalanced closing bracket", self._consumed + at)
        return -1

    @property
    def pending(self) -> int:
        """Bytes buffered for a value not complete yet."""
        return len(self._buf)


# -- JSON-RPC messages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A request from the server (``echo``) that needs an answer with the same ``id``."""

    method: str
    params: Any
    id: Any


@dataclass(frozen=True, slots=True)
class Notification:
    """A request without ``id`` (``update``)."""

    method: str
    params: Any


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to one of our requests."""

    id: Any
    result: Any
    error: Any


def classify(msg: Any) -> Request | Notification | Response:
    """Sort a decoded JSON-RPC 1.0 value into request, notification or response (§4)."""
    if not isinstance(msg, dict):
        raise ProtocolError(f"JSON-RPC message is a {type(msg).__name__}, not an object")
    if "method" in msg:
        method = msg["method"]
        if not isinstance(method, str):
            raise ProtocolError("JSON-RPC method is not a string")
        if msg.get("id") is None:
            return Notification(method, msg.get("params"))
        return Request(method, msg.get("params"), msg["id"])
    if "id" in msg and ("result" in msg or "error" in msg):
        return Response(msg["id"], msg.get("result"), msg.get("error"))
    raise ProtocolError(f"not a JSON-RPC message: keys {sorted(msg)}")


def encode(msg: Mapping[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def monitor_request(
    request_id: int,
    monitor_id: Any,
    columns: Mapping[str, Iterable[str]] = MONITORED_COLUMNS,
    database: str = "Open_vSwitch",
) -> bytes:
    """A ``monitor`` request for ``columns`` of each table, initial state included (§4.1.5)."""
    requests = {table: {"columns": list(cols)} for table, cols in columns.items()}
    return encode(
        {"method": "monitor", "params": [database, monitor_id, requests], "id": request_id}
    )


def echo_reply(request: Request) -> bytes:
    """The answer to an ``echo`` request: its params, unchanged (§4.1.11)."""
    return encode({"id": request.id, "result": request.params, "error": None})


# -- values and row changes ------------------------------------------------------------------


def decode_value(value: Any) -> Any:
    """OVSDB notation (§5.1) → Python: atoms as they are, uuid → :class:`Uuid`, set → list,
    map → dict. Raises :class:`ProtocolError` on a malformed value."""
    if isinstance(value, list):
        if len(value) != 2 or not isinstance(value[0], str):
            raise ProtocolError(f"malformed OVSDB value {value!r:.80}")
        tag, body = value
        if tag in ("uuid", "named-uuid"):
            if not isinstance(body, str):
                raise ProtocolError(f"malformed uuid {body!r:.80}")
            return Uuid(body)
        if tag == "set":
            if not isinstance(body, list):
                raise ProtocolError(f"malformed set {body!r:.80}")
            return [_atom(v) for v in body]
        if tag == "map":
            if not isinstance(body, list):
                raise ProtocolError(f"malformed map {body!r:.80}")
            out: dict[Any, Any] = {}
            for pair in body:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ProtocolError(f"malformed map pair {pair!r:.80}")
                out[_atom(pair[0])] = _atom(pair[1])
            return out
        raise ProtocolError(f"unknown OVSDB value tag {tag!r:.40}")
    if isinstance(value, dict):
        raise ProtocolError(f"malformed OVSDB value {value!r:.80}")
    return value


def _atom(value: Any) -> Any:
    if isinstance(value, list):
        if len(value) == 2 and value[0] in ("uuid", "named-uuid") and isinstance(value[1], str):
            return Uuid(value[1])
        raise ProtocolError(f"malformed OVSDB atom {value!r:.80}")
    if isinstance(value, dict):
        raise ProtocolError(f"malformed OVSDB atom {value!r:.80}")
    return value


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row inserted (``old`` None), deleted (``new`` None) or modified."""

    table: str
    uuid: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None


def _decode_row(row: Any, where: str) -> dict[str, Any] | None:
    if row is None:
        return None
    if not isinstance(row, dict):
        raise ProtocolError(f"{where}: row is a {type(row).__name__}, not an object")
    return {col: decode_value(v) for col, v in row.items()}


def decode_table_updates(updates: Any) -> list[RowChange]:
    """``<table-updates>`` (a monitor reply or the 2nd param of ``update``) → row changes."""
    if not isinstance(updates, dict):
        raise ProtocolError(f"table-updates is a {type(updates).__name__}, not an object")
    out: list[RowChange] = []
    for table, rows in updates.items():
        if not isinstance(rows, dict):
            raise ProtocolError(f"{table}: table-update is not an object")
        for uuid, change in rows.items():
            where = f"{table} {uuid}"
            if not isinstance(change, dict):
                raise ProtocolError(f"{where}: row-update is not an object")
            old = _decode_row(change.get("old"), where)
            new = _decode_row(change.get("new"), where)
            if old is None and new is None:
                raise ProtocolError(f"{where}: row-update has neither old nor new")
            out.append(RowChange(table, uuid, old, new))
    return out


def update_params(params: Any) -> tuple[Any, Any]:
    """``update`` params → (monitor id, table-updates) (§4.1.6)."""
    if not isinstance(params, Sequence) or isinstance(params, str) or len(params) != 2:
        raise ProtocolError("update: params are not [json-value, table-updates]")
    return params[0], params[1]
