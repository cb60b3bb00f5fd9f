"""The hand-off writes jobs straight into billiard's pipe, and never blocks doing it."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator
from typing import Any

import billiard
import pytest
from billiard.pool import Pool as BilliardPool

from taskq import Taskq, states
from taskq.message import TaskMessage
from taskq.worker.handoff import HandOff, Ticket
from taskq.worker.pool import BatchCallbacks, PoolOptions
from taskq.worker.prefork import PreforkPool
from taskq.worker.tracer import Job

# Inherited by the children at fork: a job that waits on it keeps its child busy.
GATE = billiard.get_context().Event()


def echo(value: Any) -> Any:
    return value


def wait_at_gate() -> str:
    GATE.wait(60)
    return "through"


@pytest.fixture
def pool() -> Iterator[BilliardPool]:
    GATE.clear()
    pool = BilliardPool(processes=1, threads=True)
    yield pool
    GATE.set()
    pool.terminate()
    pool.join()


def send(pool: BilliardPool, handoff: HandOff, fn: Any, *args: Any) -> Any:
    """apply_async as taskq's prefork pool calls it: a ticket per job, released on accept."""
    ticket = Ticket()
    handoff.expect(ticket)
    return pool.apply_async(
        fn,
        args,
        callback=lambda _value: handoff.taken(ticket),
        error_callback=lambda _error: handoff.taken(ticket),
        accept_callback=lambda _pid, _time: handoff.taken(ticket),
    )


def test_jobs_of_every_size_arrive_whole_whichever_way_they_went(pool: BilliardPool) -> None:
    handoff = HandOff.install(pool)
    assert handoff is not None
    # Every seventh job is too big to write without risking a block: it and whatever
    # follows it while it waits go through billiard's thread, the rest straight in.
    sent = [(i, "x" * (200_000 if i % 7 == 6 else 100)) for i in range(200)]
    results = []
    for value in sent:
        results.append(send(pool, handoff, echo, value))
        if len(value[1]) > 100:
            results[-1].wait(30)  # let it through, so the next ones may go straight in
    assert [r.get(30) for r in results] == sent
    assert 0 < handoff.direct < len(sent)
    # Every job was read and reported: nothing is still counted against the pipe.
    assert handoff.held == (0, 0)


def test_a_full_pipe_never_blocks_the_sender(pool: BilliardPool) -> None:
    handoff = HandOff.install(pool)
    assert handoff is not None
    busy = send(pool, handoff, wait_at_gate)  # the only child is now busy until the gate
    # Far more than a pipe holds: jobs of 10 KB until the direct way is full, then one of
    # 200 KB that billiard's thread writes until the pipe is full and it blocks there,
    # then small ones that must not be written past it.
    sent = [(i, "y" * 10_000) for i in range(10)] + [(10, "z" * 200_000)]
    sent += [(i, "s") for i in range(11, 31)]
    results: list[Any] = []
    direct: list[int] = []

    def send_all() -> None:
        for value in sent:
            results.append(send(pool, handoff, echo, value))
            if value[0] == 10:
                direct.append(handoff.direct)

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    sender.join(30)  # liveness, not speed: a blocked write would never return
    assert not sender.is_alive(), "apply_async blocked on the children's pipe"
    assert 0 < handoff.direct < 10
    assert direct == [handoff.direct], "a job went straight in while the thread held one"
    GATE.set()
    assert busy.get(30) == "through"
    assert [r.get(30) for r in results] == sent
    assert handoff.held == (0, 0)


def test_the_prefork_pool_hands_its_batches_over_directly(app: Taskq) -> None:
    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    pool = PreforkPool(app, PoolOptions(concurrency=1))
    pool.start()
    try:
        assert pool._handoff is not None
        done = threading.Event()
        reports: list[Any] = []

        def on_done(fates: list[Any], error: BaseException | None) -> None:
            reports.append((fates, error))
            done.set()

        pool.apply([Job(TaskMessage(id="a1", task="t.add", args=(2, 3)))], BatchCallbacks(on_done))
        # The pool's reports are read by whoever polls them (the worker's loop): poll here.
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            select.select([pool.result_fd], [], [], 0.1)
            pool.poll_results()
        assert done.is_set()
        [(fates, error)] = reports
        assert error is None and fates[0].state == states.SUCCESS
        assert pool._handoff.direct == 1 and pool._handoff.held == (0, 0)
    finally:
        pool.stop()
