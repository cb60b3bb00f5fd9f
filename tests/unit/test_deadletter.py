"""Dead letters and delivery counting, on kombu's in-memory broker with an in-process worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kombu import Connection, Producer

from taskq import DeadLettered, MessageTooLarge, Reject, Taskq, states
from taskq.deadletter import DEAD, DELIVERIES, DeadLetters

Start = Callable[..., Any]


def test_a_task_that_keeps_asking_for_requeue_is_buried_after_max_deliveries(
    app: Taskq, run_worker: Start
) -> None:
    runs: list[int] = []

    @app.task(bind=True, max_deliveries=3)
    def stubborn(self: Any) -> None:
        runs.append(self.request.headers.get(DELIVERIES, 0))
        raise Reject("not now", requeue=True)

    run_worker()
    result = stubborn.delay()
    with pytest.raises(DeadLettered, match="delivered 3 times"):
        result.get(timeout=10)
    assert runs == [0, 1, 2]  # each copy carried the count of the deliveries before it
    (letter,) = DeadLetters(app).list()
    assert (letter.id, letter.task, letter.deliveries) == (result.id, stubborn.name, 3)
    assert "rejected with requeue: not now" in letter.reason


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
    with pytest.raises(Exception, match=r"later\.defined"):
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
        with pytest.raises(Exception, match=r"nobody\.knows"):
            app.AsyncResult(task_id).get(timeout=10)
    worker.stop()
    letters = DeadLetters(app)
    assert sorted(letter.id or "" for letter in letters.list()) == sorted(ids)
    assert letters.get(ids[1]) is not None and letters.get("no-such-id") is None
    assert len(letters.list()) == 3  # reading keeps them
    assert letters.requeue(["no-such-id"]) == 0
    assert letters.requeue() == 3
    assert letters.list() == []
    with Connection("memory://") as conn:
        queue = app.default_queue()(conn.default_channel)
        assert queue.queue_declare(passive=True).message_count == 3
    for task_id in ids:
        app.backend.forget(task_id)
    run_worker()
    # Back in their queue, unknown again: buried again, then purged.
    for task_id in ids:
        with pytest.raises(Exception, match=r"nobody\.knows"):
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
    with Connection("memory://") as conn:
        Producer(conn.default_channel).publish(
            [["y" * 2000], {}, {}],
            routing_key=app.conf.task_default_queue,
            headers={"task": echo.name, "id": "too-big", "lang": "py"},
            serializer="json",
            declare=[app.default_queue()],
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
    with Connection("memory://") as conn:
        Producer(conn.default_channel).publish(
            b"not gzip at all",
            routing_key=app.conf.task_default_queue,
            headers={"task": echo.name, "id": "bad-gzip", "compression": "application/x-gzip"},
            content_type="application/json",
            content_encoding="utf-8",
            declare=[app.default_queue()],
        )
    assert echo.delay("next").get(timeout=10) == "next"  # the worker kept consuming
    assert app.AsyncResult("bad-gzip").get(timeout=10, propagate=False) is not None
    (letter,) = DeadLetters(app).list()
    assert letter.id == "bad-gzip" and "could not be decompressed" in letter.reason
    assert letter.body == b"not gzip at all"
    assert letter.headers[DEAD]["compression"] == "application/x-gzip"
