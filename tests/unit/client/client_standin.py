"""A STAND-IN for the analyzer's REST API, on a real loopback socket (port 0).

It is not our analyzer: it serves the responses DESIGN.md §2.2 documents (Skydive v0.28's REST
API) so that the client can be tested before, and independently of, the real resources.  CRUD
resources keep their objects in memory (201 with the UUID filled in, object map on list, 404,
409 on a duplicate capture, 400 naming a missing field); ``POST /api/topology`` answers from
a table of canned queries (400 ``{"Error": ...}`` otherwise); ``POST /login`` checks form
credentials and sets the ``authtoken`` cookie.  Every request is recorded for assertions.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

RESOURCES = ("capture", "alert", "noderule", "edgerule", "node", "edge")
REQUIRED = {
    "capture": "GremlinQuery",
    "alert": "Expression",
    "noderule": "Action",
    "edgerule": "Src",
    "node": "ID",
    "edge": "ID",
}

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StandIn:
    """State and behaviour of the stand-in analyzer; tweak the fields in a test."""

    host_id: str = "standin"
    users: dict[str, str] = field(default_factory=dict)  # auth on when not empty
    login_route: bool = True
    queries: dict[str, Any] = field(default_factory=dict)
    dot: str = 'digraph G {\n  "n1" [label="eth0"];\n}\n'
    store: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {r: {} for r in RESOURCES}
    )
    overrides: dict[tuple[str, str], Callable[[Seen], Reply]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    # -- dispatch ------------------------------------------------------------------------

    def handle(self, seen: Seen) -> Reply:
        self.seen.append(seen)
        override = self.overrides.get((seen.method, seen.path))
        if override is not None:
            return override(seen)
        if seen.path == "/login" and seen.method == "POST":
            if not self.login_route:
                return _json(404, {"Error": "no route /login"})
            return self._login(seen)
        if self.users and not self._authorized(seen):
            return _json(401, {"Error": "Unauthorized"})
        if seen.path in ("/api", "/api/"):
            return _json(200, {"Host": self.host_id, "Version": "0.28.0", "Service": "analyzer"})
        if seen.path == "/api/status":
            return _json(
                200,
                {
                    "Host": self.host_id,
                    "Service": "analyzer",
                    "Version": "0.28.0",
                    "Agents": {"node1": {"Host": "node1", "Addr": "127.0.0.1", "Port": 8081}},
                    "Subscribers": {},
                },
            )
        if seen.path == "/api/topology":
            if seen.method == "GET":
                return _json(200, {"Nodes": [], "Edges": []})
            return self._query(seen)
        parts = seen.path.strip("/").split("/")
        if len(parts) in (2, 3) and parts[0] == "api" and parts[1] in RESOURCES:
            return self._crud(seen, parts[1], parts[2] if len(parts) == 3 else None)
        return _json(404, {"Error": f"no route {seen.path}"})

    def _authorized(self, seen: Seen) -> bool:
        if seen.headers.get("x-auth-token") in self.tokens:
            return True
        auth = seen.headers.get("authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            return self.users.get(user) == password
        return False

    def _login(self, seen: Seen) -> Reply:
        form = {k: v[0] for k, v in parse_qs(seen.body.decode()).items()}
        user, password = form.get("username", ""), form.get("password", "")
        if not self.users or self.users.get(user) != password:
            return _json(401, {"Error": "Unauthorized"})
        token = uuid.uuid4().hex
        self.tokens.add(token)
        return 200, {"Set-Cookie": f"authtoken={token}; Path=/"}, b""

    def _query(self, seen: Seen) -> Reply:
        try:
            body = seen.json()
            gremlin = body["GremlinQuery"]
        except (ValueError, KeyError, TypeError):
            return _json(400, {"Error": "GremlinQuery: missing field"})
        if gremlin not in self.queries:
            return _json(400, {"Error": f"Error while parsing query at 1: {gremlin!r}"})
        if "graphviz" in seen.headers.get("accept", ""):
            return 200, {"Content-Type": "text/vnd.graphviz"}, self.dot.encode()
        return _json(200, self.queries[gremlin])

    def _crud(self, seen: Seen, resource: str, ident: str | None) -> Reply:
        objs = self.store[resource]
        key = "ID" if resource in ("node", "edge") else "UUID"
        if seen.method == "GET" and ident is None:
            return _json(200, objs)
        if seen.method == "GET":
            if ident not in objs:
                return _json(404, {"Error": f"{resource} {ident} not found"})
            return _json(200, objs[ident])
        if seen.method == "DELETE" and ident is not None:
            if objs.pop(ident, None) is None:
                return _json(404, {"Error": f"{resource} {ident} not found"})
            return 200, {}, b""
        if seen.method == "POST" and ident is None:
            try:
                obj = seen.json()
            except ValueError:
                return _json(400, {"Error": "body is not JSON"})
            required = REQUIRED[resource]
            if not obj.get(required):
                return _json(400, {"Error": f"{required}: missing field"})
            if resource == "capture" and any(
                c["GremlinQuery"] == obj["GremlinQuery"] for c in objs.values()
            ):
                return _json(409, {"Error": "Duplicate capture"})
            obj.setdefault(key, str(uuid.uuid4()))
            objs[obj[key]] = obj
            return _json(201, obj)
        if seen.method == "PATCH" and ident is not None:
            if ident not in objs:
                return _json(404, {"Error": f"{resource} {ident} not found"})
            return 304, {}, b""
        return _json(405, {"Error": "method not allowed"})


def _json(status: int, body: Any) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def slow(seconds: float) -> Callable[[Seen], Reply]:
    def reply(seen: Seen) -> Reply:
        time.sleep(seconds)
        return _json(200, {})

    return reply


def fixed(status: int, content_type: str, body: bytes) -> Callable[[Seen], Reply]:
    return lambda seen: (status, {"Content-Type": content_type}, body)


@contextmanager
def serve(state: StandIn | None = None) -> Iterator[StandIn]:
    """Run the stand-in on 127.0.0.1 on a free port for the duration of the block."""
    state = state or StandIn()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = state.handle(Seen(self.command, self.path, headers, body))
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            if status != 304:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if status != 304:
                self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A client that gave up (the timeout test) closed its end: not an error here.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """``skydive client ARGV`` in-process (``capsys``: pytest's): exit code, stdout, stderr."""
    from pyskydive.cli.main import main

    code = main(["client", *argv])
    out, err = capsys.readouterr()
    return code, out, err
