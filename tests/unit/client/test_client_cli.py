"""``skydive client``: argument parsing, where the analyzer address comes from, and whole
commands through ``main()`` against a stand-in analyzer (output, exit status, one-line errors)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from client_standin import StandIn, run

from pyskydive.cli.main import _parser, main
from pyskydive.client.cli import DEFAULT_ANALYZER, UsageError, resolve_analyzer
from pyskydive.config import Address

# -- parsing ---------------------------------------------------------------------------------


def parse(*argv: str) -> Any:
    return _parser().parse_args(["client", *argv])


def test_global_options_before_and_after_the_command() -> None:
    before = parse("--analyzer", "a:1", "--format", "json", "--username", "u", "capture", "list")
    after = parse("capture", "list", "--analyzer", "a:1", "--format", "json", "--username", "u")
    for args in (before, after):
        assert (args.analyzer, args.format, args.username) == ("a:1", "json", "u")
        assert args.client_command == "capture" and args.capture_action == "list"


def test_later_copy_of_an_option_wins_and_absent_ones_stay_absent() -> None:
    args = parse("--analyzer", "a:1", "status", "--analyzer", "b:2")
    assert args.analyzer == "b:2"
    args = parse("status")
    assert not hasattr(args, "analyzer") and not hasattr(args, "format")


def test_conf_before_and_after_client() -> None:
    assert _parser().parse_args(["--conf", "x.yml", "client", "status"]).conf == "x.yml"
    assert _parser().parse_args(["client", "--conf", "y.yml", "status"]).conf == "y.yml"
    assert _parser().parse_args(["client", "status", "-c", "z.yml"]).conf == "z.yml"


def test_query_forms() -> None:
    assert parse("topology", "query", "G.V()").gremlin == "G.V()"
    assert parse("topology", "query", "--gremlin", "G.E()").gremlin_option == "G.E()"
    assert parse("query", "G.V().Count()").gremlin == "G.V().Count()"


def test_rule_aliases_and_delete_takes_several_ids() -> None:
    assert parse("node-rule", "list").client_command == "node-rule"
    args = parse("edgerule", "delete", "a", "b")
    assert args.idents == ["a", "b"]


@pytest.mark.parametrize(
    "argv",
    [
        ["capture", "create"],  # --gremlin or -p is required
        ["capture", "create", "--gremlin", "G.V()", "-p", "h/eth0"],  # not both
        ["capture", "get"],
        ["alert", "create"],
        ["noderule", "create", "--action", "destroy"],
        ["edge", "create", "--parent", "a"],
        ["status", "--format", "yaml"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["client", *argv])
    assert exit_.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


# -- analyzer address ----------------------------------------------------------------------


def write_conf(tmp_path: Path, text: str) -> str:
    path = tmp_path / "skydive.yml"
    path.write_text(text)
    return str(path)


def test_address_order(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "analyzers:\n  - 10.0.0.3:8083\n  - 10.0.0.4:8084\n")
    env = {"SKYDIVE_ANALYZERS": "10.0.0.2:8082,10.0.0.9:1"}
    assert resolve_analyzer("10.0.0.1:81", env, conf) == (Address("10.0.0.1", 81), "--analyzer")
    assert resolve_analyzer(None, env, conf) == (Address("10.0.0.2", 8082), "SKYDIVE_ANALYZERS")
    assert resolve_analyzer(None, {}, conf) == (Address("10.0.0.3", 8083), conf)
    assert resolve_analyzer(None, {}, None) == (DEFAULT_ANALYZER, "default")
    assert Address("127.0.0.1", 8082) == DEFAULT_ANALYZER


def test_env_list_is_comma_or_space_separated() -> None:
    for value in ("  a1:1 b:2", "a1:1, b:2", "a1:1,b:2"):
        assert resolve_analyzer(None, {"SKYDIVE_ANALYZERS": value}, None)[0] == Address("a1", 1)
    assert resolve_analyzer(None, {"SKYDIVE_ANALYZERS": " "}, None)[0] == DEFAULT_ANALYZER


def test_conf_without_analyzers_and_env_of_other_tools(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "logging:\n  level: DEBUG\n")
    env = {"SKYDIVE_USERNAME": "u", "SKYDIVE_AGENT_LISTEN": "not an address"}
    assert resolve_analyzer(None, env, conf)[0] == DEFAULT_ANALYZER


@pytest.mark.parametrize(
    ("option", "env", "message"),
    [
        ("nope", {}, "--analyzer: invalid address 'nope'"),
        (None, {"SKYDIVE_ANALYZERS": "a:b"}, "SKYDIVE_ANALYZERS: invalid address 'a:b'"),
    ],
)
def test_bad_addresses(option: str | None, env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve_analyzer(option, env, None)


# -- whole commands against the stand-in ------------------------------------------------------


def test_status_table_and_json(standin: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "Host:    standin"
    code, out, _ = run(capsys, "status", "--format", "json")
    assert json.loads(out)["Service"] == "analyzer"


def test_capture_lifecycle(standin: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "capture", "create", "--gremlin", "G.V().Has('Name', 'eth0')",
        "--bpf", "icmp", "--name", "c1", "--type", "pcap", "--header-size", "128",
    )  # fmt: skip
    assert (code, err) == (0, "")
    body = standin.seen[-1].json()
    assert body == {
        "GremlinQuery": "G.V().Has('Name', 'eth0')",
        "BPFFilter": "icmp",
        "Name": "c1",
        "Type": "pcap",
        "HeaderSize": 128,
    }
    (uuid,) = standin.store["capture"]
    header, row = out.splitlines()
    assert header.split()[:3] == ["UUID", "Name", "GremlinQuery"] and row.startswith(uuid)

    code, out, _ = run(capsys, "--format", "json", "capture", "list")
    assert code == 0 and list(json.loads(out)) == [uuid]
    code, out, _ = run(capsys, "capture", "get", uuid)
    assert code == 0 and uuid in out
    code, out, err = run(capsys, "capture", "delete", uuid)
    assert (code, out, err) == (0, "", "")
    assert standin.store["capture"] == {}


def test_capture_from_a_probe_path(standin: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "capture", "create", "-p", "*[Type=host]/br1[Type=ovsbridge]")
    assert code == 0
    assert standin.seen[-1].json()["GremlinQuery"] == (
        "G.V().Has('Type', 'host').Out('Name', 'br1', 'Type', 'ovsbridge')"
    )


def test_delete_missing_reports_each_and_exits_1(
    standin: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.store["alert"]["a1"] = {"UUID": "a1", "Expression": "G.V().Count() > 1"}
    code, out, err = run(capsys, "alert", "delete", "nope", "a1")
    assert code == 1 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("skydive: error: DELETE /api/alert/nope: ") and "404" in line
    assert standin.store["alert"] == {}


def test_alert_create(standin: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "alert", "create", "--expression", "G.V().Has('Name', 'eth0')",
        "--trigger", "duration:10s", "--action", "http://127.0.0.1:9/hook",
    )  # fmt: skip
    assert code == 0
    assert standin.seen[-1].json() == {
        "Expression": "G.V().Has('Name', 'eth0')",
        "Trigger": "duration:10s",
        "Action": "http://127.0.0.1:9/hook",
    }
    assert "duration:10s" in out


def test_node_and_edge_create(standin: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "node", "create", "--node-type", "device", "--name", "tap0",
        "--metadata", "MTU=1500,Neutron.VNI=12", "--host", "h9",
    )  # fmt: skip
    assert code == 0
    node = standin.seen[-1].json()
    assert node["Metadata"] == {
        "MTU": "1500",
        "Neutron": {"VNI": "12"},
        "Name": "tap0",
        "Type": "device",
    }
    assert node["Host"] == "h9" and node["ID"] and node["Revision"] == 1
    assert node["ID"] in out and "tap0" in out
    code, out, _ = run(
        capsys, "edge", "create", "--parent", "p1", "--child", node["ID"],
        "--relation-type", "layer2",
    )  # fmt: skip
    edge = standin.seen[-1].json()
    assert code == 0
    assert (edge["Parent"], edge["Child"], edge["Metadata"]) == (
        "p1",
        node["ID"],
        {"RelationType": "layer2"},
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["node", "create", "--name", "x"], "a node needs a Type"),
        (["node", "create", "--node-type", "t", "--metadata", "oops"], "--metadata: metadata must"),
        (["edge", "create", "--parent", "a", "--child", "b"], "needs a RelationType"),
        (["noderule", "create", "--action", "create"], "needs --node-name and --node-type"),
        (["noderule", "create", "--action", "update"], "an 'update' rule needs --query"),
        (["edgerule", "create", "--src", "G.V()", "--dst", "G.V()"], "needs a RelationType"),
        (["capture", "create", "-p", "a//b"], "-p/--probe-path: invalid probe path"),
        (["status", "--format", "dot"], "--format dot only applies"),
        (["status", "--password", "p"], "--password needs --username"),
    ],
)
def test_usage_errors_found_before_any_request(
    standin: StandIn, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("skydive: error: ") and message in line
    assert standin.seen == []


def test_rules(standin: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(
        capsys, "noderule", "create", "--action", "update", "--query", "G.V().Has('Name','eth0')",
        "--metadata", "Color=red", "--name", "r1",
    )  # fmt: skip
    assert code == 0
    assert standin.seen[-1].json() == {
        "Name": "r1",
        "Query": "G.V().Has('Name','eth0')",
        "Action": "update",
        "Metadata": {"Color": "red"},
    }
    code, _, _ = run(
        capsys, "node-rule", "create", "--action", "create", "--node-name", "fab",
        "--node-type", "fabric",
    )  # fmt: skip
    assert code == 0
    assert standin.seen[-1].json()["Metadata"] == {"Name": "fab", "Type": "fabric"}
    code, out, _ = run(
        capsys, "edgerule", "create", "--src", "G.V().Has('Name','a')",
        "--dst", "G.V().Has('Name','b')", "--relationtype", "layer2", "--metadata", "X=1",
    )  # fmt: skip
    assert code == 0
    assert standin.seen[-1].json()["Metadata"] == {"X": "1", "RelationType": "layer2"}
    code, out, _ = run(capsys, "edgerule", "list")
    assert code == 0 and out.splitlines()[0].split()[:4] == ["UUID", "Name", "Src", "Dst"]


def test_query_table_json_dot(standin: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = [{"ID": "h1", "Metadata": {"Name": "host1", "Type": "host"}, "Host": "host1"}]
    standin.queries["G.V().Has('Type','host')"] = hosts
    standin.queries["G.V().Count()"] = 7
    code, out, _ = run(capsys, "topology", "query", "G.V().Has('Type','host')")
    assert code == 0 and out.splitlines() == ["ID  Name   Type  Host", "h1  host1  host  host1"]
    code, out, _ = run(capsys, "query", "G.V().Count()")
    assert (code, out) == (0, "7\n")
    code, out, _ = run(
        capsys, "topology", "query", "--gremlin", "G.V().Count()", "--format", "json"
    )
    assert (code, json.loads(out)) == (0, 7)
    code, out, _ = run(capsys, "topology", "query", "G.V().Count()", "--format", "dot")
    assert code == 0 and out.startswith("digraph G {")
    assert standin.seen[-1].headers["accept"] == "text/vnd.graphviz"


def test_bad_query_one_line_exit_1(standin: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "topology", "query", "G.V(")
    assert code == 1 and out == ""
    assert err == (
        f"skydive: error: POST /api/topology: the analyzer at {standin.address} answered "
        "400 Bad Request: Error while parsing query at 1: 'G.V('\n"
    )


def test_credentials_from_options_and_env(
    standin: StandIn, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    standin.users["admin"] = "pw"
    code, _, err = run(capsys, "status")
    assert code == 1 and "401 Unauthorized" in err
    code, _, err = run(capsys, "--username", "admin", "--password", "pw", "status")
    assert (code, err) == (0, "")
    monkeypatch.setenv("SKYDIVE_USERNAME", "admin")
    monkeypatch.setenv("SKYDIVE_PASSWORD", "pw")
    code, _, err = run(capsys, "capture", "list")
    assert (code, err) == (0, "")
    code, _, err = run(capsys, "capture", "list", "--password", "bad")
    assert code == 1
    assert err.startswith("skydive: error: login as 'admin' refused") and err.count("\n") == 1


def test_connection_refused_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("SKYDIVE_ANALYZERS", raising=False)
    code, out, err = run(capsys, "--analyzer", f"127.0.0.1:{port}", "capture", "list")
    assert (code, out) == (1, "")
    assert (
        err
        == f"skydive: error: cannot reach the analyzer at 127.0.0.1:{port}: connection refused\n"
    )


def test_bad_conf_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SKYDIVE_ANALYZERS", raising=False)
    conf = write_conf(tmp_path, "analyzers: [nope]\n")
    code, _, err = run(capsys, "--conf", conf, "status")
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith("skydive: error: configuration error:") and "analyzers" in line
