"""Batches: how requests are grouped, and how each member of a lost batch is settled."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kombu import Connection

from taskq import Taskq, WorkerLostError, states
from taskq.deadletter import DELIVERIES
from taskq.message import decode_body, parse
from taskq.worker.batch import BATCH_BYTES, BATCH_SECONDS, Runtimes, batch_size, gather, settle
from taskq.worker.pool import (
    FINISHED,
    QUEUED,
    RUNNING,
    Crash,
    Lost,
    PoolOptions,
    SoloPool,
    lost_fates,
    run_batch,
)
from taskq.worker.prefork import PreforkPool
from taskq.worker.redelivery import Redelivery
from taskq.worker.request import AckPolicy, Request
from taskq.worker.tracer import Outcome


@pytest.fixture
def tasks(app: Taskq) -> Taskq:
    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.fail")
    def fail() -> None:
        raise ValueError("no")

    @app.task(name="t.limited", time_limit=5)
    def limited() -> None: ...

    @app.task(name="t.early", acks_late=False)
    def early() -> None: ...

    return app


@pytest.fixture
def conn(tasks: Taskq) -> Iterator[Connection]:
    with Connection("memory://") as connection:
        yield connection


def reserve(app: Taskq, conn: Connection, name: str, *args: Any, **options: Any) -> Request:
    """Send one task and take it back from the broker as a worker would, unacked."""
    app.tasks[name].apply_async(args, **options)
    queue = app.default_queue()
    raw = queue(conn.default_channel).get(no_ack=False)
    assert raw is not None
    message = parse(
        raw.headers, decode_body(raw.body, raw.content_type, None, frozenset({"application/json"}))
    )
    policy = AckPolicy.for_task(app, app.tasks[name])
    return Request(app, message, raw, policy, "w@host", queue, Redelivery(app, "w@host"))


def waiting(app: Taskq, conn: Connection) -> list[Any]:
    """The messages back on the queue, taken off it."""
    queue = app.default_queue()(conn.default_channel)
    found = []
    while (raw := queue.get(no_ack=True)) is not None:
        found.append(raw)
    return found


def test_batches_fill_only_from_a_backlog() -> None:
    assert batch_size(1, 4, 16) == 1  # a lone task never waits for company
    assert batch_size(8, 4, 16) == 2  # a short backlog is spread over every free hand-off
    assert batch_size(40, 4, 16) == 10
    assert batch_size(400, 4, 16) == 16
    assert batch_size(400, 0, 16) == 16
    assert batch_size(5, 4, 1) == 1


def test_gather_revokes_expired_and_batches_only_short_known_tasks(
    tasks: Taskq, conn: Connection
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    runtimes = Runtimes()
    ready = deque(
        [
            reserve(tasks, conn, "t.add", 1, 1),
            reserve(tasks, conn, "t.add", 2, 2),
            reserve(tasks, conn, "t.add", 3, 3, expires=past),
            reserve(tasks, conn, "t.add", 4, 4),
            reserve(tasks, conn, "t.limited"),
            reserve(tasks, conn, "t.early"),
            reserve(tasks, conn, "t.fail"),
            reserve(tasks, conn, "t.add", 5, 5),
        ]
    )
    first, second, expired, fourth, limited, early, fail, last = ready
    assert gather(ready, 16, runtimes) == [first]  # never seen: runs alone, to learn
    runtimes.observe("t.add", 0.0002)
    runtimes.observe("t.limited", 0.0002)
    runtimes.observe("t.early", 0.0002)
    runtimes.observe("t.fail", 2 * BATCH_SECONDS)
    assert gather(ready, 16, runtimes) == [second, fourth]  # a time limit ends the batch
    assert expired.acknowledged
    assert tasks.AsyncResult(expired.id).state == states.REVOKED
    assert gather(ready, 16, runtimes) == [limited]
    assert gather(ready, 16, runtimes) == [early]
    assert gather(ready, 16, runtimes) == [fail]  # too long to share
    assert gather(ready, 16, runtimes) == [last]
    assert not ready


def test_a_batch_holds_a_bounded_amount_of_work(tasks: Taskq, conn: Connection) -> None:
    runtimes = Runtimes()
    runtimes.observe("t.add", BATCH_SECONDS * 0.3)
    ready = deque(reserve(tasks, conn, "t.add", i, i) for i in range(10))
    assert len(gather(ready, 16, runtimes)) == 3  # a fourth would exceed BATCH_SECONDS
    assert len(gather(ready, 2, runtimes)) == 2


def test_a_big_message_runs_alone_however_short_its_task(tasks: Taskq, conn: Connection) -> None:
    runtimes = Runtimes()
    runtimes.observe("t.add", 0.0001)
    ready = deque(
        [
            reserve(tasks, conn, "t.add", 1, 1),
            reserve(tasks, conn, "t.add", "x" * BATCH_BYTES, ""),
            reserve(tasks, conn, "t.add", 2, 2),
        ]
    )
    small, big, last = ready
    assert gather(ready, 16, runtimes) == [small]
    assert gather(ready, 16, runtimes) == [big]
    assert gather(ready, 16, runtimes) == [last]


def test_run_batch_marks_each_member(tasks: Taskq, conn: Connection) -> None:
    jobs = [reserve(tasks, conn, "t.add", 1, 2).job(), reserve(tasks, conn, "t.fail").job()]
    marks = [QUEUED, QUEUED]
    fates = run_batch(tasks, jobs, marks.__setitem__)
    assert [f.state for f in fates if isinstance(f, Outcome)] == [states.SUCCESS, states.FAILURE]
    assert lost_fates(marks) == [Lost(FINISHED, states.SUCCESS), Lost(FINISHED, states.FAILURE)]
    assert lost_fates([QUEUED, RUNNING, FINISHED]) == [Lost(QUEUED), Lost(RUNNING), Lost(FINISHED)]


def test_a_lost_batch_charges_only_the_member_that_was_running(
    tasks: Taskq, conn: Connection
) -> None:
    done, failed, running, unknown, queued = (reserve(tasks, conn, "t.add", i, i) for i in range(5))
    lost = WorkerLostError("the process exited")
    assert settle(done, Lost(FINISHED, states.SUCCESS), lost) is False
    assert settle(failed, Lost(FINISHED, states.FAILURE), lost) is False
    assert settle(running, Lost(RUNNING), lost) is False
    assert settle(unknown, Lost(FINISHED), lost) is False
    assert settle(queued, Lost(QUEUED), lost) is True  # runs again here, not charged
    assert not queued.acknowledged
    # Finished ones are acked as their outcome asked (a failure acks by default); the
    # running one and the one whose outcome was lost go back with one delivery counted.
    assert done.acknowledged and failed.acknowledged
    back = {raw.headers["id"]: raw.headers for raw in waiting(tasks, conn)}
    assert set(back) == {running.id, unknown.id}
    assert {h[DELIVERIES] for h in back.values()} == {1}


def test_a_queued_member_of_a_batch_that_failed_otherwise_is_failed(
    tasks: Taskq, conn: Connection
) -> None:
    request = reserve(tasks, conn, "t.add", 1, 1)
    assert settle(request, Lost(QUEUED), RuntimeError("cannot pickle")) is False
    assert request.acknowledged
    assert tasks.AsyncResult(request.id).state == states.FAILURE


def test_reported_fates_settle_as_before(tasks: Taskq, conn: Connection) -> None:
    ok, crashed = reserve(tasks, conn, "t.add", 1, 1), reserve(tasks, conn, "t.add", 2, 2)
    assert settle(ok, Outcome(states.SUCCESS), None) is False
    assert settle(crashed, Crash(ConnectionError("backend down")), None) is False
    assert ok.acknowledged and crashed.acknowledged
    assert waiting(tasks, conn) == []


@pytest.mark.parametrize(
    ("options", "size"),
    [
        ({}, 16),
        ({"max_tasks_per_child": 5}, 1),  # billiard would count a batch as one task
        ({"max_memory_per_child": 100_000}, 1),  # and check memory only after a batch
    ],
)
def test_per_child_limits_turn_batching_off(
    tasks: Taskq, options: dict[str, int], size: int
) -> None:
    pool = PreforkPool(tasks, PoolOptions(concurrency=2, batch_size=16, **options))
    assert pool.batch_size == size
    assert SoloPool(tasks, PoolOptions(concurrency=1, batch_size=16)).batch_size == 1
