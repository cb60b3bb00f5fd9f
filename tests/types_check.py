"""Checked by mypy (make typecheck), never run: the public API's types do their job.

Each ``type: ignore[...]`` marks a line that MUST be a type error; with
``warn_unused_ignores`` (strict), mypy fails if one of them stops being an error.
"""

from __future__ import annotations

from typing import assert_type

from taskq import AsyncResult, Taskq

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
