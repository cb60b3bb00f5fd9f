"""Helpers for unit tests on kombu's in-process broker (memory://)."""

from __future__ import annotations

from typing import Any

from kombu import Connection, Producer

from taskq import Taskq


def publish_raw(
    app: Taskq,
    body: Any,
    headers: dict[str, Any] | None,
    content_type: str = "application/json",
    serializer: str | None = None,
) -> None:
    """Put a hand-made message on the app's default queue, past every client-side check.

    With ``serializer`` kombu encodes ``body``; without, ``body`` goes as it is, labelled
    ``content_type`` (any ``compression`` header is left for the worker to apply).
    """
    kwargs: dict[str, Any] = (
        {"serializer": serializer}
        if serializer
        else {"content_type": content_type, "content_encoding": "utf-8"}
    )
    with Connection("memory://") as conn:
        Producer(conn.default_channel).publish(
            body,
            routing_key=app.conf.task_default_queue,
            headers=headers or {},
            declare=[app.default_queue()],
            **kwargs,
        )


def queue_size(app: Taskq) -> int:
    """Messages waiting in the app's default queue (not those a worker holds)."""
    with Connection("memory://") as conn:
        declared = app.default_queue()(conn.default_channel).queue_declare(passive=True)
        return int(declared.message_count)
