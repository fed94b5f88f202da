"""The embedded store: persistence, atomic writes, corrupt files as one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyskydive.analyzer.store import FILE_NAME, ResourceStore
from pyskydive.errors import StorageError


def test_missing_file_is_empty_and_nothing_is_created(tmp_path: Path) -> None:
    data_dir = tmp_path / "sub" / "dir"
    store = ResourceStore(data_dir)
    assert store.list("capture") == {}
    assert store.get("capture", "x") is None
    assert not data_dir.exists()


def test_put_get_delete_survive_a_reopen(tmp_path: Path) -> None:
    store = ResourceStore(tmp_path / "d")
    store.put("capture", "a", {"UUID": "a", "GremlinQuery": "G.V()"})
    store.put("alert", "b", {"UUID": "b"})
    assert ("capture", "a") in store
    again = ResourceStore(tmp_path / "d")
    assert again.list("capture") == {"a": {"UUID": "a", "GremlinQuery": "G.V()"}}
    assert again.get("alert", "b") == {"UUID": "b"}
    assert again.delete("alert", "b") is True
    assert again.delete("alert", "b") is False
    assert ResourceStore(tmp_path / "d").list("alert") == {}
    # no temporary file is left behind
    assert sorted(os.listdir(tmp_path / "d")) == [FILE_NAME]


def test_returned_resources_are_copies(tmp_path: Path) -> None:
    store = ResourceStore(tmp_path)
    resource = {"UUID": "a", "Metadata": {"k": 1}}
    store.put("noderule", "a", resource)
    resource["Metadata"]["k"] = 2
    got = store.get("noderule", "a")
    assert got == {"UUID": "a", "Metadata": {"k": 1}}
    assert got is not None
    got["Metadata"]["k"] = 3
    assert store.list("noderule")["a"]["Metadata"]["k"] == 1


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"capture": [1]}'])
def test_corrupt_file_is_a_one_line_error_naming_it(tmp_path: Path, content: bytes) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    with pytest.raises(StorageError) as info:
        ResourceStore(tmp_path)
    message = str(info.value)
    assert str(tmp_path / FILE_NAME) in message
    assert "corrupt" in message
    assert "\n" not in message


def test_write_failure_is_a_storage_error_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ResourceStore(tmp_path)
    store.put("capture", "a", {"UUID": "a"})

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StorageError, match=r"cannot write .*No space left"):
        store.put("capture", "b", {"UUID": "b"})
    with pytest.raises(StorageError):
        store.delete("capture", "a")
    assert store.list("capture") == {"a": {"UUID": "a"}}
    assert sorted(os.listdir(tmp_path)) == [FILE_NAME]  # the temporary file is gone


def test_unreadable_data_dir_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot read"):
        ResourceStore(blocker / "d")
