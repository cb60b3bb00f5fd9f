"""Checked by mypy (make typecheck), never run: the public API's types do their job.

Each ``type: ignore[...]`` marks a line that MUST be a type error; with
``warn_unused_ignores`` (strict), mypy fails if one of them stops being an error.
"""

from __future__ import annotations

from typing import assert_type

from taskq import AsyncResult, Task, Taskq, shared_task

app = Taskq("types", broker="memory://")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="named", max_retries=2)
def shout(text: str) -> str:
    return text.upper()


def check() -> None:
    assert_type(add(1, 2), int)
    assert_type(add.delay(1, 2), AsyncResult[int])
    assert_type(add.delay(1, 2).get(timeout=1), int)
    assert_type(shout.delay("hi").get(), str)
    add.delay("x", 2)  # type: ignore[arg-type]
    add.delay(1)  # type: ignore[call-arg]
    shout(3)  # type: ignore[arg-type]


@app.task(bind=True)
def bound(self: Task[..., int], x: int) -> int:
    return x + self.request.retries


def check_bound() -> None:
    assert_type(bound.delay(1), AsyncResult[int])
    assert_type(bound(1), int)
    bound.delay("x")  # type: ignore[arg-type]


@shared_task
def shared_add(x: int, y: int) -> int:
    return x + y


@shared_task(bind=True, max_retries=1)
def shared_bound(self: Task[..., str], text: str) -> str:
    return text


def check_shared() -> None:
    assert_type(shared_add.delay(1, 2), AsyncResult[int])
    assert_type(shared_bound.delay("a").get(), str)
    shared_bound.delay(1)  # type: ignore[arg-type]


@app.task
async def fetch(url: str) -> bytes:
    return url.encode()


@app.task(bind=True, max_retries=2)
async def bound_fetch(self: Task[..., bytes], url: str) -> bytes:
    return url.encode()


def check_async() -> None:
    assert_type(fetch.delay("u"), AsyncResult[bytes])
    assert_type(bound_fetch.delay("u").get(), bytes)
    fetch.delay(1)  # type: ignore[arg-type]
