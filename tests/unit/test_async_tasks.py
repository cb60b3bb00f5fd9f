"""`async def` tasks, eagerly and on an in-process worker, and the awaitable result."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from taskq import Task, Taskq, states


def test_an_async_task_runs_eagerly_with_its_request(app: Taskq) -> None:
    @app.task(bind=True)
    async def double(self: Task[..., Any], x: int) -> tuple[int, str | None]:
        await asyncio.sleep(0)
        return 2 * x, self.request.id

    result = double.apply((21,), task_id="a-1")
    assert result.get() == (42, "a-1")  # eager: the value itself, not a decoded copy


def test_the_loop_is_made_once_per_thread_and_reused(app: Taskq) -> None:
    @app.task
    async def loop_id() -> int:
        return id(asyncio.get_running_loop())

    first, second = loop_id.apply().get(), loop_id.apply().get()
    assert first == second
    other: list[int] = []
    thread = threading.Thread(target=lambda: other.append(loop_id.apply().get()))
    thread.start()
    thread.join()
    assert other[0] != first


def test_autoretry_covers_what_the_coroutine_raises(app: Taskq) -> None:
    calls: list[int] = []

    @app.task(bind=True, autoretry_for=(ConnectionError,), max_retries=3)
    async def flaky(self: Task[..., str]) -> str:
        calls.append(self.request.retries)
        if len(calls) < 3:
            raise ConnectionError("later")
        return "ok"

    assert flaky.apply().get() == "ok" and calls == [0, 1, 2]

    @app.task
    async def boom() -> None:
        raise KeyError("x")

    failed = boom.apply()
    assert failed.state == states.FAILURE and isinstance(failed.result, KeyError)


def test_eager_inside_a_running_loop(app: Taskq) -> None:
    # An asyncio server with task_always_eager: the call does not need the caller's loop.
    app.conf.task_always_eager = True

    @app.task(bind=True)
    async def where(self: Task[..., Any]) -> Any:
        await asyncio.sleep(0)
        return threading.current_thread().name, self.request.is_eager

    async def handler() -> Any:
        return where.delay().get()

    name, eager = asyncio.run(handler())
    assert name.startswith("taskq-eager-async") and eager is True


def test_await_a_result_without_blocking_the_loop(
    app: Taskq, run_worker: Callable[..., Any]
) -> None:
    release = threading.Event()

    @app.task
    def slow() -> str:
        release.wait(30)
        return "done"

    @app.task
    async def coro_add(x: int, y: int) -> int:
        await asyncio.sleep(0.01)
        return x + y

    run_worker("threads", concurrency=2)

    async def client() -> tuple[str, int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                if ticks == 5:
                    release.set()  # only a loop that keeps running gets here
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        value = await slow.delay()
        total = await coro_add.delay(2, 3).aget(timeout=30)
        ticking.cancel()
        return value, total, ticks

    value, total, ticks = asyncio.run(client())
    assert (value, total) == ("done", 5) and ticks >= 5


def test_aget_times_out(app: Taskq) -> None:
    from taskq import TimeoutError as TaskqTimeout

    result = app.AsyncResult("nobody-sends-this")
    with pytest.raises(TaskqTimeout):
        asyncio.run(result.aget(timeout=0.2))
