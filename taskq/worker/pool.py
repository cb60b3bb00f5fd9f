"""Execution pools behind one small interface: prefork (billiard), threads and solo.

``apply`` never blocks. Its callbacks run on whatever thread the pool uses (billiard's
result-handler thread, a pool thread, or the caller for solo); the consumer only ever
turns them into messages for its own thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from billiard.exceptions import TimeLimitExceeded as BilliardTimeLimit
from billiard.exceptions import WorkerLostError as BilliardWorkerLost
from billiard.pool import Pool as BilliardPool

from ..exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from .tracer import Job, Outcome, trace

if TYPE_CHECKING:
    from ..app import Taskq

logger = logging.getLogger("taskq.worker")

Limits = tuple[float | None, float | None]  # (hard, soft) seconds


@dataclass(frozen=True)
class JobCallbacks:
    """How a pool reports on one job: started, finished, or failed to run."""

    on_accepted: Callable[[], None]
    on_result: Callable[[Outcome], None]
    on_error: Callable[[BaseException], None]


@dataclass(frozen=True)
class PoolOptions:
    concurrency: int
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    lost_wait: float = 1.0


class Pool(ABC):
    """Runs jobs; reports the start, the outcome, or an error of the run."""

    def __init__(self, app: Taskq, options: PoolOptions):
        self.app = app
        self.options = options

    @property
    def limit(self) -> int:
        return self.options.concurrency

    def start(self) -> None:  # noqa: B027 - solo has nothing to start
        pass

    @abstractmethod
    def apply(self, job: Job, callbacks: JobCallbacks, limits: Limits = (None, None)) -> None: ...

    def stop(self) -> None:  # noqa: B027
        """Wait for running jobs, then release the pool."""

    def terminate(self) -> None:  # noqa: B027
        """Stop now, killing running jobs."""


class SoloPool(Pool):
    """Runs each task inline in the consumer's thread: one at a time, for tests and debugging."""

    def apply(self, job: Job, callbacks: JobCallbacks, limits: Limits = (None, None)) -> None:
        callbacks.on_accepted()
        try:
            outcome = trace(self.app, job)
        except BaseException as exc:  # the tracer itself failed (e.g. backend down)
            callbacks.on_error(exc)
            return
        callbacks.on_result(outcome)

    @property
    def limit(self) -> int:
        return 1


class ThreadPool(Pool):
    """Tasks in threads of the worker process. Time limits are not enforced here."""

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.limit, thread_name_prefix="taskq-task")

    def apply(self, job: Job, callbacks: JobCallbacks, limits: Limits = (None, None)) -> None:
        def run() -> Outcome:
            callbacks.on_accepted()
            return trace(self.app, job)

        def done(future: Future[Outcome]) -> None:
            exc = future.exception()
            if exc is not None:
                callbacks.on_error(exc)
            else:
                callbacks.on_result(future.result())

        self._executor.submit(run).add_done_callback(done)

    def stop(self) -> None:
        self._executor.shutdown(wait=True)

    def terminate(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# The one process-global: the app and node name of a prefork child, set by the pool's
# initializer after the fork, since billiard ships only the job to the child.
_child: dict[str, Any] = {}


def _init_child(app: Taskq) -> None:
    # Inherited clients hold the parent's sockets: drop them (never close them, that would
    # close the parent's connections) and let the child open its own on first use.
    app.forget_clients()
    # Its own process group: a SIGTERM sent to the worker's group (a shell, a supervisor's
    # killpg) then reaches only the parent, which shuts the pool down in order. A child
    # killed by such a signal mid-read would leave the pool's queue lock held forever.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _child["app"] = app
    _child["soft_handler"] = False


def _raise_soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


def _run_in_child(job: Job) -> Outcome:
    if not _child["soft_handler"] and hasattr(signal, "SIGUSR1"):
        # billiard installs its own handler after our initializer; replace it once so that
        # tasks can catch taskq.SoftTimeLimitExceeded.
        signal.signal(signal.SIGUSR1, _raise_soft_limit)
        _child["soft_handler"] = True
    return trace(_child["app"], job)


class PreforkPool(Pool):
    """billiard's process pool: each task in a child process, with time limits."""

    def start(self) -> None:
        o = self.options
        self._pool = BilliardPool(
            processes=o.concurrency,
            initializer=_init_child,
            initargs=(self.app,),
            maxtasksperchild=o.max_tasks_per_child,
            max_memory_per_child=o.max_memory_per_child,
            lost_worker_timeout=o.lost_wait,
            enable_timeouts=True,
            threads=True,
        )

    def apply(self, job: Job, callbacks: JobCallbacks, limits: Limits = (None, None)) -> None:
        def accepted(_pid: int, _time: float) -> None:
            callbacks.on_accepted()

        def failed(error: Any) -> None:
            callbacks.on_error(_translate(_unwrap(error)))

        self._pool.apply_async(
            _run_in_child,
            (job,),
            callback=callbacks.on_result,
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
