"""Wire messages: envelopes, element checks with one-line reasons, partial updates."""

from __future__ import annotations

import pytest

from pyskydive.errors import MessageError
from pyskydive.graph import Graph
from pyskydive.graph import messages as wire


def test_envelope_roundtrip() -> None:
    text = wire.encode(wire.envelope("SyncRequest", {}, uuid="u1"))
    msg = wire.parse(text)
    assert (msg.namespace, msg.type, msg.obj, msg.uuid) == ("Graph", "SyncRequest", {}, "u1")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"Namespace": "Graph"}', "no Type"),
        ('{"Type": "NodeAdded", "Namespace": 5}', "Namespace"),
    ],
)
def test_parse_errors_are_one_line(text: str, reason: str) -> None:
    with pytest.raises(MessageError) as info:
        wire.parse(text)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"Metadata": {"Name": "a", "Type": "b"}}, "no ID"),
        ({"ID": "n", "Metadata": {"Type": "b"}}, "Metadata.Name"),
        ({"ID": "n", "Metadata": {"Name": "a"}}, "Metadata.Type"),
        ({"ID": "n", "Metadata": []}, "Metadata must be an object"),
        ({"ID": "n", "Metadata": {"Name": "a", "Type": "b"}, "Revision": "x"}, "Revision"),
        ("nope", "JSON object"),
    ],
)
def test_node_checks(obj: object, reason: str) -> None:
    with pytest.raises(MessageError) as info:
        wire.node_from_obj(obj)
    assert reason in str(info.value)


def test_edge_checks() -> None:
    ok = wire.edge_from_obj(
        {"ID": "e", "Parent": "a", "Child": "b", "Metadata": {"RelationType": "layer2"}}
    )
    assert (ok.parent, ok.child) == ("a", "b")
    with pytest.raises(MessageError, match="Parent and Child"):
        wire.edge_from_obj({"ID": "e", "Metadata": {"RelationType": "layer2"}})
    with pytest.raises(MessageError, match="RelationType"):
        wire.edge_from_obj({"ID": "e", "Parent": "a", "Child": "b", "Metadata": {}})


def test_partial_update_roundtrip() -> None:
    g = Graph("h")
    node = g.add_node("n", {"Name": "a", "Type": "veth", "MTU": 1500}, origin="o")
    ops = g.update_node(node, {"MTU": 9000}, ["Name"])
    obj = wire.ops_to_obj(node, ops)
    assert obj["Ops"] == [{"Type": 1, "Key": "MTU", "Value": 9000}, {"Type": 2, "Key": "Name"}]
    assert obj["Revision"] == 2
    assert wire.ops_from_obj(obj) == ("n", node.updated_at, 2, ops)
    with pytest.raises(MessageError, match="Ops\\[0\\]"):
        wire.ops_from_obj({"ID": "n", "Ops": [{"Type": 3, "Key": "x"}]})
