"""Coroutine tasks: an ``async def`` task runs to completion on an event loop of the thread
that runs it (a prefork child's main thread, a pool thread), made on first use and reused
by the next tasks there, so a task's client sessions and pools may outlive one run.

Where a loop is already running in the calling thread (an eager call inside an asyncio
server), the coroutine runs on a thread of its own, with the caller's task context, and
the caller waits for it, as it would for any eager call.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .app import Taskq

T = TypeVar("T")
_local = threading.local()


def run_coroutine(make: Callable[[], Coroutine[Any, Any, T]], app: Taskq) -> T:
    """Run the coroutine ``make()`` returns to completion; its value (or its exception)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_here(make())
    context = app.current_context()

    def elsewhere() -> T:
        if context is not None:
            app.push_context(context)
        try:
            return _run_here(make())
        finally:
            if context is not None:
                app.pop_context()

    with ThreadPoolExecutor(1, thread_name_prefix="taskq-eager-async") as pool:
        return pool.submit(elsewhere).result()


def _loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def _run_here(coro: Coroutine[Any, Any, T]) -> T:
    loop = _loop()
    task = loop.create_task(coro)
    try:
        return loop.run_until_complete(task)
    except BaseException:
        # Raised from outside the coroutine while the loop waited (a soft time limit's
        # signal, a cold stop): cancel the coroutine so its finally blocks and context
        # managers run, then let the error go on. A loop left unusable is replaced.
        if not task.done():
            task.cancel()
            try:
                loop.run_until_complete(asyncio.wait([task], timeout=5))
            except BaseException:
                _discard(loop)
                raise
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning
        raise


def _discard(loop: asyncio.AbstractEventLoop) -> None:
    with contextlib.suppress(Exception):
        loop.close()
    _local.loop = None


__all__ = ["run_coroutine"]
