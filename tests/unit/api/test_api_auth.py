"""Authentication: htpasswd, bcrypt, tokens, roles, brute-force delay, config, middleware."""

from __future__ import annotations

import asyncio
import base64
import warnings
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from pyskydive.api.auth import (
    SCOPE_KEY,
    Authenticator,
    AuthPolicy,
    BasicBackend,
    Identity,
    NoAuthBackend,
    Throttle,
    TokenStore,
    allowed,
    auth_middleware,
    auth_routes,
    build_auth,
    load_htpasswd,
    parse_htpasswd,
)
from pyskydive.config import Config, ConfigError, load_config

with warnings.catch_warnings():
    # starlette 1.10 asks for the httpx2 fork; the pinned httpx works the same for these tests
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient, WebSocketDenialResponse

# Cost 4: the minimum, so the tests stay fast; the format is what htpasswd -B writes.
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
HASH_2Y = HASH.replace("$2b$", "$2y$", 1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- htpasswd ------------------------------------------------------------------------------


def test_parse_htpasswd_skips_comments_and_blank_lines() -> None:
    text = f"# users\n\nalice:{HASH_2Y}\n  bob:{HASH}  \n"
    users = parse_htpasswd(text)
    assert set(users) == {"alice", "bob"}
    assert users["alice"] == HASH_2Y.encode()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("alice", "line 1: expected USER:HASH"),
        (":" + HASH, "line 1: expected USER:HASH"),
        ("# c\nalice:", "line 2: expected USER:HASH"),
        ("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "line 1: user 'alice' has no bcrypt hash"),
        ("alice:$apr1$abc$defghijklmnopqrstuvwx.", "line 1: user 'alice' has no bcrypt hash"),
        ("alice:$2y$05$tooshort", "line 1: user 'alice' has no bcrypt hash"),
        (f"alice:{HASH}\nalice:{HASH}", "line 2: user 'alice' listed twice"),
    ],
)
def test_parse_htpasswd_bad_lines(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_htpasswd(text)
    assert str(info.value).startswith(reason)


def test_load_htpasswd_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_htpasswd(str(tmp_path / "missing"), "auth.basic.file")
    assert str(info.value).startswith("auth.basic.file: cannot read htpasswd file ")
    bad = tmp_path / "htpasswd"
    bad.write_text("alice:plain\n")
    with pytest.raises(ConfigError) as info:
        load_htpasswd(str(bad), "auth.basic.file")
    message = str(info.value)
    assert message.startswith(f"auth.basic.file: htpasswd file {bad}: line 1: ")
    assert "\n" not in message
    bad.write_bytes(b"\xff\xfe:x\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_htpasswd(str(bad), "auth.basic.file")


# --- config --------------------------------------------------------------------------------


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "skydive.yml"
    path.write_text(text)
    return load_config(str(path), env=env or {})


def config_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_auth_defaults() -> None:
    cfg = Config()
    assert cfg.auth == {}
    assert cfg.analyzer.auth.api.backend == "noauth"
    assert cfg.analyzer.auth.cluster.backend == "noauth"
    assert cfg.agent.auth.api.backend == "noauth"
    assert cfg.agent.auth.cluster.username == ""
    assert cfg.tls.server_cert is None
    assert not cfg.tls.enabled


def test_auth_config_in_file(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        """
auth:
  mybasic:
    type: basic
    users: {admin: 1234, viewer: pw}
    roles: {viewer: guest}
analyzer:
  auth: {api: {backend: mybasic}, cluster: {backend: mybasic}}
agent:
  auth: {cluster: {username: admin, password: 1234}}
""",
    )
    backend = cfg.auth["mybasic"]
    assert backend.type == "basic"
    assert backend.users == {"admin": "1234", "viewer": "pw"}
    assert backend.roles == {"viewer": "guest"}
    assert backend.role == "admin"
    assert cfg.analyzer.auth.api.backend == "mybasic"
    assert cfg.agent.auth.cluster.password == "1234"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "analyzer: {auth: {api: {backend: nope}}}",
            "analyzer.auth.api.backend: no auth backend 'nope' (defined: noauth)",
        ),
        (
            "auth: {b: {type: basic, users: {a: b}}}\nagent: {auth: {api: {backend: c}}}",
            "agent.auth.api.backend: no auth backend 'c' (defined: b, noauth)",
        ),
        (
            "analyzer: {auth: {cluster: {backend: x}}}",
            "analyzer.auth.cluster.backend: no auth backend 'x' (defined: noauth)",
        ),
        (
            "auth: {b: {type: basic}}",
            "auth.b: a basic backend needs a 'file' (htpasswd) or 'users'",
        ),
        ("auth: {b: {type: ldap}}", "auth.b.type: input should be 'noauth' or 'basic', got 'ldap'"),
        ("auth: {b: {type: basic, users: {a: b}, role: root}}", "auth.b.role: input should be"),
        ("auth: {b: {type: basic, user: {a: b}}}", "auth.b.user: unknown key"),
        ("tls: {server_cert: /x.pem}", "tls: server_cert and server_key must be set together"),
        ("tls: {client_key: /x.pem}", "tls: client_cert and client_key must be set together"),
    ],
)
def test_auth_config_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert config_error(tmp_path, text).startswith(expected)


def test_auth_backend_from_environment() -> None:
    cfg = load_config(
        None,
        env={
            "SKYDIVE_AUTH_mybasic": "{type: basic, users: {admin: pw}}",
            "SKYDIVE_ANALYZER_AUTH_API_BACKEND": "mybasic",
            "SKYDIVE_AGENT_AUTH_CLUSTER_PASSWORD": "0042",
            "SKYDIVE_TLS_CA_CERT": "/etc/ca.pem",
        },
    )
    assert cfg.auth["mybasic"].users == {"admin": "pw"}
    assert cfg.analyzer.auth.api.backend == "mybasic"
    assert cfg.agent.auth.cluster.password == "0042"
    assert cfg.tls.ca_cert == "/etc/ca.pem"


def test_build_auth_reads_the_htpasswd_file_at_start(tmp_path: Path) -> None:
    good = tmp_path / "htpasswd"
    good.write_text(f"alice:{HASH}\n")
    cfg = load_text(
        tmp_path,
        f"auth: {{b: {{type: basic, file: {good}}}}}\nanalyzer: {{auth: {{api: {{backend: b}}}}}}",
    )
    policy = build_auth(cfg, "analyzer")
    assert isinstance(policy.api.backend, BasicBackend)
    assert set(policy.api.backend.hashes) == {"alice"}
    assert isinstance(policy.cluster.backend if policy.cluster else None, NoAuthBackend)
    cfg = load_text(
        tmp_path,
        "auth: {b: {type: basic, file: /nonexistent/htpasswd}}\nagent: {auth: {api: {backend: b}}}",
    )
    build_auth(cfg, "analyzer")  # the analyzer does not use it
    with pytest.raises(ConfigError, match=r"^auth\.b\.file: cannot read htpasswd file "):
        build_auth(cfg, "agent")


def test_same_backend_for_api_and_cluster_shares_one_authenticator() -> None:
    cfg = Config.model_validate(
        {
            "auth": {"b": {"type": "basic", "users": {"a": "b"}}},
            "analyzer": {"auth": {"api": {"backend": "b"}, "cluster": {"backend": "b"}}},
        }
    )
    policy = build_auth(cfg, "analyzer")
    assert policy.cluster is policy.api


# --- backends ------------------------------------------------------------------------------


def test_bcrypt_verify_and_cache() -> None:
    clock = FakeClock()
    backend = BasicBackend("b", hashes={"alice": HASH_2Y.encode()}, clock=clock)
    assert run(backend.verify("alice", "s3cret")) == Identity("alice", "admin")
    assert run(backend.verify("alice", "wrong")) is None
    assert run(backend.verify("nobody", "s3cret")) is None
    assert run(backend.verify("alice", "x" * 100)) is None  # > 72 bytes: refused, no crash
    checks = backend.bcrypt_checks
    # A verified pair is remembered: no second bcrypt run...
    assert run(backend.verify("alice", "s3cret")) == Identity("alice", "admin")
    assert backend.cached("alice", "s3cret") == Identity("alice", "admin")
    assert backend.bcrypt_checks == checks
    assert backend.cached("alice", "wrong") is None
    # ...until it expires.
    clock.now += 61
    assert backend.cached("alice", "s3cret") is None
    assert run(backend.verify("alice", "s3cret")) is not None
    assert backend.bcrypt_checks == checks + 1


def test_inline_users_and_roles() -> None:
    backend = BasicBackend(
        "b",
        users={"admin": "pw", "viewer": "pw2"},
        hashes={"admin": HASH.encode()},
        role="admin",
        roles={"viewer": "guest"},
    )
    assert run(backend.verify("admin", "pw")) == Identity("admin", "admin")
    assert run(backend.verify("admin", "s3cret")) is None  # inline wins over the file
    assert run(backend.verify("viewer", "pw2")) == Identity("viewer", "guest")
    assert run(backend.verify("viewer", "pw")) is None
    guests = BasicBackend("g", users={"u": "p"}, role="guest")
    assert run(guests.verify("u", "p")) == Identity("u", "guest")


def test_noauth_lets_everybody_in_as_admin() -> None:
    assert run(NoAuthBackend().verify("", "")) == Identity("anonymous", "admin")


# --- tokens --------------------------------------------------------------------------------


def test_token_lifecycle() -> None:
    clock = FakeClock()
    tokens = TokenStore(ttl=100, clock=clock)
    alice = Identity("alice", "admin")
    token = tokens.issue(alice)
    assert len(token) >= 40
    assert tokens.issue(alice) != token
    assert tokens.lookup(token) == alice
    assert tokens.lookup("forged") is None
    clock.now += 99
    assert tokens.lookup(token) == alice
    clock.now += 2
    assert tokens.lookup(token) is None  # expired, and forgotten
    token = tokens.issue(alice)
    tokens.revoke(token)
    assert tokens.lookup(token) is None


# --- roles ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "method", "path", "guest_ok"),
    [
        ("http", "GET", "/api", True),
        ("http", "GET", "/api/topology", True),
        ("http", "POST", "/api/topology", True),
        ("http", "GET", "/api/status", True),
        ("http", "GET", "/api/capture", True),
        ("http", "GET", "/api/capture/abc", True),
        ("http", "POST", "/api/capture", False),
        ("http", "PATCH", "/api/node/abc", False),
        ("http", "DELETE", "/api/alert/abc", False),
        ("http", "POST", "/api/pcap", False),
        ("websocket", "GET", "/ws/subscriber", True),
        ("websocket", "GET", "/ws/graph", True),
        ("websocket", "GET", "/ws", True),
        ("websocket", "GET", "/ws/subscriber/flow", True),
        ("websocket", "GET", "/ws/publisher", False),
        ("websocket", "GET", "/ws/pubsub", False),
        ("websocket", "GET", "/ws/agent/topology", False),
    ],
)
def test_roles(kind: str, method: str, path: str, guest_ok: bool) -> None:
    assert allowed("admin", kind, method, path)
    assert allowed("guest", kind, method, path) is guest_ok


# --- brute force ---------------------------------------------------------------------------


def test_failed_logins_are_slowed_down_exponentially_and_bounded() -> None:
    sleep = FakeSleep()
    throttle = Throttle(clock=FakeClock())
    auth = Authenticator(BasicBackend("b", users={"alice": "pw"}), throttle=throttle, sleep=sleep)
    for _ in range(8):
        assert run(auth.login("alice", "wrong", "10.0.0.1")) is None
    # first attempt immediate, then 0.25 s doubling per failure, capped at 5 s
    assert sleep.delays == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    # the right password still gets in (after the delay), and resets the counters
    result = run(auth.login("alice", "pw", "10.0.0.1"))
    assert result is not None and result[0] == Identity("alice", "admin")
    assert sleep.delays[-1] == 5.0
    sleep.delays.clear()
    assert run(auth.login("alice", "pw", "10.0.0.1")) is not None
    assert sleep.delays == []


def test_throttle_counts_per_remote_and_per_user_and_forgets() -> None:
    clock = FakeClock()
    sleep = FakeSleep()
    auth = Authenticator(
        BasicBackend("b", users={"a": "pw", "b": "pw"}), throttle=Throttle(clock=clock), sleep=sleep
    )
    run(auth.login("a", "x", "10.0.0.1"))
    run(auth.login("a", "x", "10.0.0.1"))
    # another user from the same remote is slowed too (the remote has 2 failures)...
    run(auth.login("b", "x", "10.0.0.1"))
    assert sleep.delays == [0.25, 0.5]
    # ...and the same user from another remote (the user has 2 failures)
    run(auth.login("a", "x", "10.9.9.9"))
    assert sleep.delays == [0.25, 0.5, 0.5]
    # a quiet quarter of an hour forgets them
    clock.now += 901
    sleep.delays.clear()
    run(auth.login("a", "x", "10.0.0.1"))
    assert sleep.delays == []


# --- the middleware and /login, in process --------------------------------------------------


def make_app(policy: AuthPolicy) -> Starlette:
    async def who(request: Request) -> Response:
        identity = request.scope[SCOPE_KEY]
        return JSONResponse({"User": identity.username, "Role": identity.role})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"User": websocket.scope[SCOPE_KEY].username})
        await websocket.close()

    async def page(request: Request) -> Response:
        return Response("ui")

    routes: list[Any] = [
        Route("/api/status", who, methods=["GET"]),
        Route("/api/capture", who, methods=["GET", "POST"]),
        Route("/ui", page),
        WebSocketRoute("/ws/subscriber", ws),
        WebSocketRoute("/ws/publisher", ws),
        WebSocketRoute("/ws/agent/topology", ws),
        *auth_routes(policy),
    ]
    return Starlette(routes=routes, middleware=auth_middleware(policy))


@pytest.fixture
def client() -> TestClient:
    api = Authenticator(
        BasicBackend("b", users={"admin": "pw", "viewer": "pw2"}, roles={"viewer": "guest"}),
        sleep=FakeSleep(),
    )
    cluster = Authenticator(BasicBackend("c", users={"agent": "apw"}), sleep=FakeSleep())
    return TestClient(make_app(AuthPolicy(api, cluster)))


def test_middleware_http(client: TestClient) -> None:
    r = client.get("/api/status")
    assert r.status_code == 401
    assert r.json() == {"Error": "authentication required"}
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert client.get("/api/status", headers={"Authorization": basic("admin", "x")}).json() == {
        "Error": "wrong user name or password"
    }
    assert client.get("/api/status", headers={"Authorization": "Bearer x"}).status_code == 401
    assert client.get("/api/status", headers={"X-Auth-Token": "forged"}).status_code == 401
    r = client.get("/api/status", headers={"Authorization": basic("admin", "pw")})
    assert r.status_code == 200
    assert r.json() == {"User": "admin", "Role": "admin"}
    # the cluster backend's users are not API users
    assert (
        client.get("/api/status", headers={"Authorization": basic("agent", "apw")}).status_code
        == 401
    )
    # public: the UI's pages
    assert client.get("/ui").status_code == 200


def test_login_cookie_and_token_flow(client: TestClient) -> None:
    r = client.post("/login", data={"username": "admin", "password": "bad"})
    assert r.status_code == 401
    assert "Error" in r.json()
    assert client.post("/login", data={"username": "admin"}).status_code == 400
    r = client.post("/login", data={"username": "admin", "password": "pw"})
    assert r.status_code == 200
    body = r.json()
    assert body["Username"] == "admin" and body["Role"] == "admin"
    token = body["Token"]
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"authtoken={token};")
    assert "HttpOnly" in cookie and "Path=/" in cookie
    # the client keeps the cookie
    assert client.get("/api/status").json()["User"] == "admin"
    client.cookies.clear()
    assert client.get("/api/status").status_code == 401
    assert client.get("/api/status", headers={"X-Auth-Token": token}).status_code == 200
    assert (
        client.get("/api/status", headers={"Authorization": basic("admin", token)}).status_code
        == 200
    )
    # JSON bodies are accepted too
    r = client.post("/login", json={"username": "viewer", "password": "pw2"})
    assert r.status_code == 200 and r.json()["Role"] == "guest"
    client.cookies.clear()
    assert client.post("/logout", headers={"X-Auth-Token": token}).status_code == 200
    assert client.get("/api/status", headers={"X-Auth-Token": token}).status_code == 401


def test_guest_may_read_but_not_write(client: TestClient) -> None:
    guest = {"Authorization": basic("viewer", "pw2")}
    assert client.get("/api/capture", headers=guest).status_code == 200
    r = client.post("/api/capture", headers=guest)
    assert r.status_code == 403
    assert "guest" in r.json()["Error"]
    assert (
        client.post("/api/capture", headers={"Authorization": basic("admin", "pw")}).status_code
        == 200
    )


def test_middleware_websocket(client: TestClient) -> None:
    with pytest.raises(WebSocketDenialResponse) as info, client.websocket_connect("/ws/subscriber"):
        pass
    assert info.value.status_code == 401
    with client.websocket_connect(
        "/ws/subscriber", headers={"Authorization": basic("admin", "pw")}
    ) as ws:
        assert ws.receive_json() == {"User": "admin"}
    token = client.post("/login", data={"username": "viewer", "password": "pw2"}).json()["Token"]
    client.cookies.clear()
    with client.websocket_connect(f"/ws/subscriber?x-auth-token={token}") as ws:
        assert ws.receive_json() == {"User": "viewer"}
    with (
        pytest.raises(WebSocketDenialResponse) as info,
        client.websocket_connect(f"/ws/publisher?x-auth-token={token}"),
    ):
        pass
    assert info.value.status_code == 403
    # the agents' endpoint checks the cluster backend, not the API one
    with (
        pytest.raises(WebSocketDenialResponse) as info,
        client.websocket_connect(
            "/ws/agent/topology", headers={"Authorization": basic("admin", "pw")}
        ),
    ):
        pass
    assert info.value.status_code == 401
    with client.websocket_connect(
        "/ws/agent/topology", headers={"Authorization": basic("agent", "apw")}
    ) as ws:
        assert ws.receive_json() == {"User": "agent"}


def test_noauth_policy_allows_everything_and_login_works() -> None:
    client = TestClient(make_app(AuthPolicy(Authenticator(NoAuthBackend()))))
    assert client.post("/api/capture").status_code == 200
    r = client.post("/login", data={"username": "x", "password": "y"})
    assert r.status_code == 200 and r.json()["Token"]


def test_commented_out_maps_read_as_empty(tmp_path: Path) -> None:
    # Skydive's example file style: keys whose children are all commented out are YAML null
    cfg = load_text(tmp_path, "auth:\n")
    assert cfg.auth == {}
    cfg = load_text(
        tmp_path, "auth:\n  b:\n    type: basic\n    file: /etc/htpasswd\n    users:\n    roles:\n"
    )
    assert cfg.auth["b"].users == {}
    assert cfg.auth["b"].roles == {}


def test_stale_token_does_not_hide_good_basic_credentials(client: TestClient) -> None:
    headers = {"X-Auth-Token": "expired", "Authorization": basic("admin", "pw")}
    assert client.get("/api/status", headers=headers).status_code == 200
    r = client.get("/api/status", headers={"X-Auth-Token": "expired"})
    assert r.status_code == 401
    assert r.json() == {"Error": "invalid or expired token"}


def test_roles_apply_when_api_and_cluster_share_a_backend() -> None:
    shared = Authenticator(
        BasicBackend("b", users={"admin": "pw", "viewer": "pw2"}, roles={"viewer": "guest"}),
        sleep=FakeSleep(),
    )
    client = TestClient(make_app(AuthPolicy(shared, shared)))
    assert (
        client.post("/api/capture", headers={"Authorization": basic("viewer", "pw2")}).status_code
        == 403
    )
    assert (
        client.get("/api/capture", headers={"Authorization": basic("viewer", "pw2")}).status_code
        == 200
    )
    with client.websocket_connect(
        "/ws/agent/topology", headers={"Authorization": basic("admin", "pw")}
    ) as ws:
        assert ws.receive_json() == {"User": "admin"}


def test_tls_contexts_fail_at_start_naming_the_key(tmp_path: Path) -> None:
    from pyskydive.api.tls import client_context, server_context
    from pyskydive.config.model import TLSConfig

    assert server_context(TLSConfig()) is None
    assert client_context(TLSConfig()) is None
    missing = TLSConfig(server_cert=str(tmp_path / "c.pem"), server_key=str(tmp_path / "k.pem"))
    with pytest.raises(ConfigError, match=r"^tls\.server_cert: cannot read .*c\.pem"):
        server_context(missing)
    garbled = tmp_path / "garbled.pem"
    garbled.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^tls\.server_cert: cannot load certificate "):
        server_context(TLSConfig(server_cert=str(garbled), server_key=str(garbled)))
    with pytest.raises(ConfigError, match=r"^tls\.ca_cert: cannot load CA file "):
        client_context(
            TLSConfig(server_cert=str(garbled), server_key=str(garbled), ca_cert=str(garbled))
        )
