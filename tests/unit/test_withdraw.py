"""A warm stop withdraws what no process has started: exactly one side wins each batch."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from taskq import Taskq
from taskq.message import TaskMessage
from taskq.worker.pool import BatchCallbacks, Fate, PoolOptions, ThreadPool, Withdrawn
from taskq.worker.prefork import Claims, PreforkPool
from taskq.worker.tracer import Job


def test_a_claimed_batch_cannot_be_withdrawn_and_a_withdrawn_one_cannot_start() -> None:
    claims = Claims(2)
    claims.queue(0)
    claims.queue(1)
    assert claims.start(0) and not claims.withdraw(0)  # the process got there first
    assert claims.withdraw(1) and not claims.start(1)  # the stop got there first
    claims.queue(1)  # the row is reused for a new batch: open again
    assert claims.start(1)
    claims.close()


def test_a_process_killed_holding_a_claim_lock_does_not_block_the_worker() -> None:
    claims = Claims(1)
    claims.queue(0)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: take the row's lock, say so, and wait to be killed
        try:
            with claims._locked(0):
                os.write(write, b"!")
                time.sleep(60)
        finally:
            os._exit(1)
    os.read(read, 1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    done = threading.Event()
    threading.Thread(target=lambda: (claims.withdraw(0), done.set()), daemon=True).start()
    assert done.wait(10), "the lock of a dead process was never released"
    claims.close()


def test_threads_pool_withdraws_waiting_batches_at_once_and_the_rest_of_a_running_one() -> None:
    app = Taskq("t", broker="memory://", backend="memory://")
    started, release = threading.Event(), threading.Event()

    @app.task(name="t.block")
    def block() -> str:
        started.set()
        release.wait(10)
        return "ran"

    @app.task(name="t.quick")
    def quick() -> str:
        return "ran"

    reports: list[tuple[str, list[Fate]]] = []

    def report(name: str) -> BatchCallbacks:
        return BatchCallbacks(lambda fates, error: reports.append((name, fates)))

    def job(task: str) -> Job:
        return Job(TaskMessage(f"{task}-{time.monotonic_ns()}", task))

    pool = ThreadPool(app, PoolOptions(concurrency=1))
    pool.start()
    pool.apply([job("t.block"), job("t.quick")], report("running"))
    assert started.wait(10)
    pool.apply([job("t.quick"), job("t.quick")], report("waiting"))
    pool.withdraw()
    assert reports == [("waiting", [Withdrawn(), Withdrawn()])]  # at once, unrun
    release.set()
    pool.stop()
    name, fates = reports[1]
    assert name == "running" and [type(f).__name__ for f in fates] == ["Outcome", "Withdrawn"]
    app.close()


def test_prefork_withdraws_a_waiting_batch_and_drops_its_late_report(tmp_path: Path) -> None:
    app = Taskq("t", broker="memory://", backend="memory://")
    gate = tmp_path / "go"

    @app.task(name="t.wait_for_file")
    def wait_for_file(path: str) -> str:
        Path(path + ".started").touch()
        deadline = time.monotonic() + 20
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return "ran"

    reports: list[tuple[str, list[Fate]]] = []
    done = threading.Condition()

    def report(name: str) -> BatchCallbacks:
        def on_done(fates: list[Fate], error: BaseException | None) -> None:
            with done:
                reports.append((name, fates))
                done.notify_all()

        return BatchCallbacks(on_done)

    pool = PreforkPool(app, PoolOptions(concurrency=1))
    pool.start()
    try:
        running = Job(TaskMessage("running-1", "t.wait_for_file", (str(gate),)))
        waiting = Job(TaskMessage("waiting-1", "t.wait_for_file", (str(gate),)))
        pool.apply([running], report("running"))
        pool.apply([waiting], report("waiting"))
        deadline = time.monotonic() + 30
        while not (tmp_path / "go.started").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        pool.withdraw()  # the one process is busy: the waiting batch cannot have started
        assert reports == [("waiting", [Withdrawn()])]
        gate.touch()
        deadline = time.monotonic() + 30
        with done:
            while len(reports) < 2 and time.monotonic() < deadline:
                pool.poll_results()
                done.wait(0.05)
        # The process then reads the withdrawn batch, skips it, and its report is dropped.
        assert [name for name, _ in reports] == ["waiting", "running"]
        assert type(reports[1][1][0]).__name__ == "Outcome"
    finally:
        pool.stop()
        app.close()
