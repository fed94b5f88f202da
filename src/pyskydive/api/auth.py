"""Authentication and roles of the API (DESIGN.md §2.2): backends, tokens, ``/login``, middleware.

Theory of operation
-------------------
A process builds one :class:`Authenticator` per backend it uses (the analyzer: ``api`` for
its users and ``cluster`` for its agents; the agent: ``api``) with :func:`build_auth`, which
reads htpasswd files at start-up and fails with a one-line :class:`ConfigError` naming the key.

:class:`AuthMiddleware` wraps the whole Starlette app, so every route, including those added
later, is covered.  Paths under ``/api`` and ``/ws`` need credentials; ``/login`` and the rest
(the web UI's assets) do not.  ``/ws/agent/...`` is checked against the cluster backend, all
the rest against the API backend.  Credentials, first found wins:

- ``X-Auth-Token: TOKEN`` header, the ``authtoken`` cookie (the web UI), and for WebSocket
  handshakes also the ``x-auth-token`` query parameter (browsers cannot set headers there);
- ``Authorization: Basic base64(user:password)`` (Skydive's clients and agents); a token in
  the password place is accepted too.

A failure is ``401 {"Error": reason}``; a WebSocket handshake is refused with that HTTP
response before it is accepted.  An authenticated guest asking for more than reading gets 403.

Tokens are random (``secrets.token_urlsafe``) and kept in memory with a 24 h lifetime rather
than signed and stateless: the analyzer is one process, an in-memory token can be revoked
(``/logout``), and no signing key has to be configured, kept secret and rotated.  A restart
logs everybody out; clients log in again.

bcrypt is slow by design (tens of milliseconds per check), so a successful password check is
remembered for :data:`VERIFY_CACHE_SECONDS` (keyed by a SHA-256 of user and password, never
the password itself) and Basic auth keeps the API's throughput; checks run in a worker thread
so the event loop never blocks.

Brute force: each failed password check counts against the user name and against the remote
address; a further attempt on either waits ``0.25 s * 2^(failures-1)``, at most 5 s, before it
is answered (:class:`Throttle`).  Counters are forgotten 15 minutes after the last failure
and reset by a success.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import bcrypt
import orjson
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from pyskydive.config import Config
from pyskydive.config.model import NOAUTH, AuthBackendConfig, Role
from pyskydive.errors import ConfigError

__all__ = [
    "COOKIE",
    "SCOPE_KEY",
    "AuthMiddleware",
    "AuthPolicy",
    "Authenticator",
    "BasicBackend",
    "Identity",
    "NoAuthBackend",
    "Throttle",
    "TokenStore",
    "allowed",
    "auth_middleware",
    "auth_routes",
    "build_auth",
    "load_htpasswd",
    "login_endpoint",
    "logout_endpoint",
    "open_policy",
    "parse_htpasswd",
]

log = logging.getLogger(__name__)

COOKIE = "authtoken"
TOKEN_HEADER = "X-Auth-Token"
TOKEN_QUERY = "x-auth-token"
#: Where the middleware leaves the caller's :class:`Identity` in the ASGI scope.
SCOPE_KEY = "skydive.identity"
TOKEN_TTL = 24 * 3600.0
VERIFY_CACHE_SECONDS = 60.0
_MAX_TOKENS = 100_000
_MAX_CACHE = 10_000
_MAX_LOGIN_BODY = 64 * 1024
_BCRYPT_RE = re.compile(rb"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, and with which role."""

    username: str
    role: Role


#: The caller when the backend is ``noauth``.
ANONYMOUS = Identity("anonymous", "admin")


# --- roles -----------------------------------------------------------------------------

_GUEST_WS = frozenset({"/ws", "/ws/graph", "/ws/subscriber", "/ws/subscriber/flow"})
_GUEST_POST = frozenset({"/api/topology"})  # a Gremlin query is a read


def allowed(role: Role, kind: str, method: str, path: str) -> bool:
    """May ``role`` do ``method`` on ``path`` (``kind``: ``http`` or ``websocket``)?

    Admin: everything.  Guest: every GET/HEAD (topology, status, resource lists and items),
    Gremlin queries (``POST /api/topology``) and the subscriber streams; nothing that writes.
    """
    if role == "admin":
        return True
    path = path.rstrip("/") or "/"
    if kind == "websocket":
        return path in _GUEST_WS
    return method in ("GET", "HEAD", "OPTIONS") or (method == "POST" and path in _GUEST_POST)


# --- htpasswd ----------------------------------------------------------------------------


def parse_htpasswd(text: str) -> dict[str, bytes]:
    """``user:bcrypt-hash`` lines (blank lines and ``#`` comments skipped) -> {user: hash}.

    Raises ``ValueError("line N: ...")`` on a malformed line, a hash that is not bcrypt
    (``$2y$``, ``$2b$``, ``$2a$``; htpasswd's MD5/SHA/crypt are refused) or a repeated user.
    """
    users: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed:
            raise ValueError(f"line {number}: expected USER:HASH")
        digest = hashed.encode("ascii", errors="replace")
        if not _BCRYPT_RE.fullmatch(digest):
            raise ValueError(
                f"line {number}: user {user!r} has no bcrypt hash "
                "(expected $2y$/$2b$/$2a$; create it with `htpasswd -B`)"
            )
        if user in users:
            raise ValueError(f"line {number}: user {user!r} listed twice")
        users[user] = digest
    return users


def load_htpasswd(path: str, key: str) -> dict[str, bytes]:
    """Read and parse an htpasswd file; any problem is a ``ConfigError`` naming ``key``."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as exc:
        raise ConfigError(key, f"cannot read htpasswd file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(key, f"htpasswd file {path} is not UTF-8 text") from exc
    try:
        return parse_htpasswd(text)
    except ValueError as exc:
        raise ConfigError(key, f"htpasswd file {path}: {exc}") from exc


# --- backends ----------------------------------------------------------------------------


class NoAuthBackend:
    """``type: noauth``: everybody is admin, no credentials needed."""

    open = True

    def __init__(self, name: str = NOAUTH) -> None:
        self.name = name

    async def verify(self, username: str, password: str) -> Identity | None:
        return Identity(username or "anonymous", "admin")

    def cached(self, username: str, password: str) -> Identity | None:
        return Identity(username or "anonymous", "admin")


def _check_bcrypt(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # e.g. a password longer than bcrypt's 72 bytes: not this one
        return False


class BasicBackend:
    """``type: basic``: inline users (plain passwords) and htpasswd users (bcrypt)."""

    open = False

    def __init__(
        self,
        name: str,
        *,
        users: dict[str, str] | None = None,
        hashes: dict[str, bytes] | None = None,
        role: Role = "admin",
        roles: dict[str, Role] | None = None,
        clock: Clock = time.monotonic,
        cache_seconds: float = VERIFY_CACHE_SECONDS,
    ) -> None:
        self.name = name
        self.users = dict(users or {})
        self.hashes = dict(hashes or {})
        self.role: Role = role
        self.roles = dict(roles or {})
        self.clock = clock
        self.cache_seconds = cache_seconds
        self._cache: dict[bytes, float] = {}
        self.bcrypt_checks = 0  # for tests and status

    def _identity(self, username: str) -> Identity:
        return Identity(username, self.roles.get(username, self.role))

    @staticmethod
    def _cache_key(username: str, password: str) -> bytes:
        return hashlib.sha256(f"{username}\0{password}".encode()).digest()

    def cached(self, username: str, password: str) -> Identity | None:
        """The identity if this pair was verified recently (no bcrypt), else None."""
        expires = self._cache.get(self._cache_key(username, password))
        if expires is not None and expires > self.clock():
            return self._identity(username)
        return None

    async def verify(self, username: str, password: str) -> Identity | None:
        inline = self.users.get(username)
        if inline is not None:
            ok = hmac.compare_digest(inline.encode(), password.encode())
            return self._identity(username) if ok else None
        hashed = self.hashes.get(username)
        if hashed is None:
            return None
        if self.cached(username, password) is not None:
            return self._identity(username)
        self.bcrypt_checks += 1
        ok = await asyncio.to_thread(_check_bcrypt, password.encode(), hashed)
        if not ok:
            return None
        if len(self._cache) >= _MAX_CACHE:
            self._cache.clear()
        self._cache[self._cache_key(username, password)] = self.clock() + self.cache_seconds
        return self._identity(username)


Backend = NoAuthBackend | BasicBackend


def build_backend(name: str, config: AuthBackendConfig | None) -> Backend:
    """The backend ``auth.<name>`` (``noauth`` when ``config`` is None); reads its file."""
    if config is None or config.type == "noauth":
        return NoAuthBackend(name)
    hashes = load_htpasswd(config.file, f"auth.{name}.file") if config.file else {}
    return BasicBackend(
        name, users=config.users, hashes=hashes, role=config.role, roles=config.roles
    )


# --- tokens and throttling -----------------------------------------------------------------


class TokenStore:
    """Random bearer tokens -> identity, in memory, each valid for ``ttl`` seconds."""

    def __init__(self, ttl: float = TOKEN_TTL, clock: Clock = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._tokens: dict[str, tuple[Identity, float]] = {}

    def issue(self, identity: Identity) -> str:
        now = self.clock()
        if len(self._tokens) >= _MAX_TOKENS:
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            while len(self._tokens) >= _MAX_TOKENS:  # still full: drop the oldest
                del self._tokens[next(iter(self._tokens))]
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (identity, now + self.ttl)
        return token

    def lookup(self, token: str) -> Identity | None:
        entry = self._tokens.get(token)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            del self._tokens[token]
            return None
        return entry[0]

    def revoke(self, token: str) -> None:
        self._tokens.pop(token, None)

    def __len__(self) -> int:
        return len(self._tokens)


@dataclass
class Throttle:
    """Failure counters per key (``user:NAME``, ``remote:IP``) and the delay they impose."""

    clock: Clock = time.monotonic
    base: float = 0.25
    maximum: float = 5.0
    forget_after: float = 900.0
    max_keys: int = 10_000
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)

    def failures(self, key: str) -> int:
        entry = self._failures.get(key)
        if entry is None:
            return 0
        if self.clock() - entry[1] > self.forget_after:
            del self._failures[key]
            return 0
        return entry[0]

    def delay(self, keys: Iterable[str]) -> float:
        worst = max((self.failures(k) for k in keys), default=0)
        return 0.0 if worst == 0 else min(self.base * 2 ** (worst - 1), self.maximum)

    def failed(self, keys: Iterable[str]) -> None:
        now = self.clock()
        for key in keys:
            count = self.failures(key)
            if key not in self._failures and len(self._failures) >= self.max_keys:
                del self._failures[next(iter(self._failures))]  # the oldest key
            self._failures.pop(key, None)
            self._failures[key] = (count + 1, now)

    def succeeded(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)


# --- the authenticator ---------------------------------------------------------------------


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


class Authenticator:
    """One backend with its tokens and brute-force throttle."""

    def __init__(
        self,
        backend: Backend,
        *,
        tokens: TokenStore | None = None,
        throttle: Throttle | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.backend = backend
        self.tokens = tokens or TokenStore()
        self.throttle = throttle or Throttle()
        self.sleep = sleep

    @property
    def open(self) -> bool:
        return self.backend.open

    async def check_password(self, username: str, password: str, remote: str) -> Identity | None:
        """Verify a password, slowed down by earlier failures of this user or remote."""
        hit = self.backend.cached(username, password)
        if hit is not None:
            return hit
        keys = (f"user:{username}", f"remote:{remote}")
        delay = self.throttle.delay(keys)
        if delay > 0:
            await self.sleep(delay)
        identity = await self.backend.verify(username, password)
        if identity is None:
            self.throttle.failed(keys)
            log.info(
                "auth %s: failed password check for %r from %s", self.backend.name, username, remote
            )
        else:
            self.throttle.succeeded(keys)
        return identity

    async def login(self, username: str, password: str, remote: str) -> tuple[Identity, str] | None:
        identity = await self.check_password(username, password, remote)
        if identity is None:
            return None
        return identity, self.tokens.issue(identity)

    async def authenticate(self, conn: HTTPConnection, *, websocket: bool) -> Identity | str:
        """The caller's identity, or the reason it is refused."""
        if self.backend.open:
            return ANONYMOUS
        token = conn.headers.get(TOKEN_HEADER) or conn.cookies.get(COOKIE)
        if not token and websocket:
            token = conn.query_params.get(TOKEN_QUERY)
        if token:
            identity = self.tokens.lookup(token)
            if identity is not None:
                return identity
        header = conn.headers.get("Authorization")
        if header is None:
            # a stale cookie next to good Basic credentials is not an error, hence the order
            return "invalid or expired token" if token else "authentication required"
        creds = _basic_credentials(header)
        if creds is None:
            return "malformed Authorization header (expected Basic)"
        username, password = creds
        by_token = self.tokens.lookup(password)
        if by_token is not None:
            return by_token
        remote = conn.client.host if conn.client else "unknown"
        identity = await self.check_password(username, password, remote)
        return identity if identity is not None else "wrong user name or password"


@dataclass(eq=False)
class AuthPolicy:
    """The authenticators of one process: ``api`` for everything, ``cluster`` (analyzer only)
    for ``/ws/agent/...``."""

    api: Authenticator
    cluster: Authenticator | None = None

    def is_cluster_path(self, path: str) -> bool:
        """Agents' endpoints: checked against the cluster backend, without roles."""
        return self.cluster is not None and path.startswith("/ws/agent/")

    def for_path(self, path: str) -> Authenticator:
        if self.cluster is not None and self.is_cluster_path(path):
            return self.cluster
        return self.api


def build_auth(config: Config, service: str) -> AuthPolicy:
    """The :class:`AuthPolicy` of ``service`` ("analyzer" or "agent"); reads htpasswd files."""
    built: dict[str, Backend] = {}

    def backend(name: str) -> Backend:
        if name not in built:
            built[name] = build_backend(name, config.auth.get(name))
        return built[name]

    if service == "analyzer":
        api = Authenticator(backend(config.analyzer.auth.api.backend))
        cluster_backend = backend(config.analyzer.auth.cluster.backend)
        # The same backend for both: share the authenticator (one cache, one throttle).
        cluster = api if cluster_backend is api.backend else Authenticator(cluster_backend)
        return AuthPolicy(api, cluster)
    return AuthPolicy(Authenticator(backend(config.agent.auth.api.backend)))


# --- HTTP: middleware and /login -----------------------------------------------------------


def _protected(path: str) -> bool:
    return path in ("/api", "/ws") or path.startswith(("/api/", "/ws/"))


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class AuthMiddleware:
    """ASGI middleware enforcing :class:`AuthPolicy` on ``/api`` and ``/ws`` paths."""

    def __init__(self, app: ASGIApp, policy: AuthPolicy) -> None:
        self.app = app
        self.policy = policy
        # noauth everywhere (the default): no per-request work beyond this flag
        self.open = policy.api.open and (policy.cluster is None or policy.cluster.open)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        path = scope.get("path", "")
        if kind not in ("http", "websocket") or not _protected(path):
            await self.app(scope, receive, send)
            return
        if self.open:
            scope[SCOPE_KEY] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        authenticator = self.policy.for_path(path)
        websocket = kind == "websocket"
        result = await authenticator.authenticate(HTTPConnection(scope), websocket=websocket)
        denial: Response | None = None
        if isinstance(result, str):
            denial = _JSON(
                {"Error": result},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="Skydive"'},
            )
        elif not self.policy.is_cluster_path(path) and not allowed(
            result.role, kind, scope.get("method", "GET"), path
        ):
            what = "this WebSocket endpoint" if websocket else f"{scope.get('method')} {path}"
            denial = _JSON(
                {"Error": f"user {result.username!r} ({result.role}) may not use {what}"},
                status_code=403,
            )
        if denial is None:
            scope[SCOPE_KEY] = result
            await self.app(scope, receive, send)
        elif websocket:
            await WebSocket(scope, receive, send).send_denial_response(denial)
        else:
            await denial(scope, receive, send)


async def _form(request: Request) -> dict[str, str]:
    """The login body: urlencoded form (as Skydive's clients send), or a JSON object."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_LOGIN_BODY:
            raise ValueError("request body too large")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise ValueError("form is not UTF-8") from exc


async def login_endpoint(request: Request, authenticator: Authenticator) -> Response:
    """``POST /login``: form fields ``username``, ``password`` -> token + ``authtoken`` cookie."""
    try:
        form = _form_fields(await _form(request))
    except ValueError as exc:
        return _JSON({"Error": str(exc)}, status_code=400)
    username, password = form
    remote = request.client.host if request.client else "unknown"
    result = await authenticator.login(username, password, remote)
    if result is None:
        return _JSON({"Error": "wrong user name or password"}, status_code=401)
    identity, token = result
    response = _JSON({"Token": token, "Username": identity.username, "Role": identity.role})
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(authenticator.tokens.ttl),
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


def _form_fields(form: MutableMapping[str, str]) -> tuple[str, str]:
    for name in ("username", "password"):
        if name not in form:
            raise ValueError(f"missing form field {name!r}")
    return form["username"], form["password"]


async def logout_endpoint(request: Request, authenticator: Authenticator) -> Response:
    """``POST /logout``: revoke the caller's token (cookie or header) and clear the cookie."""
    token = request.headers.get(TOKEN_HEADER) or request.cookies.get(COOKIE)
    if token:
        authenticator.tokens.revoke(token)
    response = _JSON({})
    response.delete_cookie(COOKIE, path="/")
    return response


def auth_routes(policy: AuthPolicy) -> list[Route]:
    """``POST /login`` and ``POST /logout`` of the API backend."""

    async def login(request: Request) -> Response:
        return await login_endpoint(request, policy.api)

    async def logout(request: Request) -> Response:
        return await logout_endpoint(request, policy.api)

    return [Route("/login", login, methods=["POST"]), Route("/logout", logout, methods=["POST"])]


def auth_middleware(policy: AuthPolicy) -> list[Middleware]:
    """The middleware list for ``Starlette(middleware=...)``."""
    return [Middleware(AuthMiddleware, policy=policy)]


def open_policy() -> AuthPolicy:
    """No authentication (``noauth``): what a process without auth settings gets."""
    return AuthPolicy(Authenticator(NoAuthBackend()))
