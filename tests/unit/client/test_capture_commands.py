"""``skydive client capture ...`` against the stand-in analyzer: create from a Gremlin query or
a probe path, list, and delete by ID, by probe path or by Gremlin query."""

from __future__ import annotations

import json

import pytest
from client_standin import StandIn, run

BR1_PATH = "*[Type=host]/br1[Type=ovsbridge]"
BR1_QUERY = "G.V().Has('Type', 'host').Out('Name', 'br1', 'Type', 'ovsbridge')"
ANY_ETH0 = "G.V().Has('Name', 'eth0')"


def create(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run(capsys, "--format", "json", "capture", "create", *argv)
    assert (code, err) == (0, ""), err
    return str(json.loads(out)["UUID"])


def captures(standin: StandIn) -> dict[str, str]:
    return {u: c["GremlinQuery"] for u, c in standin.store["capture"].items()}


def test_create_list_and_delete_by_probe_path(
    standin: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    by_path = create(capsys, "-p", BR1_PATH, "--bpf", "icmp", "--type", "ovssflow", "--name", "x")
    other = create(capsys, "--gremlin", ANY_ETH0)
    assert captures(standin) == {by_path: BR1_QUERY, other: ANY_ETH0}
    # on the same nodes, made by other clients: as a probe path (matched once translated)
    # and as the Gremlin, with another BPF filter
    store = standin.store["capture"]
    store["raw"] = {"UUID": "raw", "GremlinQuery": BR1_PATH}
    store["tcp"] = {"UUID": "tcp", "GremlinQuery": BR1_QUERY, "BPFFilter": "tcp"}

    code, out, _ = run(capsys, "capture", "list")
    assert code == 0 and {by_path, other, "raw", "tcp"} <= set(out.split())

    code, out, err = run(capsys, "capture", "delete", BR1_PATH)
    assert (code, out, err) == (0, "", "")
    assert list(captures(standin)) == [other]


def test_delete_by_gremlin_query_and_by_id(
    standin: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    eth0 = create(capsys, "--gremlin", ANY_ETH0)
    br1 = create(capsys, "-p", BR1_PATH)
    code, _, err = run(capsys, "capture", "delete", ANY_ETH0)
    assert (code, err) == (0, "")
    assert list(captures(standin)) == [br1]
    code, _, err = run(capsys, "capture", "delete", br1)
    assert (code, err) == (0, "") and captures(standin) == {}
    assert eth0 != br1


def test_delete_reports_what_matched_nothing_and_carries_on(
    standin: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = create(capsys, "--gremlin", ANY_ETH0)
    gone = create(capsys, "-p", BR1_PATH)
    code, out, err = run(capsys, "capture", "delete", "h9/eth9", "nope", BR1_PATH)
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("skydive: error: ") for line in lines)
    assert "no capture on 'h9/eth9'" in lines[0] and "nope" in lines[1]
    assert list(captures(standin)) == [keep] and gone not in captures(standin)


def test_delete_with_a_bad_probe_path_deletes_nothing(
    standin: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = create(capsys, "--gremlin", ANY_ETH0)
    code, out, err = run(capsys, "capture", "delete", keep, "a//b")
    assert code == 2 and out == ""
    assert err.startswith("skydive: error: capture delete: invalid probe path")
    assert len(err.splitlines()) == 1
    assert list(captures(standin)) == [keep]


def test_create_on_a_node_tid(standin: StandIn, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = create(capsys, "--node", "f00d", "--bpf", "udp")
    assert captures(standin) == {uuid: "G.V().Has('TID', 'f00d')"}
    with pytest.raises(SystemExit) as exc:  # argparse: usage, then the one-line reason
        run(capsys, "capture", "create", "--node", "x", "--gremlin", ANY_ETH0)
    assert exc.value.code == 2
    assert "argument --gremlin: not allowed with argument --node" in capsys.readouterr().err
