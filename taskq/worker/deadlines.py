"""Deadlines: time limits for tasks run in threads (``-P threads``), as far as threads allow.

A thread cannot be killed or interrupted by a signal. What CPython offers is an exception
raised asynchronously in a thread (``PyThreadState_SetAsyncExc``): the thread sees it when
it next runs Python code. So, on ``-P threads``:

- at the soft limit the task's thread gets ``SoftTimeLimitExceeded``, as in the prefork
  pool, and may catch it to clean up;
- at the hard limit it gets ``TimeLimitExceeded`` (the prefork pool would kill the
  process: here the thread is the task's only to stop);
- a thread blocked in C (``time.sleep``, a socket read without a timeout) sees either only
  once that call returns. Give I/O its own timeouts.

A limit is delivered only while its task is running: one watchdog thread per pool keeps the
deadlines, and takes a limit back, under one lock, when the task ends first, so a late
limit never lands in the next task the thread runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import threading
import time
from collections.abc import Iterator

from ..exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

_SetAsyncExc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_SetAsyncExc.argtypes = (ctypes.c_ulong, ctypes.py_object)


def async_raise(ident: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in thread ``ident`` at its next bytecode (None: cancel a pending one)."""
    # An empty py_object is NULL: CPython's way to cancel a pending exception.
    _SetAsyncExc(ident, ctypes.py_object(exc_type) if exc_type else ctypes.py_object())


class Deadlines:
    """The time limits of the tasks running in a pool's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, int, int, type[BaseException]]] = []  # when, seq, ...
        self._running: dict[int, int] = {}  # thread ident -> the token of its current task
        self._tokens = itertools.count(1)
        self._closed = False
        self._watchdog = threading.Thread(target=self._watch, name="taskq-deadlines", daemon=True)
        self._watchdog.start()

    @contextlib.contextmanager
    def limits(self, soft: float | None, hard: float | None) -> Iterator[None]:
        """While the block runs in this thread, its limits apply to it."""
        ident = threading.get_ident()
        now = time.monotonic()
        with self._lock:
            token = next(self._tokens)
            self._running[ident] = token
            for seconds, exc in ((soft, SoftTimeLimitExceeded), (hard, TimeLimitExceeded)):
                if seconds:
                    entry = (now + seconds, next(self._tokens), token, ident, exc)
                    heapq.heappush(self._heap, entry)
            self._wake.notify()
        try:
            yield
        finally:
            self._leave(ident, token)

    def _leave(self, ident: int, token: int) -> None:
        while True:
            try:
                with self._lock:
                    if self._running.get(ident) == token:
                        del self._running[ident]
                    # A limit given while the task ran but not seen yet: taken back.
                    async_raise(ident, None)
                    self._compact()
                return
            except (SoftTimeLimitExceeded, TimeLimitExceeded):
                continue  # it landed just now, after the task: not the task's any more

    def _compact(self) -> None:
        # Deadlines of tasks that ended stay until due: with long limits and many tasks
        # they would pile up, so they go once they outnumber the running ones.
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._running):
            live = set(self._running.values())
            self._heap = [entry for entry in self._heap if entry[2] in live]
            heapq.heapify(self._heap)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()

    def _watch(self) -> None:
        with self._lock:
            while not self._closed:
                if not self._heap:
                    self._wake.wait()
                    continue
                when, _, token, ident, exc = self._heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if self._running.get(ident) == token:
                    async_raise(ident, exc)


__all__ = ["Deadlines", "async_raise"]
