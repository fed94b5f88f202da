"""Tables of API results, metadata definitions and probe paths (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from pyskydive.client.defs import gremlin_string, parse_metadata, probe_path_to_gremlin
from pyskydive.client.table import (
    RESOURCE_COLUMNS,
    format_cell,
    format_query_result,
    format_status,
    render,
)


def node(i: str, name: str, type_: str, host: str = "h1") -> dict[str, Any]:
    return {"ID": i, "Metadata": {"Name": name, "Type": type_}, "Host": host, "Revision": 1}


def edge(i: str, parent: str, child: str, rel: str = "ownership") -> dict[str, Any]:
    return {"ID": i, "Parent": parent, "Child": child, "Metadata": {"RelationType": rel}}


def test_render_aligns_columns() -> None:
    rows = [node("n1", "eth0", "device"), node("n22", "br-int", "ovsbridge", host="")]
    assert render(RESOURCE_COLUMNS["node"], rows).splitlines() == [
        "ID   Name    Type       Host",
        "n1   eth0    device     h1",
        "n22  br-int  ovsbridge",
    ]


def test_render_empty_is_the_header() -> None:
    assert (
        render(RESOURCE_COLUMNS["capture"], [])
        == "UUID  Name  GremlinQuery  BPFFilter  Type  Count"
    )


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (None, ""),
        ("a b", "a b"),
        (True, "true"),
        (3, "3"),
        (1.5, "1.5"),
        ({"b": 1, "a": [1, 2]}, '{"a":[1,2],"b":1}'),
        ("line1\nline2", "line1 line2"),
        ("x" * 100, "x" * 77 + "..."),
    ],
)
def test_cells(value: Any, cell: str) -> None:
    assert format_cell(value) == cell


def test_capture_columns() -> None:
    capture = {"UUID": "u1", "GremlinQuery": "G.V().Has('Name', 'eth0')", "BPFFilter": "icmp"}
    lines = render(RESOURCE_COLUMNS["capture"], [capture]).splitlines()
    assert lines[1].split("  ")[0] == "u1"
    assert "G.V().Has('Name', 'eth0')" in lines[1] and "icmp" in lines[1]


def test_query_nodes_table() -> None:
    out = format_query_result([node("n1", "host1", "host")])
    assert out.splitlines() == ["ID  Name   Type  Host", "n1  host1  host  h1"]


def test_query_edges_table() -> None:
    out = format_query_result([edge("e1", "n1", "n2")])
    assert out.splitlines()[0].split() == ["ID", "RelationType", "Parent", "Child", "Host"]
    assert out.splitlines()[1].split() == ["e1", "ownership", "n1", "n2"]


def test_query_count_is_the_number() -> None:
    assert format_query_result(42) == "42"
    assert format_query_result("text") == "text"


def test_query_graph_result() -> None:
    graph = {
        "Nodes": [node("n1", "a", "host"), node("n2", "b", "netns")],
        "Edges": [edge("e", "n1", "n2")],
    }
    lines = format_query_result([graph]).splitlines()
    assert lines[0] == "Nodes (2):"
    assert "Edges (1):" in lines


def test_query_paths_are_name_chains() -> None:
    path = [node("n1", "veth0", "veth"), node("n2", "ns1", "netns"), node("n3", "host1", "host")]
    assert format_query_result([path]) == "veth0 -> ns1 -> host1"


def test_query_scalars_and_maps() -> None:
    assert format_query_result(["eth0", "lo"]) == "eth0\nlo"
    assert format_query_result([]) == "(no result)"
    lines = format_query_result([{"Name": "eth0", "MTU": 1500}, {"Name": "lo"}]).splitlines()
    assert lines[0].split() == ["Name", "MTU"]
    assert lines[1].split() == ["eth0", "1500"]
    assert format_query_result({"a": 1}).splitlines() == ["Key  Value", "a    1"]


def test_status_lines_and_peer_tables() -> None:
    out = format_status(
        {
            "Host": "an1",
            "Version": "0.1.0",
            "Agents": {"node1": {"Addr": "127.0.0.1", "Port": 8081}},
            "Subscribers": {},
        }
    )
    lines = out.splitlines()
    assert lines[:2] == ["Host:    an1", "Version: 0.1.0"]
    assert "Agents (1):" in lines
    assert any(line.split() == ["node1", "127.0.0.1", "8081"] for line in lines)
    assert "Subscribers: none" in lines


def test_metadata_definitions() -> None:
    assert parse_metadata("") == {}
    assert parse_metadata('A=1, "B"="two" ,C.D=x') == {"A": "1", "B": "two", "C": {"D": "x"}}
    assert parse_metadata("Name=x", {"Type": "t"}) == {"Type": "t", "Name": "x"}


@pytest.mark.parametrize("bad", ["A", "A=1,B", "=1", "A=1=2", "A..B=1"])
def test_bad_metadata_definitions(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_metadata(bad)


def test_probe_paths() -> None:
    assert probe_path_to_gremlin("host1[Type=host]/br1[Type=ovsbridge]") == (
        "G.V().Has('Name', 'host1', 'Type', 'host').Out('Name', 'br1', 'Type', 'ovsbridge')"
    )
    assert probe_path_to_gremlin("*[Type=host]/eth0") == (
        "G.V().Has('Type', 'host').Out('Name', 'eth0')"
    )
    assert probe_path_to_gremlin("host1") == "G.V().Has('Name', 'host1')"


@pytest.mark.parametrize("bad", ["", "/eth0", "host1//eth0", "host1[Type]", "a[b=c]x"])
def test_bad_probe_paths(bad: str) -> None:
    with pytest.raises(ValueError):
        probe_path_to_gremlin(bad)


def test_gremlin_strings() -> None:
    assert gremlin_string("it's") == '"it\'s"'
    with pytest.raises(ValueError):
        gremlin_string("""'"'""")
