"""Run a function inside a network namespace, on a worker thread.

``setns(2)`` moves only the calling thread, so a thread can enter a namespace, create a socket
there (a socket stays bound to the namespace it was created in) and come back, without the
fork that pyroute2 uses for the same job. The thread's own namespace is restored before the
function's result is returned; if that ever fails the thread is unusable, so it is retired.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pyskydive.errors import ProbeError

__all__ = ["NetnsRunner", "RunnerClosed"]

T = TypeVar("T")

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _Stuck(OSError):
    """The worker thread could not return to its namespace: it must not be used again."""


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({what}): {os.strerror(err)}")


def call_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` with the current thread in the namespace at ``path`` (blocking)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target, path)
        finally:
            os.close(target)
        try:
            return fn()
        finally:
            try:
                _setns(own, "back to the agent's namespace")
            except OSError as exc:  # pragma: no cover - the kernel refusing to let us back
                raise _Stuck(str(exc)) from exc
    finally:
        os.close(own)


class RunnerClosed(ProbeError):
    """The agent is stopping: no more work inside namespaces."""


class NetnsRunner:
    """A single worker thread that runs blocking calls inside namespaces."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns")
        self._closed = False

    async def run(self, path: str | None, fn: Callable[[], T]) -> T:
        if self._closed:
            raise RunnerClosed("the agent is stopping")
        loop = asyncio.get_running_loop()
        if path is None:
            return await loop.run_in_executor(self._pool, fn)
        try:
            return await loop.run_in_executor(self._pool, call_in_netns, path, fn)
        except _Stuck:
            self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns")
            raise

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
