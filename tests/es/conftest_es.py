"""pytest fixtures for tests against a real Elasticsearch node (tests/es/node.py).

Not a conftest.py (tests/es holds no tests): tests/functional/es_fixtures.py loads it once,
under one fixed module name, and tests/functional/conftest.py binds its fixtures, so that
every functional test module shares one node by naming ``es_node``, ``es_prefix`` or
``es_client``.

Fixtures:

- ``es_node`` (session): the shared node (``EsNode``: ``url``, ``stop()``, ``kill()``,
  ``restart()``). Started once per test run; a test may stop, kill or restart it (the next test
  gets it running again, same port and data). Skips, with the reason, when mvn or a JDK >= 21 is
  missing; with ``PYSKYDIVE_REQUIRE_ES=1`` (CI) that is a failure instead.
- ``es_prefix``: a unique lower-case prefix (``skt<hex>_``) for the indices, aliases and index
  templates of one test; whatever carries it is deleted after the test.
- ``es_client``: the official client (PyPI ``elasticsearch``) on the node; skips if that package
  is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_NODE_MODULE = "pyskydive_tests_es_node"


def _node_module() -> Any:
    if _NODE_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            _NODE_MODULE, Path(__file__).resolve().parent / "node.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[_NODE_MODULE] = module
        spec.loader.exec_module(module)
    return sys.modules[_NODE_MODULE]


_node = _node_module()
EsNode = _node.EsNode
EsNodeUnavailable = _node.EsNodeUnavailable

_shared: Any = None  # the session's EsNode, shared by every module that loads this file
_unavailable: str | None = None  # why there is none, once found out


@pytest.fixture(scope="session")
def es_node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    global _shared, _unavailable
    if _shared is None:
        try:
            if _unavailable is not None:
                raise EsNodeUnavailable(_unavailable)
            build_dir = _node.build()
        except EsNodeUnavailable as e:
            _unavailable = str(e)
            if os.environ.get("PYSKYDIVE_REQUIRE_ES") == "1":
                pytest.fail(f"Elasticsearch test node required but unavailable: {e}")
            pytest.skip(f"no Elasticsearch test node: {e}")
        node = EsNode(tmp_path_factory.mktemp("esnode"), build_dir=build_dir)
        request.config.add_cleanup(node.stop)
        node.start()
        _shared = node
    elif not _shared.running:
        _shared.start()
    return _shared


@pytest.fixture
def es_prefix(es_node: Any) -> Iterator[str]:
    if not es_node.running:  # a previous test stopped or killed the shared node
        es_node.start()
    prefix = f"skt{secrets.token_hex(4)}_"
    yield prefix
    if es_node.running:
        delete_prefixed(es_node, prefix)


@pytest.fixture
def es_client(es_node: Any) -> Iterator[Any]:
    elasticsearch = pytest.importorskip("elasticsearch")
    if not es_node.running:
        es_node.start()
    client = elasticsearch.Elasticsearch(es_node.url, request_timeout=60)
    yield client
    client.close()


def delete_prefixed(node: Any, prefix: str) -> None:
    """Delete the indices (with their aliases) and index templates named ``prefix*``.

    By name: Elasticsearch refuses wildcard deletes (action.destructive_requires_name).
    """
    status, body = node.request("GET", f"/_resolve/index/{prefix}*?expand_wildcards=all")
    names = [i["name"] for i in body.get("indices", [])] if status == 200 else []
    for i in range(0, len(names), 50):
        node.request("DELETE", "/" + ",".join(names[i : i + 50]) + "?ignore_unavailable=true")
    status, body = node.request("GET", f"/_index_template/{prefix}*")
    if status == 200:
        for t in body.get("index_templates", []):
            node.request("DELETE", f"/_index_template/{t['name']}")
    status, body = node.request("GET", f"/_template/{prefix}*")
    if status == 200 and isinstance(body, dict):
        for name in body:
            node.request("DELETE", f"/_template/{name}")
