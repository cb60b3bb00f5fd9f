"""The prefork pool: billiard's processes, each running one batch at a time.

Jobs go straight into the children's pipe (handoff.py) and reports are read on the
consumer's thread (``poll_results``), not by billiard's threads. Each batch owns a row of
marks in shared memory, so that when its process dies the worker knows how far it got, and
a claim (``Claims``), so that a warm stop can withdraw the batches no process has started.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import queue
import signal
import tempfile
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from billiard.exceptions import TimeLimitExceeded as BilliardTimeLimit
from billiard.exceptions import WorkerLostError as BilliardWorkerLost
from billiard.pool import Pool as BilliardPool
from billiard.pool import ResultHandler as BilliardResultHandler
from billiard.sharedctypes import RawArray

from .. import signals
from ..exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from .handoff import HandOff, Ticket
from .pool import (
    QUEUED,
    BatchCallbacks,
    Fate,
    Limits,
    Pool,
    PoolOptions,
    Withdrawn,
    lost_fates,
    run_batch,
    signal_number,
)
from .signal_inbox import forget_inherited_inbox
from .tracer import Job

GROWTH = 4  # pool_grow may take the pool to this many times its starting size

if TYPE_CHECKING:
    from ..app import Taskq


class Claims:
    """Who starts each batch handed to the pool: a child process, or a stop that withdraws it.

    One byte per batch row in shared memory says QUEUED, STARTED or WITHDRAWN, and it only
    changes under a lock on that row: a POSIX record lock on one byte of an unlinked file,
    which every child inherits at its fork. Exactly one side wins each batch, so a batch
    given back at a warm stop never also runs; and the kernel drops the lock of a process
    that dies, so a child killed while it holds one cannot block the worker.
    """

    QUEUED, STARTED, WITHDRAWN = 0, 1, 2

    def __init__(self, rows: int):
        self.state = RawArray(ctypes.c_ubyte, rows)
        self.stopping = RawArray(ctypes.c_ubyte, 1)  # set once: members not begun stay so
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - open for the pool's life
        self.fd = self._file.fileno()

    def queue(self, row: int) -> None:
        """A new batch in ``row``, before it is handed over (no child can see it yet)."""
        self.state[row] = self.QUEUED

    def start(self, row: int) -> bool:
        """In the child: True if it may run the batch, False if the worker withdrew it."""
        with self._locked(row):
            if self.state[row] == self.WITHDRAWN:
                return False
            self.state[row] = self.STARTED
            return True

    def withdraw(self, row: int) -> bool:
        """In the worker: True if the batch will never start (no child had claimed it)."""
        with self._locked(row):
            if self.state[row] != self.QUEUED:
                return False
            self.state[row] = self.WITHDRAWN
            return True

    def stopped(self) -> bool:
        return bool(self.stopping[0])

    @contextlib.contextmanager
    def _locked(self, row: int) -> Iterator[None]:
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, row)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, row)

    def close(self) -> None:
        self._file.close()


# The one process-global: the app, the shared progress marks and the claims of a prefork
# child, set by the pool's initializer after the fork, since billiard ships only the job.
_child: dict[str, Any] = {}


def _init_child(app: Taskq, marks: Any, claims: Claims) -> None:
    # Inherited clients hold the parent's sockets: drop them (never close them, that would
    # close the parent's connections) and let the child open its own on first use.
    app.forget_clients()
    # The parent's signal handlers only record into the parent's inbox; billiard installs
    # the child's own after this initializer.
    forget_inherited_inbox()
    # Its own process group: a SIGTERM sent to the worker's group (a shell, a supervisor's
    # killpg) then reaches only the parent, which shuts the pool down in order. A child
    # killed by such a signal mid-read would leave the pool's queue lock held forever.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _child["app"] = app
    _child["marks"] = marks
    _child["claims"] = claims
    _child["soft_handler"] = False
    signals.worker_process_init.send(sender=None)


def _child_exit(pid: int, exitcode: int) -> None:
    # In the child, as it leaves (its tasks done, or replaced after max_tasks_per_child).
    signals.worker_process_shutdown.send(sender=None, pid=pid, exitcode=exitcode)


def _raise_soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def _run_in_child(row: int, first_mark: int, jobs: Sequence[Job]) -> list[Fate]:
    if not _child["soft_handler"] and hasattr(signal, "SIGUSR1"):
        # billiard installs its own handler after our initializer; replace it once so that
        # tasks can catch taskq.SoftTimeLimitExceeded.
        signal.signal(signal.SIGUSR1, _raise_soft_limit)
        _child["soft_handler"] = True
    marks, claims = _child["marks"], _child["claims"]
    if not claims.start(row):
        return [Withdrawn() for _ in jobs]  # already reported by the worker; not read

    def mark(i: int, value: int) -> None:
        marks[first_mark + i] = value

    return run_batch(_child["app"], jobs, mark, claims.stopped)


class _ResultsOnTheLoop(BilliardResultHandler):  # type: ignore[misc]
    """billiard's result handler, never started as a thread: see ``PreforkPool.poll_results``."""

    def start(self) -> None:
        pass  # billiard then drains what is left itself when the pool stops (on this thread)

    def on_stop_not_started(self) -> None:
        # Terminating stops the handler, and joining stops it again: by then billiard has
        # closed the pipe, so drain it only once.
        if not self._shutdown_complete:
            super().on_stop_not_started()


class _Billiard(BilliardPool):  # type: ignore[misc]
    ResultHandler = _ResultsOnTheLoop


class PreforkPool(Pool):
    """billiard's process pool: each batch in a child process, with time limits."""

    def __init__(self, app: Taskq, options: PoolOptions):
        super().__init__(app, options)
        self._size = options.concurrency
        # The shared rows are made before the fork, for as many processes as pool_grow may
        # ever reach: a child forked later sees the same memory.
        self._most = options.concurrency * GROWTH

    @property
    def limit(self) -> int:
        return self._size

    @property
    def batch_size(self) -> int:
        # billiard counts jobs, not tasks, towards max_tasks_per_child, and checks the
        # memory of a child after a job: batch only where neither limit is set.
        o = self.options
        return 1 if o.max_tasks_per_child or o.max_memory_per_child else o.batch_size

    def start(self) -> None:
        o = self.options
        # One row of marks per batch in flight; a batch owns its row until it is reported.
        rows = self._most * 2  # the capacity of the largest pool
        self._marks = RawArray(ctypes.c_ubyte, rows * self.batch_size)
        self._claims = Claims(rows)
        self._in_flight: dict[int, tuple[int, BatchCallbacks]] = {}  # row -> its batch
        self._ids: dict[int, set[str]] = {}  # row -> the task ids in its batch
        self._free_rows: queue.SimpleQueue[int] = queue.SimpleQueue()
        for row in range(rows):
            self._free_rows.put(row)
        self._pool = _Billiard(
            processes=o.concurrency,
            initializer=_init_child,
            initargs=(self.app, self._marks, self._claims),
            maxtasksperchild=o.max_tasks_per_child,
            max_memory_per_child=o.max_memory_per_child,
            lost_worker_timeout=o.lost_wait,
            enable_timeouts=True,
            threads=True,
            on_process_exit=_child_exit,
        )
        # Jobs go straight into the children's pipe, not through billiard's thread.
        self._handoff = HandOff.install(self._pool)
        self._next_result = self._pool._poll_result
        self._on_result = self._pool._result_handler.on_state_change

    @property
    def result_fd(self) -> int | None:
        return int(self._pool._outqueue._reader.fileno())

    def poll_results(self) -> None:
        next_result, on_result = self._next_result, self._on_result
        while True:
            ready, item = next_result(0)
            if not ready or item is None:  # None: billiard's sentinel, while it stops
                return
            on_result(item)

    def apply(
        self, jobs: Sequence[Job], callbacks: BatchCallbacks, limits: Limits = (None, None)
    ) -> None:
        row = self._free_rows.get_nowait()  # the consumer keeps within capacity
        first = row * self.batch_size
        marks = self._marks
        for i in range(len(jobs)):
            marks[first + i] = QUEUED
        self._claims.queue(row)
        self._in_flight[row] = (len(jobs), callbacks)
        self._ids[row] = {job.message.id for job in jobs}

        ticket = Ticket()
        taken = _ignore if self._handoff is None else self._handoff.taken

        def done(fates: list[Fate]) -> None:
            taken(ticket)
            self._free_row(row, callbacks, fates, None)

        def failed(error: Any) -> None:
            taken(ticket)
            left = lost_fates(marks[first : first + len(jobs)])
            self._free_row(row, callbacks, left, _translate(_unwrap(error)))

        def accepted(pid: int, _time: float) -> None:
            taken(ticket)  # a child read it: the pipe has that much room again
            if pid not in self._pids():
                # Its process died before this acceptance came in. billiard looks for the
                # jobs of a process only in the pass that sees it exit, so it would not
                # look again until another process exits: the task would wait that long
                # (a minute, seen in tests). Report it lost now, as that pass would have.
                self._pool.on_job_process_lost(job, pid, 0)
            if callbacks.on_started is not None:
                callbacks.on_started(pid)
            if callbacks.on_accepted is not None:
                callbacks.on_accepted()

        if self._handoff is not None:
            self._handoff.expect(ticket)
        job = self._pool.apply_async(
            _run_in_child,
            (row, first, list(jobs)),
            callback=done,
            error_callback=failed,
            accept_callback=accepted,
            timeout=limits[0],
            soft_timeout=limits[1],
        )

    def _free_row(
        self,
        row: int,
        callbacks: BatchCallbacks,
        fates: list[Fate],
        error: BaseException | None,
    ) -> None:
        # A withdrawn batch was reported when it was withdrawn: its late report is dropped.
        reported = self._in_flight.pop(row, None) is None
        self._ids.pop(row, None)
        self._free_rows.put(row)
        if not reported:
            callbacks.on_done(fates, error)

    def withdraw_tasks(self, task_ids: set[str]) -> None:
        for row, (count, callbacks) in list(self._in_flight.items()):
            if not self._ids.get(row, set()) & task_ids:
                continue
            # As at a warm stop: the row stays taken until a child reads the batch.
            if self._claims.withdraw(row) and self._in_flight.pop(row, None) is not None:
                callbacks.on_done([Withdrawn() for _ in range(count)], None)

    def terminate_job(self, request: Any, signal_name: str) -> bool:
        pid = getattr(request, "worker_pid", None)
        if not pid or pid not in self._pids():
            return False  # not started yet, or its process is gone already
        # billiard sees the process die and starts another; the batch is reported lost.
        os.kill(pid, signal_number(signal_name))
        return True

    def resize(self, change: int) -> int:
        if change > 0:
            if self._size + change > self._most:
                raise ValueError(
                    f"the pool can grow to {self._most} processes at most ({GROWTH} times "
                    f"-c {self.options.concurrency}); restart the worker with a larger -c"
                )
            self._pool.grow(change)  # billiard's supervisor starts them
            self._size += change
            return change
        if self._size + change < 1:
            raise ValueError(f"the pool has {self._size} process(es) and keeps at least one")
        before = self._pool._processes
        try:
            self._pool.shrink(-change)  # idle processes only; ValueError when all are busy
        finally:
            self._size -= before - self._pool._processes
        return int(self._pool._processes - before)

    def info(self) -> dict[str, Any]:
        o = self.options
        return {
            **super().info(),
            "processes": self._pids(),
            "timeouts": [0, 0],
            "max-memory-per-child": o.max_memory_per_child or "N/A",
        }

    def _pids(self) -> list[int]:
        return [p.pid for p in list(self._pool._pool) if p.pid]

    def withdraw(self) -> None:
        self._claims.stopping[0] = 1
        for row, (count, callbacks) in list(self._in_flight.items()):
            # The row stays taken until a child reads the batch and reports (unrun).
            if self._claims.withdraw(row) and self._in_flight.pop(row, None) is not None:
                callbacks.on_done([Withdrawn() for _ in range(count)], None)

    def stop(self) -> None:
        self._pool.close()
        self._pool.join()
        self._claims.close()

    def terminate(self) -> None:
        self._pool.terminate()
        self._pool.join()
        self._claims.close()


def _ignore(ticket: Ticket) -> None:
    pass


def _unwrap(error: Any) -> BaseException:
    # billiard reports errors as ExceptionInfo (.exception) or, when they crossed the
    # process boundary, as ExceptionWithTraceback (.exc).
    for attr in ("exception", "exc"):
        inner = getattr(error, attr, None)
        if isinstance(inner, BaseException):
            return _unwrap(inner)
    return error if isinstance(error, BaseException) else RuntimeError(repr(error))


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, BilliardWorkerLost):
        return WorkerLostError(*exc.args)
    if isinstance(exc, BilliardTimeLimit):
        return TimeLimitExceeded(*exc.args)
    return exc
