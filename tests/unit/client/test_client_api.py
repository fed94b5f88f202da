"""The REST client against a stand-in analyzer on loopback: resources, auth, and every kind of
failure translated once into a one-line ClientError."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from client_standin import StandIn, fixed, serve, slow

from pyskydive.client import Client, ClientError
from pyskydive.errors import SkydiveError


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with serve() as state:
        yield state


@pytest.fixture
def client(standin: StandIn) -> Iterator[Client]:
    with Client(standin.url, timeout=5) as c:
        yield c


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


def test_info_status_topology(client: Client) -> None:
    assert client.info()["Service"] == "analyzer"
    assert client.status()["Agents"]["node1"]["Port"] == 8081
    assert client.topology() == {"Nodes": [], "Edges": []}


def test_capture_crud_round_trip(client: Client, standin: StandIn) -> None:
    created = client.create("capture", {"GremlinQuery": "G.V().Has('Name', 'eth0')"})
    assert created["UUID"]
    assert standin.seen[-1].method == "POST" and standin.seen[-1].path == "/api/capture"
    assert client.list("capture") == {created["UUID"]: created}
    assert client.get("capture", created["UUID"]) == created
    client.delete("capture", created["UUID"])
    assert client.list("capture") == {}


def test_missing_resource_is_404_with_the_servers_reason(client: Client) -> None:
    with pytest.raises(ClientError) as err:
        client.get("alert", "nope")
    assert err.value.status == 404
    message = one_line(err.value)
    assert "404" in message and "alert nope not found" in message
    assert "GET /api/alert/nope" in message
    assert isinstance(err.value, SkydiveError)


def test_duplicate_capture_is_409(client: Client) -> None:
    client.create("capture", {"GremlinQuery": "G.V()"})
    with pytest.raises(ClientError) as err:
        client.create("capture", {"GremlinQuery": "G.V()"})
    assert err.value.status == 409
    assert "409 Conflict: Duplicate capture" in one_line(err.value)


def test_bad_body_is_400_naming_the_field(client: Client) -> None:
    with pytest.raises(ClientError) as err:
        client.create("alert", {"Name": "x"})
    assert err.value.status == 400 and err.value.reason == "Expression: missing field"


def test_patch_unchanged_is_304_and_none(client: Client) -> None:
    node = client.create("node", {"ID": "n1", "Metadata": {"Name": "a", "Type": "device"}})
    assert client.patch("node", node["ID"], [{"op": "add", "path": "/x", "value": 1}]) is None


def test_query_json_and_dot(client: Client, standin: StandIn) -> None:
    standin.queries["G.V().Count()"] = 3
    assert client.query("G.V().Count()") == 3
    assert standin.seen[-1].json() == {"GremlinQuery": "G.V().Count()"}
    assert client.query_dot("G.V().Count()").startswith("digraph")
    assert standin.seen[-1].headers["accept"] == "text/vnd.graphviz"


def test_bad_query_reason(client: Client) -> None:
    with pytest.raises(ClientError) as err:
        client.query("G.V(")
    assert err.value.status == 400
    assert "Error while parsing query at 1" in one_line(err.value)


def test_text_error_body_first_line_and_html_dropped(client: Client, standin: StandIn) -> None:
    standin.overrides[("GET", "/api/status")] = fixed(500, "text/plain", b"boom\nstack...")
    with pytest.raises(ClientError) as err:
        client.status()
    assert one_line(err.value).endswith("500 Internal Server Error: boom stack...")
    standin.overrides[("GET", "/api/status")] = fixed(502, "text/html", b"<html>\n</html>")
    with pytest.raises(ClientError) as err:
        client.status()
    assert one_line(err.value).endswith("answered 502 Bad Gateway")


def test_body_that_is_not_json(client: Client, standin: StandIn) -> None:
    standin.overrides[("GET", "/api/capture")] = fixed(200, "text/plain", b"hello")
    with pytest.raises(ClientError) as err:
        client.list("capture")
    assert "not JSON" in one_line(err.value)


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}") as client, pytest.raises(ClientError) as err:
        client.status()
    assert one_line(err.value) == (
        f"cannot reach the analyzer at 127.0.0.1:{port}: connection refused"
    )
    assert err.value.status is None


def test_timeout(standin: StandIn) -> None:
    standin.overrides[("GET", "/api/status")] = slow(1.0)
    with Client(standin.url, timeout=0.2) as client, pytest.raises(ClientError) as err:
        client.status()
    assert f"the analyzer at {standin.address} did not answer GET /api/status within 0.2s" == (
        one_line(err.value)
    )


def test_unknown_resource_is_a_programming_error(client: Client) -> None:
    with pytest.raises(ValueError):
        client.list("nodes")


def test_login_then_token(standin: StandIn) -> None:
    standin.users["admin"] = "secret"
    with Client(standin.url, username="admin", password="secret") as client:
        assert client.status()["Host"] == "standin"
        client.list("capture")
    login, status, listing = standin.seen
    assert (login.method, login.path) == ("POST", "/login")
    assert login.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sorted(login.body.decode().split("&")) == ["password=secret", "username=admin"]
    assert status.headers["x-auth-token"] in standin.tokens
    assert "authtoken=" in status.headers.get("cookie", "")
    assert listing.headers["x-auth-token"] == status.headers["x-auth-token"]


def test_login_refused(standin: StandIn) -> None:
    standin.users["admin"] = "secret"
    with (
        Client(standin.url, username="admin", password="wrong") as client,
        pytest.raises(ClientError) as err,
    ):
        client.status()
    assert err.value.status == 401
    assert one_line(err.value).startswith(
        f"login as 'admin' refused by the analyzer at {standin.address} (401)"
    )


def test_no_login_route_falls_back_to_basic_auth(standin: StandIn) -> None:
    standin.users["admin"] = "secret"
    standin.login_route = False
    with Client(standin.url, username="admin", password="secret") as client:
        assert client.info()["Host"] == "standin"
    assert standin.seen[-1].headers["authorization"].startswith("Basic ")


def test_anonymous_on_an_auth_analyzer_is_401(standin: StandIn, client: Client) -> None:
    standin.users["admin"] = "secret"
    with pytest.raises(ClientError) as err:
        client.status()
    assert err.value.status == 401 and "401 Unauthorized" in one_line(err.value)
