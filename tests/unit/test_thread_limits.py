"""Time limits on `-P threads`: an exception raised in the task's thread (worker/deadlines.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from taskq import SoftTimeLimitExceeded, Taskq, TimeLimitExceeded, states
from taskq.worker.deadlines import Deadlines


def busy(stop: threading.Event, seconds: float = 30.0) -> int:
    """Python code running (not a C call): where a thread sees a limit at once."""
    deadline, spins = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and not stop.is_set():
        spins += 1
    return spins


def test_soft_and_hard_limits_reach_the_tasks_thread(
    app: Taskq, run_worker: Callable[..., Any]
) -> None:
    never = threading.Event()

    @app.task(soft_time_limit=0.2)
    def soft() -> int:
        return busy(never)

    @app.task(soft_time_limit=0.2)
    def cleans_up() -> str:
        try:
            busy(never)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "not stopped"

    @app.task(time_limit=0.2)
    def hard() -> int:
        return busy(never)

    run_worker("threads", concurrency=2)
    with pytest.raises(SoftTimeLimitExceeded):
        soft.delay().get(timeout=30)
    assert cleans_up.delay().get(timeout=30) == "cleaned up"
    failed = hard.delay()
    with pytest.raises(TimeLimitExceeded):
        failed.get(timeout=30)
    assert failed.state == states.FAILURE


def test_a_limit_never_reaches_the_next_task_in_the_thread(
    app: Taskq, run_worker: Callable[..., Any]
) -> None:
    never = threading.Event()

    @app.task(soft_time_limit=0.5, time_limit=0.6)
    def quick() -> str:
        return "quick"

    @app.task
    def long_after() -> int:
        return busy(never, seconds=1.5)  # runs past where quick's limits would have fallen

    run_worker("threads", concurrency=1)  # one thread: the second task runs where the first did
    assert quick.delay().get(timeout=30) == "quick"
    assert long_after.delay().get(timeout=30) > 0


def test_deadlines_forget_tasks_that_ended() -> None:
    deadlines = Deadlines()
    try:
        for _ in range(200):
            with deadlines.limits(3600, 3600):
                pass
        assert len(deadlines._heap) <= 64 and not deadlines._running
    finally:
        deadlines.close()
