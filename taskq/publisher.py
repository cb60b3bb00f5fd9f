"""The common publish, straight onto a kombu channel that one caller borrows at a time.

kombu's ``Producer.publish`` from a ``ProducerPool`` costs a pool acquire, a producer
revive, a retry closure and a channel promise on every call: about a third of ``delay()``'s
time on Redis, for a publish that needs none of them. ``Publisher`` keeps a few idle
channels and sends through the channel's own API (``prepare_message``, ``basic_publish``),
the calls ``Producer`` ends in. It tries once: on a connection error the channel is dropped
and the caller goes the long way, kombu's ``Producer`` with its retry policy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from kombu import Connection, Queue
from kombu.common import maybe_declare

IDLE_CHANNELS = 10  # kept open for reuse; more than this many publishing at once opens more


class Publisher:
    """Idle kombu channels, one lent to each publish: no lock, as list pop/append are atomic."""

    def __init__(self, connect: Callable[[], Connection], keep: int = IDLE_CHANNELS):
        self._connect = connect
        self._keep = keep
        self._idle: list[tuple[Connection, Any]] = []
        self._pid = os.getpid()
        # A forked child must neither use nor close its parent's sockets; closing one
        # would shut the parent's connection down too. The child keeps them unused.
        self._inherited: list[tuple[Connection, Any]] = []

    def publish(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        declare: Sequence[Queue],
        priority: int | None,
        content_type: str,
        content_encoding: str,
        headers: dict[str, Any],
        properties: dict[str, Any],
    ) -> None:
        """Send once; a broker error propagates and the channel it came from is closed.

        ``properties`` becomes the message's: kombu fills in its delivery details.
        """
        held = self._borrow()
        connection, channel = held
        try:
            for queue in declare:
                if not queue_known(connection, queue):
                    maybe_declare(queue, channel)
            message = channel.prepare_message(
                body, priority, content_type, content_encoding, headers, properties
            )
            channel.basic_publish(message, exchange=exchange, routing_key=routing_key)
        except BaseException:
            _close_quietly(connection)
            raise
        self._give_back(held)

    def close(self) -> None:
        while self._idle:
            with contextlib.suppress(IndexError):
                _close_quietly(self._idle.pop()[0])

    def _borrow(self) -> tuple[Connection, Any]:
        if self._pid != os.getpid():
            self._inherited.extend(self._idle)
            self._idle = []
            self._pid = os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            connection = self._connect()
            try:
                # One attempt: the caller's retry policy decides what comes after a failure
                # (kombu's default_channel would retry on its own, for 6 s).
                connection.ensure_connection(max_retries=0)
                return connection, connection.default_channel
            except BaseException:
                _close_quietly(connection)
                raise

    def _give_back(self, held: tuple[Connection, Any]) -> None:
        if len(self._idle) < self._keep and self._pid == os.getpid():
            self._idle.append(held)
        else:
            _close_quietly(held[0])


def queue_known(connection: Connection, queue: Queue) -> bool:
    # kombu records each declaration on the connection, but checks only after copying and
    # binding the queue: a tenth of a publish's time. The same check, without the copy. A
    # queue that cannot be cached (auto-delete, exclusive) is declared every time.
    return bool(queue.can_cache_declaration and hash(queue) in connection.declared_entities)


def _close_quietly(connection: Connection) -> None:
    with contextlib.suppress(Exception):
        connection.close()
