"""The Elasticsearch fixtures of tests/es/conftest_es.py, bound once for the functional
tests (tests/functional/conftest.py imports them; a test just names ``es_node``...).

tests/es/conftest_es.py is loaded once, under one fixed module name, so that every module
shares its session node. :func:`load_module` loads other helper files the same way.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["es_client", "es_node", "es_prefix", "load_module"]


def load_module(name: str, path: Path) -> ModuleType:
    """Load the file ``path`` as module ``name`` (once)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


_es = load_module(
    "pyskydive_tests_es_fixtures", Path(__file__).resolve().parents[1] / "es" / "conftest_es.py"
)
es_node = _es.es_node
es_prefix = _es.es_prefix
es_client = _es.es_client
