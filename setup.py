"""Build of the optional C extensions (the rest of the metadata is in pyproject.toml).

``pyskydive.flow._fastflow`` is the compiled hot path of the flow table (see
``pyskydive/flow/fast.py``); ``pyskydive.storage._flowarrow`` turns flow updates into Arrow
batches for the embedded store (see ``pyskydive/storage/embedded_flows.py``). Both are
optional: without a C compiler or the Python headers the install still succeeds and the
pure-Python paths do the same work, slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pyskydive.flow._fastflow",
            sources=[
                "src/pyskydive/flow/_fastflow.c",
                "src/pyskydive/flow/_fastflow_parse.c",
                "src/pyskydive/flow/_fastflow_sflow.c",
            ],
            depends=["src/pyskydive/flow/_fastflow.h"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "pyskydive.storage._flowarrow",
            sources=["src/pyskydive/storage/_flowarrow.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
    ],
)
