"""The whole path in one process: memory:// broker, memory backend, a real Worker thread."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskq import (
    Ignore,
    MaxRetriesExceededError,
    NotRegistered,
    Reject,
    RemoteError,
    Taskq,
    TaskRevokedError,
    states,
)
from taskq.deadletter import DeadLetters
from taskq.exceptions import MalformedMessage
from tests.integration.helpers import wait_for
from tests.unit.memory import publish_raw, queue_size

Start = Callable[..., Any]


class CustomError(Exception):
    pass


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_round_trip_and_failure(app: Taskq, run_worker: Start, pool: str) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def fail() -> None:
        raise CustomError("boom", 42)

    run_worker(pool, concurrency=2)
    result = add.delay(2, 2)
    assert result.get(timeout=10) == 4
    assert result.state == states.SUCCESS and result.successful() and result.ready()
    bad = fail.delay()
    with pytest.raises(CustomError) as info:
        bad.get(timeout=10)
    assert info.value.args == ("boom", 42)
    assert bad.failed() and "CustomError" in (bad.traceback or "")
    assert isinstance(bad.get(timeout=1, propagate=False), CustomError)


def test_retry_until_success_and_until_exhausted(app: Taskq, run_worker: Start) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=3, default_retry_delay=0.01)
    def flaky(self: Any) -> int:
        attempts.append(self.request.retries)
        if self.request.retries < 2:
            raise self.retry(exc=OSError("down"))
        return self.request.retries

    @app.task(bind=True, max_retries=2, default_retry_delay=0.01)
    def hopeless(self: Any) -> None:
        raise self.retry(exc=OSError("still down"))

    @app.task(bind=True, max_retries=1)
    def no_exc(self: Any) -> None:
        raise self.retry(countdown=0.01)

    run_worker()
    assert flaky.delay().get(timeout=10) == 2
    assert attempts == [0, 1, 2]
    with pytest.raises(OSError, match="still down"):
        hopeless.delay().get(timeout=10)
    with pytest.raises(MaxRetriesExceededError):
        no_exc.delay().get(timeout=10)


def test_autoretry_with_backoff(app: Taskq, run_worker: Start) -> None:
    calls: list[int] = []

    @app.task(
        bind=True, autoretry_for=(KeyError,), retry_backoff=0.01, retry_jitter=False, max_retries=4
    )
    def lookup(self: Any) -> int:
        calls.append(self.request.retries)
        if len(calls) < 3:
            raise KeyError("missing")
        return len(calls)

    assert lookup.backoff_countdown(3) == pytest.approx(0.08)
    run_worker()
    assert lookup.delay().get(timeout=10) == 3
    assert calls == [0, 1, 2]


def test_countdown_eta_and_expires(app: Taskq, run_worker: Start) -> None:
    @app.task
    def stamp() -> str:
        return datetime.now(UTC).isoformat()

    run_worker()
    sent = datetime.now(UTC)
    ran = datetime.fromisoformat(stamp.apply_async(countdown=0.3).get(timeout=10))
    assert ran >= sent + timedelta(seconds=0.3)
    eta = datetime.now(UTC) + timedelta(seconds=0.2)
    assert datetime.fromisoformat(stamp.apply_async(eta=eta).get(timeout=10)) >= eta
    expired = stamp.apply_async(expires=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(TaskRevokedError, match="expired"):
        expired.get(timeout=10)
    assert expired.state == states.REVOKED
    # Expires before its ETA: revoked when the ETA comes, never run.
    late = stamp.apply_async(countdown=0.2, expires=0.1)
    with pytest.raises(TaskRevokedError):
        late.get(timeout=10)


def test_unknown_task_is_failed_and_the_worker_goes_on(app: Taskq, run_worker: Start) -> None:
    @app.task
    def ok() -> str:
        return "ok"

    run_worker()
    unknown = app.send_task("no.such.task", (1,))
    with pytest.raises(NotRegistered, match=r"no\.such\.task"):
        unknown.get(timeout=10)
    assert ok.delay().get(timeout=10) == "ok"


@pytest.mark.parametrize(
    ("body", "headers", "content_type", "recoverable"),
    [
        ("{broken json", {"task": "x.ok", "id": "m-json"}, "application/json", True),
        ([[1], {}], {"task": "x.ok", "id": "m-shape"}, None, True),
        ([[], {}, {}], {"task": "x.ok"}, None, False),  # no id
        ([[], {}, {}], {"id": "m-noname"}, None, True),  # no task name
        ("cGlja2xl", {"task": "x.ok", "id": "m-pickle"}, "application/x-python-serialize", True),
        ([[], {}, {}], {"task": "x.ok", "id": "m-eta", "eta": 12}, None, True),
    ],
)
def test_malformed_messages_are_failed_and_dead_lettered(
    app: Taskq,
    run_worker: Start,
    body: Any,
    headers: dict[str, Any],
    content_type: str | None,
    recoverable: bool,
) -> None:
    @app.task(name="x.ok")
    def ok() -> str:
        return "ok"

    run_worker()
    if content_type is None:
        publish_raw(app, body, headers, serializer="json")
    else:
        publish_raw(app, body, headers, content_type=content_type)
    assert ok.delay().get(timeout=10) == "ok"  # the worker kept consuming
    if recoverable:
        result = app.AsyncResult(headers["id"])
        with pytest.raises(MalformedMessage):
            result.get(timeout=10)
    # Acked: nothing is left in the queue to loop on; the message is kept as a dead letter.
    assert queue_size(app) == 0
    (letter,) = DeadLetters(app).list()
    assert letter.queue == app.conf.task_default_queue
    if recoverable:
        assert letter.id == headers["id"]
    if content_type is not None:
        assert (letter.body, letter.content_type) == (body.encode(), content_type)


def test_protocol_1_message_runs(app: Taskq, run_worker: Start) -> None:
    @app.task(name="x.add")
    def add(x: int, y: int) -> int:
        return x + y

    run_worker()
    publish_raw(
        app, {"task": "x.add", "id": "v1-id", "args": [2, 5], "kwargs": {}}, {}, serializer="json"
    )
    assert app.AsyncResult("v1-id").get(timeout=10) == 7


def test_link_and_link_error(app: Taskq, run_worker: Start) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task
    def fail() -> None:
        raise ValueError("nope")

    @app.task
    def on_error(task_id: str) -> str:
        return f"handled {task_id}"

    run_worker()
    callback = mul.s(10).set(task_id="cb-1")
    first = add.apply_async((1, 2), link=callback)
    assert first.get(timeout=10) == 3
    callback_result = app.AsyncResult("cb-1")
    assert callback_result.get(timeout=10) == 30
    failing = fail.apply_async(link_error=on_error.s().set(task_id="eb-1"))
    with pytest.raises(ValueError):
        failing.get(timeout=10)
    assert app.AsyncResult("eb-1").get(timeout=10) == f"handled {failing.id}"
    # A linked task records the task that sent it as its parent.
    meta = app.backend.get_task_meta("cb-1")
    assert meta["parent_id"] == first.id


def test_ignore_reject_and_ignored_results(app: Taskq, run_worker: Start) -> None:
    @app.task
    def ignored() -> None:
        raise Ignore()

    @app.task
    def rejected() -> None:
        raise Reject("bad input", requeue=False)

    @app.task(ignore_result=True)
    def quiet() -> int:
        return 1

    @app.task
    def ok() -> int:
        return 2

    run_worker()
    i, r, q = ignored.delay(), rejected.delay(), quiet.delay()
    assert ok.delay().get(timeout=10) == 2  # the worker has handled everything before it
    assert (i.state, r.state, q.state) == (states.PENDING,) * 3
    # Reject without requeue keeps the message, as a dead letter with the task's reason.
    (letter,) = DeadLetters(app).list()
    assert (letter.id, letter.deliveries) == (r.id, 0)
    assert letter.reason == "rejected by the task: bad input"


def test_update_state_and_extended_results(app: Taskq, run_worker: Start) -> None:
    app.conf.result_extended = True
    seen: list[str] = []

    @app.task(bind=True)
    def progress(self: Any, n: int) -> int:
        self.update_state(state="PROGRESS", meta={"done": n // 2})
        seen.append(self.AsyncResult(self.request.id).state)
        return n

    run_worker()
    result = progress.delay(4)
    assert result.get(timeout=10) == 4
    assert seen == ["PROGRESS"]
    meta = app.backend.get_task_meta(result.id)
    assert meta["name"] == progress.name and meta["args"] == [4] and meta["retries"] == 0
    assert meta["date_done"] is not None


def test_rate_limit_spaces_runs(app: Taskq, run_worker: Start) -> None:
    times: list[datetime] = []

    @app.task(rate_limit="20/s")
    def tick() -> None:
        times.append(datetime.now(UTC))

    run_worker()
    results = [tick.delay() for _ in range(5)]
    for r in results:
        r.get(timeout=10)
    # A token every 50 ms: five runs cannot fit in less than four intervals. This is a
    # lower bound only, so a slow machine cannot make it fail; only a missing limit can.
    assert (times[-1] - times[0]).total_seconds() >= 4 * 0.05 * 0.9


def test_unimportable_exception_becomes_remote_error_without_importing(
    app: Taskq, run_worker: Start
) -> None:
    from taskq.backends import decode_exception

    exc = decode_exception(
        {"exc_type": "Evil", "exc_module": "evil_module_never_imported", "exc_message": ["x"]},
        "Traceback...",
    )
    assert isinstance(exc, RemoteError)
    assert "evil_module_never_imported" not in sys.modules
    assert "evil_module_never_imported.Evil: x" in str(exc)
    from taskq import SecurityError

    with pytest.raises(SecurityError):
        decode_exception({"exc_type": "path", "exc_module": "os", "exc_message": []})


def test_compressed_messages_round_trip(app: Taskq, run_worker: Start) -> None:
    app.conf.task_compression = "gzip"

    @app.task
    def echo(text: str) -> str:
        return text

    run_worker()
    payload = "x" * 10_000
    assert echo.delay(payload).get(timeout=10) == payload
    assert echo.apply_async(("y",), compression="bzip2").get(timeout=10) == "y"


def test_retry_goes_back_to_the_queue_it_came_from(app: Taskq, run_worker: Start) -> None:
    @app.task(bind=True, queue="side", max_retries=2, default_retry_delay=0.01)
    def routed(self: Any) -> str:
        if self.request.retries == 0:
            raise self.retry(exc=OSError("once"))
        return f"ran on {self.request.delivery_info['routing_key']}"

    @app.task(bind=True, autoretry_for=(OSError,), max_retries=2, default_retry_delay=0.01)
    def auto(self: Any) -> int:
        if self.request.retries == 0:
            raise OSError("once")
        return self.request.retries

    run_worker(queues=(app.conf.task_default_queue, "side", "explicit"))
    assert routed.delay().get(timeout=10) == "ran on side"
    assert auto.apply_async(queue="explicit").get(timeout=10) == 1


def test_foreign_callback_options_are_tolerated(app: Taskq, run_worker: Start) -> None:
    @app.task(name="x.add")
    def add(x: int, y: int) -> int:
        return x + y

    run_worker()
    # A Celery 5.3+ signature: stamps and other options taskq does not use.
    callback = {
        "task": "x.add",
        "args": [100],
        "kwargs": {},
        "subtask_type": None,
        "immutable": False,
        "options": {
            "task_id": "stamped-cb",
            "stamped_headers": ["s1"],
            "s1": "v",
            "chord_size": None,
            "reply_to": "someone",
        },
    }
    assert add.apply_async((1, 2), link=[callback]).get(timeout=10) == 3
    assert app.AsyncResult("stamped-cb").get(timeout=10) == 103


def test_apply_checks_arguments_and_options(app: Taskq) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match="missing a required argument"):
        add.apply((1,))
    # As Celery's apply: delivery options are accepted and mean nothing here; typos are not.
    assert add.apply((1, 2), countdown=3, queue="elsewhere").get() == 3
    with pytest.raises(TypeError, match="countdwn"):
        add.apply((1, 2), countdwn=3)


def test_result_lists_the_tasks_it_sent_as_children(app: Taskq, run_worker: Start) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def fan_out() -> int:
        add.apply_async((1, 1), task_id="child-1")
        add.apply_async((2, 2), task_id="child-2", add_to_parent=False)
        return 0

    run_worker()
    parent = fan_out.apply_async(link=add.s(5).set(task_id="link-1"))
    assert parent.get(timeout=10) == 0
    meta = app.backend.get_task_meta(parent.id)
    assert meta["children"] == [[["child-1", None], None], [["link-1", None], None]]
    assert app.AsyncResult("link-1").get(timeout=10) == 5


def test_eta_tasks_raise_the_prefetch_count_while_held(app: Taskq, run_worker: Start) -> None:
    @app.task
    def later() -> None:
        return None

    worker = run_worker(prefetch_multiplier=1)  # solo: prefetch 1
    results = [later.apply_async(countdown=60) for _ in range(5)]
    # With a fixed prefetch of 1 only one could be held; each held ETA task adds a slot.
    wait_for(lambda: queue_size(app) == 0, 10, "the worker to hold all five ETA tasks")
    worker.stop()  # warm: the held ETA tasks go back to the broker, not lost, not run
    assert queue_size(app) == 5
    assert all(r.state == states.PENDING for r in results)
