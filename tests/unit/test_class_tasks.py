"""Celery's class-based tasks: a Task subclass with run(), registered with register_task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from taskq import ConfigurationError, Task, Taskq


class Multiply(Task[Any, Any]):
    name = "classy.multiply"
    max_retries = 1

    def run(self, x: int, y: int) -> int:
        return x * y


class Unnamed(Task[Any, Any]):
    def run(self) -> str | None:
        return self.request.id


def test_registered_class_based_tasks_run_here_and_on_a_worker(
    app: Taskq, run_worker: Callable[..., Any]
) -> None:
    multiply = app.register_task(Multiply())
    assert app.tasks["classy.multiply"] is multiply and multiply.max_retries == 1
    assert multiply(3, 4) == 12 and multiply.apply((3, 4)).get() == 12
    unnamed = app.register_task(Unnamed)  # the class will do: made here
    assert unnamed.name == f"{__name__}.Unnamed"
    assert unnamed.apply(task_id="z-1").get() == "z-1"
    run_worker("solo")
    assert multiply.delay(6, 7).get(timeout=10) == 42
    sent = unnamed.delay()
    assert sent.get(timeout=10) == sent.id
    with pytest.raises(TypeError):
        multiply.delay(1)  # arguments are checked against run()


def test_a_task_needs_a_function_or_run_and_an_app() -> None:
    with pytest.raises(TypeError, match="run"):
        Task()
    with pytest.raises(ConfigurationError, match="register_task"):
        Unnamed().delay()
