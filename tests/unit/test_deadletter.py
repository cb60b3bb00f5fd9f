"""Dead letters and delivery counting, on kombu's in-memory broker with an in-process worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from taskq import (
    ConfigurationError,
    DeadLettered,
    MessageTooLarge,
    NotRegistered,
    Reject,
    Taskq,
    states,
)
from taskq.deadletter import DEAD, DELIVERIES, DeadLetters
from tests.integration.helpers import wait_for
from tests.unit.memory import publish_raw, queue_size

Start = Callable[..., Any]


def test_a_task_that_keeps_asking_for_requeue_is_buried_after_max_deliveries(
    app: Taskq, run_worker: Start
) -> None:
    runs: list[int] = []

    @app.task(bind=True, max_deliveries=3)
    def stubborn(self: Any) -> None:
        runs.append(self.request.headers.get(DELIVERIES, 0))
        raise Reject("not now", requeue=True)

    worker = run_worker()
    result = stubborn.delay()
    with pytest.raises(DeadLettered, match="delivered 3 times"):
        result.get(timeout=10)
    assert runs == [0, 1, 2]  # each copy carried the count of the deliveries before it
    (letter,) = DeadLetters(app).list()
    assert (letter.id, letter.task, letter.deliveries) == (result.id, stubborn.name, 3)
    assert "rejected with requeue: not now" in letter.reason
    assert letter.worker == worker.worker.hostname  # the node that buried it
    # Requeued, it starts again with a fresh count: three more tries, then buried again.
    app.backend.forget(result.id)
    assert DeadLetters(app).requeue([result.id]) == 1
    with pytest.raises(DeadLettered, match="delivered 3 times"):
        app.AsyncResult(result.id).get(timeout=10)
    assert runs == [0, 1, 2, 0, 1, 2]


def test_failures_count_as_deliveries_when_they_are_not_acked(
    app: Taskq, run_worker: Start
) -> None:
    # task_acks_on_failure_or_timeout off: a failed task goes back instead of being acked,
    # which would loop forever without the delivery limit.
    app.conf.task_acks_on_failure_or_timeout = False
    app.conf.task_max_deliveries = 2
    runs: list[int] = []

    @app.task(bind=True)
    def broken(self: Any) -> None:
        runs.append(self.request.headers.get(DELIVERIES, 0))
        raise ValueError("always")

    run_worker()
    result = broken.delay()
    # Each failure is stored as it happens; the last word is the dead letter's.
    wait_for(lambda: DeadLetters(app).list(), 10, "the failing task to be dead-lettered")
    with pytest.raises(DeadLettered, match="the task failed; delivered 2 times"):
        app.AsyncResult(result.id).get(timeout=10)
    assert runs == [0, 1]


def test_no_delivery_limit_when_the_setting_is_none(app: Taskq, run_worker: Start) -> None:
    app.conf.task_max_deliveries = None
    runs: list[int] = []

    @app.task(bind=True)
    def stubborn(self: Any) -> int:
        runs.append(self.request.headers.get(DELIVERIES, 0))
        if len(runs) < 8:
            raise Reject("again", requeue=True)
        return len(runs)

    run_worker()
    assert stubborn.delay().get(timeout=10) == 8
    assert runs == list(range(8))
    assert DeadLetters(app).list() == []


def test_a_task_max_deliveries_below_one_is_refused(app: Taskq) -> None:
    with pytest.raises(ConfigurationError, match="max_deliveries"):

        @app.task(max_deliveries=0)
        def never() -> None: ...


def test_wrong_arguments_fail_and_are_buried_but_a_type_error_inside_is_a_failure(
    app: Taskq, run_worker: Start
) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def broken() -> None:
        raise TypeError("inside the task")

    run_worker()
    # A client that does not know the task cannot check the arguments before sending.
    client = Taskq("client", broker="memory://", backend="memory://")
    client.conf.task_default_queue = app.conf.task_default_queue
    bad = app.AsyncResult(client.send_task(add.name, args=(1,)).id)
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        bad.get(timeout=10)
    inner = broken.delay()
    with pytest.raises(TypeError, match="inside the task"):
        inner.get(timeout=10)
    letters = DeadLetters(app).list()
    assert [letter.id for letter in letters] == [bad.id]
    assert letters[0].reason.startswith("arguments do not match the task")


def test_unknown_task_is_kept_and_requeued_once_a_worker_knows_it(
    app: Taskq, run_worker: Start
) -> None:
    result = app.send_task("later.defined", args=(2,))
    worker = run_worker()
    with pytest.raises(NotRegistered, match=r"later\.defined"):
        result.get(timeout=10)
    worker.stop()
    (letter,) = DeadLetters(app).list()
    assert letter.reason.startswith("NotRegistered")

    @app.task(name="later.defined")
    def double(x: int) -> int:
        return x * 2

    assert DeadLetters(app).requeue([result.id]) == 1
    assert DeadLetters(app).list() == []
    app.backend.forget(result.id)
    run_worker()
    assert app.AsyncResult(result.id).get(timeout=10) == 4


def test_requeue_all_purge_and_unknown_ids(app: Taskq, run_worker: Start) -> None:
    ids = [app.send_task("nobody.knows").id for _ in range(3)]
    worker = run_worker()
    for task_id in ids:
        with pytest.raises(NotRegistered, match=r"nobody\.knows"):
            app.AsyncResult(task_id).get(timeout=10)
    worker.stop()
    letters = DeadLetters(app)
    assert sorted(letter.id or "" for letter in letters.list()) == sorted(ids)
    assert letters.get(ids[1]) is not None and letters.get("no-such-id") is None
    assert len(letters.list()) == 3  # reading keeps them
    assert letters.requeue(["no-such-id"]) == 0
    assert letters.requeue() == 3
    assert letters.list() == []
    assert queue_size(app) == 3
    for task_id in ids:
        app.backend.forget(task_id)
    run_worker()
    # Back in their queue, unknown again: buried again, then purged.
    for task_id in ids:
        with pytest.raises(NotRegistered, match=r"nobody\.knows"):
            app.AsyncResult(task_id).get(timeout=10)
    assert letters.purge() == 3
    assert letters.list() == []


def test_message_size_limit_on_both_sides(app: Taskq, run_worker: Start) -> None:
    app.conf.task_max_message_size = 1000

    @app.task
    def echo(text: str) -> int:
        return len(text)

    with pytest.raises(MessageTooLarge, match="over task_max_message_size"):
        echo.delay("x" * 2000)
    run_worker()
    publish_raw(
        app, [["y" * 2000], {}, {}], {"task": echo.name, "id": "too-big"}, serializer="json"
    )
    assert echo.delay("small").get(timeout=10) == 5
    result = app.AsyncResult("too-big")
    assert result.get(timeout=10, propagate=False) is not None
    assert result.state == states.FAILURE
    (letter,) = DeadLetters(app).list()
    assert letter.id == "too-big" and "over task_max_message_size (1000)" in letter.reason
    assert len(letter.body) > 2000


def test_eta_beyond_the_horizon_is_returned_to_the_queue_until_due(
    app: Taskq, run_worker: Start, caplog: pytest.LogCaptureFixture
) -> None:
    # The memory broker cannot park: the worker holds the task only up to the horizon,
    # then gives it back (not counted as a delivery), until it is due.
    app.conf.worker_eta_horizon = 0.3
    runs: list[int] = []

    @app.task(bind=True)
    def later(self: Any) -> int:
        runs.append(self.request.headers.get(DELIVERIES, 0))
        return 7

    run_worker()
    with caplog.at_level("DEBUG", logger="taskq.worker"):
        assert later.apply_async(countdown=1.2).get(timeout=10) == 7
    assert runs == [0]
    returns = [r for r in caplog.messages if r.startswith("Returned a message to")]
    assert len(returns) >= 2  # held 0.3 s at a time, 1.2 s ahead
    assert DeadLetters(app).list() == []


def test_a_body_that_does_not_decompress_is_buried_not_lost(app: Taskq, run_worker: Start) -> None:
    @app.task
    def echo(text: str) -> str:
        return text

    run_worker()
    publish_raw(
        app, b"not gzip at all", {"task": echo.name, "id": "bad-gzip", "compression": "gzip"}
    )
    assert echo.delay("next").get(timeout=10) == "next"  # the worker kept consuming
    assert app.AsyncResult("bad-gzip").get(timeout=10, propagate=False) is not None
    (letter,) = DeadLetters(app).list()
    assert letter.id == "bad-gzip" and "could not be decompressed" in letter.reason
    assert letter.body == b"not gzip at all"
    assert letter.headers[DEAD]["compression"] == "gzip"
