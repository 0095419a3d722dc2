"""One asyncio event loop per process, on a daemon thread, that hosts every session's async client.

The magics run inside the notebook kernel's own event loop thread, where a nested ``asyncio.run`` is
not allowed; and front doors that are synchronous (magics, CLI) should not each manage a loop. They hand
coroutines to this loop and wait on the result, which keeps the main thread free to take KeyboardInterrupt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def loop() -> asyncio.AbstractEventLoop:
    global _loop  # noqa: PLW0603 - one loop per process, created on first use
    with _lock:
        if _loop is None or _loop.is_closed():
            new_loop = asyncio.new_event_loop()
            thread = threading.Thread(target=new_loop.run_forever, name="cake-engine", daemon=True)
            thread.start()
            _loop = new_loop
        return _loop


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    return asyncio.run_coroutine_threadsafe(coro, loop())


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the engine loop and wait for it (KeyboardInterrupt cancels it)."""
    future = submit(coro)
    try:
        return future.result(timeout)
    except BaseException:
        future.cancel()
        raise
