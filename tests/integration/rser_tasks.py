"""A Celery app and a taskq app with the same tasks, results in the serializer a test asks.

Loaded by both workers of tests/integration/test_redis_result_serializers.py:

    python -m celery -A tests.integration.rser_tasks worker ...
    python -m taskq  -A tests.integration.rser_tasks worker ...

configured from RSER_BROKER, RSER_BACKEND, RSER_QUEUE and RSER_SERIALIZER (the result
serializer; task messages stay JSON).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from taskq import Taskq


def settings(serializer: str, queue: str) -> dict[str, Any]:
    """What both frameworks are given: Celery's names, the same values."""
    return {
        "result_serializer": serializer,
        "accept_content": ["json", serializer],
        "task_default_queue": queue,
    }


def pack(runner: str, n: int) -> dict[str, Any]:
    # bytes: what msgpack and pickle carry and JSON does not.
    return {"runner": runner, "n": n, "raw": bytes([n % 256]) * 3}


def boom(runner: str) -> None:
    raise LookupError(runner, 7)


def make_celery(broker: str | None, backend: str | None, serializer: str, queue: str) -> Celery:
    app = Celery("rser", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(broker_connection_retry_on_startup=True, **settings(serializer, queue))

    @app.task(name="rser.pack", shared=False)
    def pack_task(n: int) -> dict[str, Any]:
        return pack("celery", n)

    @app.task(name="rser.boom", shared=False)
    def boom_task() -> None:
        boom("celery")

    return app


def make_taskq(broker: str | None, backend: str | None, serializer: str, queue: str) -> Taskq:
    app = Taskq("rser", broker=broker, backend=backend, **settings(serializer, queue))

    @app.task(name="rser.pack")
    def pack_task(n: int) -> dict[str, Any]:
        return pack("taskq", n)

    @app.task(name="rser.boom")
    def boom_task() -> None:
        boom("taskq")

    return app


_env = (
    os.environ.get("RSER_BROKER"),
    os.environ.get("RSER_BACKEND"),
    os.environ.get("RSER_SERIALIZER", "json"),
    os.environ.get("RSER_QUEUE", "rser"),
)
celery_app, taskq_app = make_celery(*_env), make_taskq(*_env)
