"""The I/O-free parts of the Elasticsearch store: bulk bodies, answers, resources merge,
mapping checks. (The store itself is tested against a real node: test_es_backend.py.)"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pyskydive.errors import StorageError
from pyskydive.storage import elasticsearch_docs as docs
from pyskydive.storage.base import Revision
from pyskydive.storage.elasticsearch_layout import Layout, check_mapping, mapping_for
from pyskydive.storage.elasticsearch_resources import ResourceCache


def _lines(body: bytes) -> list[Any]:
    return [orjson.loads(line) for line in body.split(b"\n") if line]


def _flow(uuid: str, last: int, **extra: Any) -> dict[str, Any]:
    metric = {"ABBytes": last, "Start": last - 10, "Last": last}
    return {"UUID": uuid, "Start": 1, "Last": last, "LastUpdateMetric": metric, **extra}


def test_flow_batch_latest_state_and_every_history_row() -> None:
    old, new, other = _flow("a", 100), _flow("a", 200), _flow("b", 50, NodeTID="t")
    body, bad = docs.flow_batch([new, other, old, {"no": "uuid"}], "p_flow", "p_metric")
    assert bad == 1
    lines = _lines(body)
    states = [
        lines[i + 1] for i in range(0, len(lines), 2) if lines[i]["index"]["_index"] == "p_flow"
    ]
    assert states == [new, other]  # the late older state does not replace the newer one
    actions = [line["index"] for line in lines[::2]]
    assert {"_index": "p_flow", "_id": "a", "version": 200, "version_type": "external_gte"} in (
        actions
    )
    history = {
        a["_id"]: doc
        for a, doc in zip(actions, lines[1::2], strict=True)
        if a["_index"] == "p_metric"
    }
    assert set(history) == {"a:190:200", "a:90:100", "b:40:50"}
    assert history["b:40:50"] == {
        **other["LastUpdateMetric"],
        "Flow": {"UUID": "b", "NodeTID": "t"},
    }


def test_flow_batch_leaves_out_what_json_cannot_hold() -> None:
    good, bad = _flow("a", 10), _flow("b", 20, Extra={1, 2})  # a set
    body, left_out = docs.flow_batch([good, bad, _flow("a", 5)], "p_flow", "p_metric")
    assert left_out == 1
    ids = [line["index"]["_id"] for line in _lines(body)[::2]]
    assert ids == ["a", "a:0:10", "a:-5:5"]


def test_split_ops_finds_the_items_of_a_flow_body() -> None:
    body = docs.flow_ops([_flow("x:y", 5)], "p_flow", "p_metric")
    ops = docs.split_ops(body, "p_metric")
    assert [(op.item, op.key) for op in ops] == [("flow", "x"), ("metric", "x")]
    assert b"".join(op.data for op in ops) == body


def test_revision_ops_live_and_closure() -> None:
    element = orjson.dumps({"ID": "n1", "Metadata": {"Name": "eth0"}})
    (live,) = docs.revision_ops(Revision("node", "n1", {}, 10), element, "L", "A")
    action, doc = _lines(live.data)
    assert action == {
        "index": {"_index": "L", "_id": "node:n1", "version": 10, "version_type": "external_gte"}
    }
    assert doc == {"Kind": "node", "ID": "n1", "ValidFrom": 10, "Element": orjson.loads(element)}
    assert live.fallback is not None and b'"RawElement":' in live.fallback
    archived, delete = docs.revision_ops(Revision("node", "n1", {}, 10, 20), element, "L", "A")
    action, doc = _lines(archived.data)
    assert action == {"index": {"_index": "A", "_id": "node:n1:10"}}
    assert doc["ValidTo"] == doc["ArchivedAt"] == 20
    assert _lines(delete.data) == [
        {"delete": {"_index": "L", "_id": "node:n1", "version": 10, "version_type": "external_gte"}}
    ]


def test_coalesce_keeps_the_element_of_an_earlier_record() -> None:
    e = {"ID": "n1"}
    got = docs.coalesce([Revision("node", "n1", e, 1), Revision("node", "n1", {}, 1, 5)])
    assert list(got.values()) == [Revision("node", "n1", e, 1, 5)]


def test_classify() -> None:
    assert docs.classify({"errors": False, "items": [{"index": {"status": 201}}]}).retry == []
    answer = {
        "errors": True,
        "items": [
            {"index": {"status": 201}},
            {"index": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}},
            {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
            {
                "index": {
                    "status": 400,
                    "error": {"type": "document_parsing_exception", "reason": "r"},
                }
            },
            {"delete": {"status": 404}},
            {"index": {"status": 503, "error": {"type": "unavailable_shards_exception"}}},
            {"index": {"status": 400, "error": {"type": "strict_dynamic_mapping_exception"}}},
            {
                "index": {
                    "status": 404,
                    "error": {"type": "index_not_found_exception", "reason": "x"},
                }
            },
        ],
    }
    out = docs.classify(answer)
    assert out.retry == [2, 5, 7]
    assert out.fallback == [(3, "document_parsing_exception: r")]
    assert out.rejected == [(6, "strict_dynamic_mapping_exception: ")]
    assert out.missing_alias


def test_resource_cache_merge_keeps_pending_local_changes() -> None:
    cache = ResourceCache()
    token = cache.start_poll()
    assert cache.merge(token, {("capture", "c1"): {"Q": 1}})
    assert cache.get("capture", "c1") == {"Q": 1}
    cache.put("capture", "c1", {"Q": 2})  # ours, not written yet
    token = cache.start_poll()
    assert not cache.merge(token, {("capture", "c1"): {"Q": 1}})  # a stale snapshot
    assert cache.get("capture", "c1") == {"Q": 2}
    cache.written([("capture", "c1")])
    token = cache.start_poll()
    assert cache.merge(token, {})  # deleted by another analyzer
    assert cache.list("capture") == {}
    assert not cache.delete("capture", "c1")


def test_resource_cache_change_during_a_poll_is_kept() -> None:
    cache = ResourceCache()
    token = cache.start_poll()
    cache.put("alert", "a", {"E": 1})
    cache.written([("alert", "a")])  # written after the snapshot's search started
    assert not cache.merge(token, {})
    assert cache.get("alert", "a") == {"E": 1}


def test_check_mapping() -> None:
    check_mapping("flow", "i", mapping_for("flow"))
    bad = {"properties": {**mapping_for("flow")["properties"], "Start": {"type": "keyword"}}}
    with pytest.raises(StorageError, match="index i: field Start is mapped as keyword"):
        check_mapping("flow", "i", bad)
    with pytest.raises(StorageError, match="index i: not a pyskydive index"):
        check_mapping("flow", "i", {"properties": mapping_for("flow")["properties"]})
    with pytest.raises(StorageError, match="lower-case"):
        Layout("Skydive_")
