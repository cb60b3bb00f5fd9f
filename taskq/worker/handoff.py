"""The hand-off of a job to billiard's children: straight into their pipe when that is safe.

billiard hands each job to a task-handler thread, which then writes it to the pipe the
children read from. That thread only runs once the consumer's thread lets go of the GIL,
so every job waits for a thread switch: a third of a millisecond of a short task's
latency. ``HandOff`` takes the place of the pool's task queue and writes the job to the
pipe itself, in the calling thread, whenever the write cannot block: the pipe then holds
no more than half its capacity of jobs that no child has taken yet. Anything else (a job
too big for that, or any job while an earlier one still waits on billiard's thread) goes
through billiard's thread as before, so the pipe only ever has one writer at a time and a
full pipe never stalls the consumer.

A job counts as in the pipe from its write until billiard reports it accepted (a child
read it) or finished, whichever comes first.
"""

from __future__ import annotations

import contextlib
import fcntl
import queue
import threading
from dataclasses import dataclass
from typing import Any

from billiard.reduction import ForkingPickler

# Without a way to ask the pipe (not Linux), assume the smallest capacity Linux gives one.
_SMALLEST_PIPE = 4096
_HEADER = 8  # billiard frames each message with a length; room for it, with some to spare


@dataclass
class Ticket:
    """One batch's claim on the pipe: which job it became and what it holds there."""

    job: int | None = None  # None before the put, and again once released
    size: int = 0  # bytes in the pipe; 0 while billiard's thread has it


class HandOff:
    """Stands in for billiard's task queue (``Pool._taskqueue``); only ``put`` is used.

    Before each ``apply_async`` the pool calls ``expect`` with a fresh ticket; the job
    that ``apply_async`` then puts is tied to it, and ``taken(ticket)`` releases it. The
    ticket, not billiard's job id, is what the pool's callbacks hold: they may run on
    another thread (billiard's supervisor) before ``apply_async`` has even returned that id.
    """

    def __init__(self, tasks: queue.Queue[Any], writer: Any):
        self._tasks = tasks  # billiard's own queue, read by its task-handler thread
        self._writer = writer  # the write end of the pipe the children read jobs from
        self._room = _capacity(writer) // 2
        self._lock = threading.Lock()
        self._ticket: Ticket | None = None
        self._in_pipe = 0  # bytes of jobs written here that no child has taken yet
        self._on_thread = 0  # jobs given to billiard's thread that no child has taken yet
        self.direct = 0  # jobs written here, so a test can tell which way they went

    @classmethod
    def install(cls, pool: Any) -> HandOff | None:
        """Put a hand-off in front of ``pool``'s children; None if billiard's layout differs."""
        tasks = getattr(pool, "_taskqueue", None)
        writer = getattr(getattr(pool, "_inqueue", None), "_writer", None)
        if not isinstance(tasks, queue.Queue) or not hasattr(writer, "send_bytes"):
            return None
        handoff = cls(tasks, writer)
        pool._taskqueue = handoff
        return handoff

    def expect(self, ticket: Ticket) -> None:
        """Tie the next job put to ``ticket`` (the caller serialises its puts)."""
        self._ticket = ticket

    def put(self, item: Any) -> None:
        ticket, self._ticket = self._ticket, None
        job = _single_job(item)
        if job is None or ticket is None:  # a sentinel, a map's chunks: billiard's thread
            self._tasks.put(item)
            return
        try:
            payload = ForkingPickler.dumps(item[0][0])
        except Exception:  # billiard's thread reports it as the job's error, as before
            payload = None
        size = 0 if payload is None else len(payload) + _HEADER
        with self._lock:
            ticket.job = job
            if payload is None or self._on_thread or self._in_pipe + size > self._room:
                self._on_thread += 1
                self._tasks.put(item)
                return
            # Cannot block: the pipe has room for this and for everything still in it.
            self._writer.send_bytes(payload)
            ticket.size = size
            self._in_pipe += size
            self.direct += 1

    @property
    def held(self) -> tuple[int, int]:
        """(bytes written here, jobs on billiard's thread) that no child has taken yet."""
        return self._in_pipe, self._on_thread

    def taken(self, ticket: Ticket) -> None:
        """The ticket's job left the pipe (a child accepted it, or it ended); idempotent."""
        with self._lock:
            if ticket.job is None:
                return
            ticket.job = None
            if ticket.size:
                self._in_pipe -= ticket.size
            else:
                self._on_thread -= 1


def _single_job(item: Any) -> int | None:
    # apply_async puts ([(TASK, (job, None, func, args, kwargs))], None).
    with contextlib.suppress(TypeError, IndexError, ValueError):
        tasks, set_length = item
        if set_length is None and len(tasks) == 1:
            job = tasks[0][1][0]
            if isinstance(job, int):
                return job
    return None


def _capacity(writer: Any) -> int:
    get_size = getattr(fcntl, "F_GETPIPE_SZ", None)
    if get_size is None:
        return _SMALLEST_PIPE
    try:
        return int(fcntl.fcntl(writer.fileno(), get_size))
    except OSError:
        return _SMALLEST_PIPE
