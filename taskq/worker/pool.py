"""Execution pools behind one small interface: threads and solo here, prefork in prefork.py.

A pool runs *batches*: one or more jobs handed over at once and run one after another in
the same process. On prefork this is what makes short tasks cheap: billiard's cost per
job (a result object, the job pickled into a pipe, two messages back) is paid once per
batch instead of once per task. ``apply`` never blocks. Its callback runs on whatever
thread learns how the batch ended (for prefork, mostly the caller of ``poll_results``;
billiard's own threads for a process that died or a time limit; a pool thread; the caller
for solo); the consumer only ever turns it into a message for its own thread.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import states
from .deadlines import Deadlines
from .tracer import Job, Outcome, trace

if TYPE_CHECKING:
    from ..app import Taskq

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Withdrawn:
    """A member that never started because the worker is stopping: it goes back unrun."""


Fate = Outcome | Crash | Lost | Withdrawn


@dataclass(frozen=True)
class BatchCallbacks:
    """How a pool reports on one batch.

    ``on_done(fates, error)``: one fate per job, in order; ``error`` is set when the
    batch ended without a report (its process died, or the hard time limit hit), and
    the fates are then ``Lost``. ``on_accepted``, if given, runs when the batch starts.
    """

    on_done: Callable[[list[Fate], BaseException | None], None]
    on_accepted: Callable[[], None] | None = None
    on_started: Callable[[int], None] | None = None  # the pid of the process running it


@dataclass(frozen=True)
class PoolOptions:
    concurrency: int
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    lost_wait: float = 1.0
    batch_size: int = 1


def run_batch(
    app: Taskq,
    jobs: Sequence[Job],
    mark: Callable[[int, int], None],
    stopping: Callable[[], bool] = lambda: False,
) -> list[Fate]:
    """Run the jobs in order, marking each one's progress; where the batch runs.

    Once ``stopping()`` (a warm stop), the members not started yet are not started:
    their fates say ``Withdrawn`` and the worker gives their messages back.
    """
    fates: list[Fate] = []
    # A member's result is sent before its mark says it finished, but the backend's reply
    # may be read only once the next member ran: a store that failed is known at the end.
    with app.backend.stores_in_flight() as failed:
        for i, job in enumerate(jobs):
            if stopping():
                fates.extend(Withdrawn() for _ in jobs[i:])
                break
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

    def withdraw(self) -> None:  # noqa: B027 - solo runs each batch as it is applied
        """A warm stop begins: what was handed over and has not started will not start.

        A batch not started yet is reported at once, its members ``Withdrawn``; in a
        running batch, the members after the one running are reported ``Withdrawn`` when
        it ends. Either way the report comes through the batch's ``on_done``, once.
        """

    def withdraw_tasks(self, task_ids: set[str]) -> None:  # noqa: B027 - solo runs at once
        """Take back the batches holding any of these tasks that no process started yet;
        their members are reported ``Withdrawn`` (a revoke: they never run)."""

    def terminate_job(self, request: Any, signal_name: str) -> bool:
        """Signal the process running ``request``; False where tasks share this process."""
        return False

    def resize(self, change: int) -> int:
        """Add ``change`` processes (fewer when negative); the number added or removed."""
        raise ValueError(
            f"the {type(self).__name__} cannot change its size (only prefork can): restart "
            "the worker with another -c"
        )

    def info(self) -> dict[str, Any]:
        """Celery's ``stats()["pool"]``."""
        return {
            "implementation": type(self).__name__,
            "max-concurrency": self.limit,
            "processes": [],
            "max-tasks-per-child": self.options.max_tasks_per_child or "N/A",
            "put-guarded-by-semaphore": False,
            "timeouts": [0, 0],
        }

    def stop(self) -> None:  # noqa: B027
        """Wait for running jobs, then release the pool."""

    def terminate(self) -> None:  # noqa: B027
        """Stop now, killing running jobs."""


def _run_here(
    app: Taskq,
    jobs: Sequence[Job],
    callbacks: BatchCallbacks,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Run a batch in the calling thread and report it (solo and threads)."""
    marks = [QUEUED] * len(jobs)
    if callbacks.on_started is not None:
        callbacks.on_started(os.getpid())
    if callbacks.on_accepted is not None:
        callbacks.on_accepted()
    try:
        fates = run_batch(app, jobs, marks.__setitem__, stopping)
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
    """Tasks in threads of the worker process; time limits as threads allow (deadlines.py)."""

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.limit, thread_name_prefix="taskq-task")
        self._deadlines: Deadlines | None = None  # made for the first task with a limit
        self._stopping = threading.Event()
        self._waiting: dict[Future[None], tuple[int, BatchCallbacks]] = {}
        self._ids: dict[Future[None], set[str]] = {}
        self._lock = threading.Lock()

    def apply(
        self, jobs: Sequence[Job], callbacks: BatchCallbacks, limits: Limits = (None, None)
    ) -> None:
        run = functools.partial(_run_here, self.app, jobs, callbacks, self._stopping.is_set)
        if any(limits):
            with self._lock:
                if self._deadlines is None:
                    self._deadlines = Deadlines()
            run = functools.partial(_within, self._deadlines, limits, run)
        future = self._executor.submit(run)
        with self._lock:
            self._waiting[future] = (len(jobs), callbacks)
            self._ids[future] = {job.message.id for job in jobs}
        future.add_done_callback(self._forget)

    def withdraw_tasks(self, task_ids: set[str]) -> None:
        with self._lock:
            waiting = [(f, w) for f, w in self._waiting.items() if self._ids[f] & task_ids]
        for future, (count, callbacks) in waiting:
            if future.cancel():  # only a batch no thread has started
                callbacks.on_done([Withdrawn() for _ in range(count)], None)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._waiting.pop(future, None)
            self._ids.pop(future, None)

    def withdraw(self) -> None:
        self._stopping.set()
        with self._lock:
            waiting = list(self._waiting.items())
        for future, (count, callbacks) in waiting:
            # cancel() succeeds only for a batch no thread has started: the executor
            # decides that atomically, so no batch both runs and comes back.
            if future.cancel():
                callbacks.on_done([Withdrawn() for _ in range(count)], None)

    def stop(self) -> None:
        self._executor.shutdown(wait=True)
        self._close_deadlines()

    def terminate(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._close_deadlines()

    def _close_deadlines(self) -> None:
        if self._deadlines is not None:
            self._deadlines.close()


def _within(deadlines: Deadlines, limits: Limits, run: Callable[[], None]) -> None:
    hard, soft = limits
    with deadlines.limits(soft, hard):
        run()


def signal_number(name: str) -> int:
    """``"SIGTERM"``, ``"TERM"`` or ``"term"`` → 15; ValueError for no such signal."""
    name = name.upper()
    value = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)
    if not isinstance(value, int):
        raise ValueError(f"unknown signal {name!r}")
    return int(value)
