"""Received messages whose body stays compressed, as it came, until the worker reads it.

kombu inflates a compressed body whole while it builds the message, before anyone can
check its size. These Message classes hide the ``compression`` header from kombu while it
builds one, put it back after, and note it in ``held_compression``: the body stays as the
broker gave it. The worker inflates it within ``task_max_message_size``
(taskq/compression.py), and copies, returns and dead letters keep the bytes as received.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import Any

from kombu.transport import pyamqp
from kombu.transport.virtual import Message as VirtualMessage


@contextlib.contextmanager
def _hidden(headers: MutableMapping[str, Any] | None) -> Iterator[str | None]:
    compression = headers.pop("compression", None) if headers else None
    try:
        yield compression
    finally:
        if compression is not None and headers is not None:
            headers["compression"] = compression


class HeldVirtualMessage(VirtualMessage):
    """For kombu's virtual transports (taskq's Redis and the embedded SQLite)."""

    held_compression: str | None = None

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any):
        with _hidden(payload.get("headers")) as compression:
            super().__init__(payload, channel, **kwargs)
        self.held_compression = compression


class HeldAmqpMessage(pyamqp.Message):
    """For RabbitMQ (py-amqp)."""

    held_compression: str | None = None

    def __init__(self, msg: Any, channel: Any = None, **kwargs: Any):
        with _hidden(msg.properties.get("application_headers")) as compression:
            super().__init__(msg, channel, **kwargs)
        self.held_compression = compression
