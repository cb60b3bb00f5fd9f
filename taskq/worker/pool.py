"""Execution pools behind one small interface: prefork (billiard), threads and solo.

A pool runs *batches*: one or more jobs handed over at once and run one after another in
the same process. On prefork this is what makes short tasks cheap: billiard's cost per
job (a result object, the job pickled into a pipe, two messages back) is paid once per
batch instead of once per task. ``apply`` never blocks. Its callback runs on whatever
thread learns how the batch ended (for prefork, mostly the caller of ``poll_results``;
billiard's own threads for a process that died or a time limit; a pool thread; the caller
for solo); the consumer only ever turns it into a message for its own thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import queue
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from billiard.exceptions import TimeLimitExceeded as BilliardTimeLimit
from billiard.exceptions import WorkerLostError as BilliardWorkerLost
from billiard.pool import Pool as BilliardPool
from billiard.pool import ResultHandler as BilliardResultHandler
from billiard.sharedctypes import RawArray

from .. import states
from ..exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from .handoff import HandOff, Ticket
from .signal_inbox import forget_inherited_inbox
from .tracer import Job, Outcome, trace

if TYPE_CHECKING:
    from ..app import Taskq

logger = logging.getLogger("taskq.worker")

Limits = tuple[float | None, float | None]  # (hard, soft) seconds

# How far each member of a batch got, written by the process that runs it into memory
# the worker shares, so that when that process dies the worker still knows which member
# it was running, which ones finished, and which never started.
QUEUED, RUNNING, FINISHED = 0, 1, 2  # FINISHED: how it ended does not fit in the mark
_MARKED_STATES = (states.SUCCESS, states.FAILURE, states.RETRY, states.IGNORED)
_FIRST_STATE_MARK = 3


@dataclass(frozen=True)
class Crash:
    """A member whose run raised outside the task itself (the tracer failed)."""

    error: BaseException


@dataclass(frozen=True)
class Lost:
    """A member of a batch whose run ended without a report (its process died)."""

    mark: int  # QUEUED, RUNNING or FINISHED
    state: str | None = None  # the state it finished in, when its mark says so


Fate = Outcome | Crash | Lost


@dataclass(frozen=True)
class BatchCallbacks:
    """How a pool reports on one batch.

    ``on_done(fates, error)``: one fate per job, in order; ``error`` is set when the
    batch ended without a report (its process died, or the hard time limit hit), and
    the fates are then ``Lost``. ``on_accepted``, if given, runs when the batch starts.
    """

    on_done: Callable[[list[Fate], BaseException | None], None]
    on_accepted: Callable[[], None] | None = None


@dataclass(frozen=True)
class PoolOptions:
    concurrency: int
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    lost_wait: float = 1.0
    batch_size: int = 1


def run_batch(app: Taskq, jobs: Sequence[Job], mark: Callable[[int, int], None]) -> list[Fate]:
    """Run the jobs in order, marking each one's progress; where the batch runs."""
    fates: list[Fate] = []
    # A member's result is sent before its mark says it finished, but the backend's reply
    # may be read only once the next member ran: a store that failed is known at the end.
    with app.backend.stores_in_flight() as failed:
        for i, job in enumerate(jobs):
            mark(i, RUNNING)
            try:
                outcome = trace(app, job)
            except Exception as exc:  # the tracer itself failed (e.g. backend down)
                mark(i, FINISHED)
                fates.append(Crash(_picklable(exc)))
                continue
            mark(i, _mark_of(outcome))
            fates.append(outcome)
    for i, job in enumerate(jobs):
        error = failed.get(job.message.id)
        if error is not None and isinstance(fates[i], Outcome):
            mark(i, FINISHED)
            fates[i] = Crash(_picklable(error))
    return fates


def _mark_of(outcome: Outcome) -> int:
    if outcome.bury is None and outcome.state in _MARKED_STATES:
        return _FIRST_STATE_MARK + _MARKED_STATES.index(outcome.state)
    return FINISHED  # rejected or buried: the reason does not fit in a mark


def lost_fates(marks: Sequence[int]) -> list[Fate]:
    fates: list[Fate] = []
    for mark in marks:
        if mark >= _FIRST_STATE_MARK:
            fates.append(Lost(FINISHED, _MARKED_STATES[mark - _FIRST_STATE_MARK]))
        else:
            fates.append(Lost(mark))
    return fates


def _picklable(exc: Exception) -> BaseException:
    # It crosses a pipe on prefork: an exception that cannot be pickled would cost the
    # whole batch its report.
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(repr(exc))
    return exc


class Pool(ABC):
    """Runs batches of jobs; reports each member's fate."""

    def __init__(self, app: Taskq, options: PoolOptions):
        self.app = app
        self.options = options

    @property
    def limit(self) -> int:
        return self.options.concurrency

    @property
    def capacity(self) -> int:
        """Batches in flight at most: one running and one waiting per pool slot."""
        return self.limit * 2

    @property
    def batch_size(self) -> int:
        """The most jobs one batch may hold."""
        return 1

    def start(self) -> None:  # noqa: B027 - solo has nothing to start
        pass

    @property
    def result_fd(self) -> int | None:
        """A file that is readable when ``poll_results`` has reports to read, if any."""
        return None

    def poll_results(self) -> None:  # noqa: B027 - the others report from their own threads
        """Read the reports that are in without waiting; runs their callbacks here."""

    @abstractmethod
    def apply(
        self, jobs: Sequence[Job], callbacks: BatchCallbacks, limits: Limits = (None, None)
    ) -> None: ...

    def stop(self) -> None:  # noqa: B027
        """Wait for running jobs, then release the pool."""

    def terminate(self) -> None:  # noqa: B027
        """Stop now, killing running jobs."""


def _run_here(app: Taskq, jobs: Sequence[Job], callbacks: BatchCallbacks) -> None:
    """Run a batch in the calling thread and report it (solo and threads)."""
    marks = [QUEUED] * len(jobs)
    if callbacks.on_accepted is not None:
        callbacks.on_accepted()
    try:
        fates = run_batch(app, jobs, marks.__setitem__)
    except BaseException as exc:  # SystemExit or the like, out of the task
        callbacks.on_done(lost_fates(marks), exc)
        return
    callbacks.on_done(fates, None)


class SoloPool(Pool):
    """Runs each task inline in the consumer's thread: one at a time, for tests and debugging."""

    def apply(
        self, jobs: Sequence[Job], callbacks: BatchCallbacks, limits: Limits = (None, None)
    ) -> None:
        _run_here(self.app, jobs, callbacks)

    @property
    def limit(self) -> int:
        return 1


class ThreadPool(Pool):
    """Tasks in threads of the worker process. Time limits are not enforced here."""

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.limit, thread_name_prefix="taskq-task")

    def apply(
        self, jobs: Sequence[Job], callbacks: BatchCallbacks, limits: Limits = (None, None)
    ) -> None:
        self._executor.submit(_run_here, self.app, jobs, callbacks)

    def stop(self) -> None:
        self._executor.shutdown(wait=True)

    def terminate(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# The one process-global: the app and the shared progress marks of a prefork child, set
# by the pool's initializer after the fork, since billiard ships only the job to the child.
_child: dict[str, Any] = {}


def _init_child(app: Taskq, marks: Any) -> None:
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
    _child["soft_handler"] = False


def _raise_soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def _run_in_child(first_mark: int, jobs: Sequence[Job]) -> list[Fate]:
    if not _child["soft_handler"] and hasattr(signal, "SIGUSR1"):
        # billiard installs its own handler after our initializer; replace it once so that
        # tasks can catch taskq.SoftTimeLimitExceeded.
        signal.signal(signal.SIGUSR1, _raise_soft_limit)
        _child["soft_handler"] = True
    marks = _child["marks"]

    def mark(i: int, value: int) -> None:
        marks[first_mark + i] = value

    return run_batch(_child["app"], jobs, mark)


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

    @property
    def batch_size(self) -> int:
        # billiard counts jobs, not tasks, towards max_tasks_per_child, and checks the
        # memory of a child after a job: batch only where neither limit is set.
        o = self.options
        return 1 if o.max_tasks_per_child or o.max_memory_per_child else o.batch_size

    def start(self) -> None:
        o = self.options
        # One row of marks per batch in flight; a batch owns its row until it is reported.
        self._marks = RawArray(ctypes.c_ubyte, self.capacity * self.batch_size)
        self._free_rows: queue.SimpleQueue[int] = queue.SimpleQueue()
        for row in range(self.capacity):
            self._free_rows.put(row)
        self._pool = _Billiard(
            processes=o.concurrency,
            initializer=_init_child,
            initargs=(self.app, self._marks),
            maxtasksperchild=o.max_tasks_per_child,
            max_memory_per_child=o.max_memory_per_child,
            lost_worker_timeout=o.lost_wait,
            enable_timeouts=True,
            threads=True,
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

        ticket = Ticket()
        taken = _ignore if self._handoff is None else self._handoff.taken

        def done(fates: list[Fate]) -> None:
            taken(ticket)
            self._free_rows.put(row)
            callbacks.on_done(fates, None)

        def failed(error: Any) -> None:
            taken(ticket)
            left = lost_fates(marks[first : first + len(jobs)])
            self._free_rows.put(row)
            callbacks.on_done(left, _translate(_unwrap(error)))

        def accepted(_pid: int, _time: float) -> None:
            taken(ticket)  # a child read it: the pipe has that much room again
            if callbacks.on_accepted is not None:
                callbacks.on_accepted()

        if self._handoff is not None:
            self._handoff.expect(ticket)
        self._pool.apply_async(
            _run_in_child,
            (first, list(jobs)),
            callback=done,
            error_callback=failed,
            accept_callback=accepted,
            timeout=limits[0],
            soft_timeout=limits[1],
        )

    def stop(self) -> None:
        self._pool.close()
        self._pool.join()

    def terminate(self) -> None:
        self._pool.terminate()
        self._pool.join()


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


POOLS: dict[str, type[Pool]] = {"prefork": PreforkPool, "threads": ThreadPool, "solo": SoloPool}
