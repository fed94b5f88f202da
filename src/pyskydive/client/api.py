"""A small synchronous client of the analyzer's REST API (DESIGN.md §2.2), on httpx.

::

    with Client("http://127.0.0.1:8082", username="admin", password="secret") as client:
        client.status()
        client.query("G.V().Has('Type', 'host')")
        capture = client.create("capture", {"GremlinQuery": "G.V().Has('Name', 'eth0')"})
        client.delete("capture", capture["UUID"])

Every failure, whatever its cause (connection refused, timeout, TLS, an HTTP error status, a
body that is not JSON), is translated in exactly one place, :meth:`Client._send`, into a
:class:`ClientError` whose ``str()`` is one line naming the analyzer address, the HTTP status
and the server's reason (its ``{"Error": ...}`` body, or the first line of a text body).

Authentication, when a username is given, happens once before the first request: ``POST
/login`` with the form fields ``username`` and ``password``; the token it returns (the
``authtoken`` cookie, or the body) is then sent as ``X-Auth-Token`` and as the cookie.  An
analyzer without a ``/login`` route (404/405) gets HTTP Basic credentials on every request
instead.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from pyskydive.errors import SkydiveError

__all__ = ["DOT_MEDIA_TYPE", "RESOURCES", "Client", "ClientError"]

#: The CRUD resources under ``/api/`` (same shape: list, get, create, patch, delete).
RESOURCES: tuple[str, ...] = ("capture", "alert", "noderule", "edgerule", "node", "edge")

#: ``Accept`` value that asks ``POST /api/topology`` for Graphviz DOT instead of JSON.
DOT_MEDIA_TYPE = "text/vnd.graphviz"

_MAX_REASON = 300


class ClientError(SkydiveError):
    """A request to the analyzer failed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, reason: str = "") -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


def server_reason(response: httpx.Response) -> str:
    """The reason an error response gives: ``{"Error": ...}`` (or similar), else its text."""
    text = response.text
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("Error", "error", "Message", "message", "detail", "Reason"):
            if body.get(key):
                value = body[key]
                return _one_line(value if isinstance(value, str) else str(value))
    if "html" in response.headers.get("content-type", ""):
        return ""
    return _one_line(text)


def _os_reason(exc: BaseException) -> str:
    """A short reason from the OS error under an httpx exception ('connection refused')."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause.reason or cause}"
        if isinstance(cause, socket.gaierror):
            return f"unknown host ({cause.strerror})" if cause.strerror else "unknown host"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:]
        cause = cause.__cause__ or cause.__context__
    return _one_line(str(exc)) or type(exc).__name__


class Client:
    """The analyzer's REST API; use as a context manager (or call :meth:`close`)."""

    def __init__(
        self,
        base_url: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        verify: bool | ssl.SSLContext = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password or ""
        self.timeout = timeout
        self._where = _where(httpx.URL(self.base_url))
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, verify=verify, transport=transport
        )
        self._logged_in = username is None

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one place errors are translated ----------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            return self._http.request(method, path, json=json, data=data, headers=headers)
        except httpx.TimeoutException as exc:
            raise ClientError(
                f"the analyzer at {self._where} did not answer {method} {path} "
                f"within {self.timeout:g}s"
            ) from exc
        except httpx.ConnectError as exc:
            raise ClientError(
                f"cannot reach the analyzer at {self._where}: {_os_reason(exc)}"
            ) from exc
        except httpx.HTTPError as exc:
            raise ClientError(
                f"{method} {path} to the analyzer at {self._where} failed: {_os_reason(exc)}"
            ) from exc

    def _fail(self, method: str, path: str, response: httpx.Response) -> ClientError:
        reason = server_reason(response)
        status = f"{response.status_code} {response.reason_phrase}".strip()
        tail = f": {reason}" if reason and reason != response.reason_phrase else ""
        return ClientError(
            f"{method} {path}: the analyzer at {self._where} answered {status}{tail}",
            status=response.status_code,
            reason=reason,
        )

    def _login(self) -> None:
        if self._logged_in:
            return
        self._logged_in = True
        assert self.username is not None
        response = self._send(
            "POST", "/login", data={"username": self.username, "password": self.password}
        )
        if response.status_code in (404, 405):
            # No login route: the analyzer has no auth, or takes Basic credentials directly.
            self._http.auth = httpx.BasicAuth(self.username, self.password)
            return
        if response.status_code in (401, 403):
            reason = server_reason(response) or "bad username or password"
            raise ClientError(
                f"login as {self.username!r} refused by the analyzer at {self._where} "
                f"({response.status_code}): {reason}",
                status=response.status_code,
                reason=reason,
            )
        if response.is_error:
            raise self._fail("POST", "/login", response)
        token = response.cookies.get("authtoken") or _token_from_body(response)
        if token:
            self._http.headers["X-Auth-Token"] = token
            self._http.cookies.set("authtoken", token)
        else:
            self._http.auth = httpx.BasicAuth(self.username, self.password)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send one request (logging in first if needed); raise ClientError on an error status
        unless it is listed in ``ok``."""
        self._login()
        response = self._send(method, path, json=json, headers=headers)
        if response.is_error and response.status_code not in ok:
            raise self._fail(method, path, response)
        return response

    def _json(self, method: str, path: str, *, json: Any = None) -> Any:
        response = self.request(method, path, json=json)
        return _decode(response, method, path, self._where)

    # -- service -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """``GET /api``: ``{"Host", "Version", "Service"}``."""
        return _expect_dict(self._json("GET", "/api"), "GET /api")

    def status(self) -> dict[str, Any]:
        """``GET /api/status``."""
        return _expect_dict(self._json("GET", "/api/status"), "GET /api/status")

    def topology(self) -> dict[str, Any]:
        """``GET /api/topology``: the whole graph, ``{"Nodes": [...], "Edges": [...]}``."""
        return _expect_dict(self._json("GET", "/api/topology"), "GET /api/topology")

    def query(self, gremlin: str) -> Any:
        """``POST /api/topology`` with a Gremlin query: its JSON result."""
        return self._json("POST", "/api/topology", json={"GremlinQuery": gremlin})

    def query_dot(self, gremlin: str) -> str:
        """The same query, answered as Graphviz DOT text."""
        response = self.request(
            "POST",
            "/api/topology",
            json={"GremlinQuery": gremlin},
            headers={"Accept": DOT_MEDIA_TYPE},
        )
        return response.text

    # -- CRUD resources ------------------------------------------------------------------

    def list(self, resource: str) -> dict[str, dict[str, Any]]:
        """``GET /api/RESOURCE``: the object map ``{id: resource}``."""
        path = f"/api/{_resource(resource)}"
        body = self._json("GET", path)
        if body is None:
            return {}
        return _expect_dict(body, f"GET {path}")

    def get(self, resource: str, ident: str) -> dict[str, Any]:
        path = f"/api/{_resource(resource)}/{_ident(ident)}"
        return _expect_dict(self._json("GET", path), f"GET {path}")

    def create(self, resource: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /api/RESOURCE``: the created resource, UUID filled in by the analyzer."""
        path = f"/api/{_resource(resource)}"
        response = self.request("POST", path, json=dict(obj))
        if not response.content:
            return dict(obj)
        return _expect_dict(_decode(response, "POST", path, self._where), f"POST {path}")

    def patch(
        self, resource: str, ident: str, ops: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any] | None:
        """``PATCH`` with an RFC 6902 JSON Patch; None when the analyzer answers 304."""
        path = f"/api/{_resource(resource)}/{_ident(ident)}"
        response = self.request("PATCH", path, json=[dict(op) for op in ops])
        if response.status_code == 304 or not response.content:
            return None
        return _expect_dict(_decode(response, "PATCH", path, self._where), f"PATCH {path}")

    def delete(self, resource: str, ident: str) -> None:
        self.request("DELETE", f"/api/{_resource(resource)}/{_ident(ident)}")


def _where(url: httpx.URL) -> str:
    """``host:port`` of the analyzer, for messages (the port even when it is the default)."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{host}:{port}"


def _resource(resource: str) -> str:
    if resource not in RESOURCES:
        raise ValueError(f"unknown resource {resource!r} (one of {', '.join(RESOURCES)})")
    return resource


def _ident(ident: str) -> str:
    if not ident or "/" in ident or ident in (".", ".."):
        raise ClientError(f"invalid identifier {ident!r}")
    return ident


def _decode(response: httpx.Response, method: str, path: str, where: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        ctype = response.headers.get("content-type", "no content type")
        raise ClientError(
            f"{method} {path}: the analyzer at {where} answered {response.status_code} "
            f"with a body that is not JSON ({ctype})",
            status=response.status_code,
        ) from exc


def _expect_dict(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ClientError(f"{what}: expected a JSON object, got {type(body).__name__}")
    return body


def _token_from_body(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text if text and " " not in text and len(text) < 512 else None
    if isinstance(body, dict):
        for key in ("Token", "token", "AuthToken", "authtoken"):
            if isinstance(body.get(key), str) and body[key]:
                return str(body[key])
    if isinstance(body, str) and body:
        return body
    return None
