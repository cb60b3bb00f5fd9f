"""Eager mode: task_always_eager runs tasks and canvas here, as a Celery test suite expects."""

from __future__ import annotations

from typing import Any

import pytest

from taskq import EagerResult, GroupResult, Task, Taskq, chain, chord, group, states


@pytest.fixture
def app() -> Taskq:
    # No broker is ever reached: an unreachable URL proves nothing is sent.
    return Taskq(
        "eager", broker="redis://127.0.0.1:1/0", backend="disabled", set_as_current=False,
        task_always_eager=True,
    )  # fmt: skip


def test_delay_runs_here_and_returns_a_finished_result(app: Taskq) -> None:
    @app.task(bind=True)
    def add(self: Task[..., int], x: int, y: int) -> int:
        assert self.request.is_eager
        return x + y

    result = add.delay(2, 3)
    assert isinstance(result, EagerResult) and result.get() == 5 and result.successful()
    # Delivery options mean nothing here; they are accepted and ignored.
    assert add.apply_async((1, 1), queue="other", countdown=60, priority=3).get() == 2
    with pytest.raises(TypeError, match="unknown option"):
        add.apply_async((1, 1), queeu="other")
    with pytest.raises(TypeError):
        add.delay(1)  # the arguments are checked as when sending


def test_a_failure_is_returned_or_raised_with_eager_propagates(app: Taskq) -> None:
    @app.task
    def boom() -> None:
        raise ValueError("no")

    result = boom.delay()
    assert result.state == states.FAILURE and isinstance(result.result, ValueError)
    with pytest.raises(ValueError):
        result.get()
    app.conf.task_eager_propagates = True
    with pytest.raises(ValueError, match="no"):
        boom.delay()


def test_links_and_errbacks_run_too(app: Taskq) -> None:
    seen: list[Any] = []

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def record(value: Any) -> None:
        seen.append(value)

    @app.task
    def boom() -> None:
        raise KeyError("k")

    @app.task
    def on_error(request: Any, exc: BaseException, traceback: str | None) -> None:
        seen.append((request.id, type(exc).__name__, "KeyError" in (traceback or "")))

    add.apply_async((2, 2), link=record.s())
    failed = boom.apply_async(link_error=record.s())
    assert seen == [4, failed.id]
    # Celery's other errback convention, as a worker applies it: called in place.
    again = boom.apply_async(link_error=on_error.s())
    assert seen[2:] == [(again.id, "KeyError", True)]


def test_chain_group_and_chord_run_here(app: Taskq) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task
    def boom(x: int) -> None:
        raise RuntimeError(x)

    result = chain(add.s(1, 2), add.s(10), add.s(100)).delay()
    assert result.get() == 113 and result.parent is not None and result.parent.get() == 13
    assert (add.s(1, 1) | add.s(5)).apply_async().get() == 7
    grouped = group(add.s(i, i) for i in range(4)).delay()
    assert isinstance(grouped, GroupResult) and grouped.get() == [0, 2, 4, 6]
    assert chord([add.s(1, 1), add.s(2, 2)], total.s()).delay().get() == 6
    assert chord([add.s(1, 1), add.s(2, 2)])(total.s()).get() == 6
    stopped = chain(add.s(1, 1), boom.s(), add.s(1)).delay()
    assert stopped.failed() and isinstance(stopped.result, RuntimeError)
    assert add.s(3, 4).apply().get() == 7  # a signature's apply is eager in any mode


def test_send_task_still_sends(app: Taskq) -> None:
    # As Celery: send_task is never eager; here the broker is out of reach.
    app.conf.broker_connection_timeout = 0.5
    app.conf.task_publish_retry = False
    with pytest.raises(Exception, match=r"127\.0\.0\.1"):
        app.send_task("eager.anything")
