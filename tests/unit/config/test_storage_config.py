"""Storage keys: storage.<name>.*, analyzer.{topology,flow}.{backend,max_buffer_size}."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyskydive.config import Config, load_config
from pyskydive.config.model import default_data_dir
from pyskydive.errors import ConfigError


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "skydive.yml"
    path.write_text(text)
    return load_config(str(path), env=env or {})


def test_no_config_is_the_embedded_store_in_the_data_dir() -> None:
    config = Config()
    assert config.storage == {}
    assert config.analyzer.topology.backend == config.analyzer.flow.backend == "embedded"
    entry = config.storage_backend("embedded")
    assert entry.driver == "embedded" and entry.path is None  # analyzer.data_dir


def test_default_data_dir_for_root_and_other_users(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_data_dir() == "/var/lib/skydive"
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", "/home/u/.data")
    assert default_data_dir() == "/home/u/.data/skydive"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", "/home/u")
    assert default_data_dir() == "/home/u/.local/share/skydive"


def test_elasticsearch_entry(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
storage:
  myes:
    driver: elasticsearch
    host: 10.0.0.5:9200
    index_prefix: prod_
    username: skydive
    password: secret
    index_entries_limit: 1000000
    index_age_limit: 7d
    indices_to_keep: 4
    bulk_maxdelay: 0.5
analyzer:
  topology:
    backend: myes
  flow:
    backend: myes
    max_buffer_size: 100000
""",
    )
    es = config.storage_backend("myes")
    assert es.hosts == ["http://10.0.0.5:9200"]  # Skydive's single host, scheme added
    assert (es.index_prefix, es.username, es.index_age_limit) == ("prod_", "skydive", 604800)
    assert (es.index_entries_limit, es.indices_to_keep, es.bulk_maxdelay) == (1000000, 4, 0.5)
    assert config.analyzer.flow.max_buffer_size == 100000


def test_embedded_entry_and_retention(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "storage:\n  local:\n    driver: embedded\n    path: /srv/sky\n    max_age: 12h\n"
        "analyzer:\n  flow:\n    backend: local\n",
    )
    local = config.storage_backend("local")
    assert (local.path, local.max_age, local.max_flows) == ("/srv/sky", 43200, 0)
    assert config.analyzer.topology.backend == "embedded"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "analyzer:\n  flow:\n    backend: es\n",
            "analyzer.flow.backend: no storage backend 'es' (defined: embedded)",
        ),
        ("storage:\n  x:\n    driver: mongo\n", "storage.x.driver"),
        ("storage:\n  x:\n    path: /tmp\n", "storage.x.driver"),
        (
            "storage:\n  x:\n    driver: embedded\n    hosts: [a]\n",
            "hosts: not an option of driver embedded",
        ),
        (
            "storage:\n  x:\n    driver: elasticsearch\n    path: /tmp\n",
            "path: not an option of driver elasticsearch",
        ),
        ("storage:\n  x:\n    driver: elasticsearch\n    indexprefix: a\n", "indexprefix"),
        ("storage:\n  x:\n    driver: elasticsearch\n    index_prefix: Bad\n", "index_prefix"),
        ("storage:\n  x:\n    driver: embedded\n    max_age: soon\n", "storage.x.max_age"),
        ("analyzer:\n  flow:\n    max_buffer_size: 0\n", "analyzer.flow.max_buffer_size"),
    ],
)
def test_bad_storage_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_storage_entry_from_the_environment(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "",
        env={
            "SKYDIVE_STORAGE_es": "{driver: elasticsearch, hosts: 'h1:9200, h2:9200'}",
            "SKYDIVE_ANALYZER_TOPOLOGY_BACKEND": "es",
        },
    )
    assert config.storage_backend("es").hosts == ["http://h1:9200", "http://h2:9200"]
    assert config.analyzer.topology.backend == "es"
