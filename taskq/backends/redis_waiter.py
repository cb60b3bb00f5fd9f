"""Waiting for one result on Redis: SUBSCRIBE and GET in one round trip, on RESP3.

A result is stored with SET and announced with PUBLISH on a channel named like its key
(Celery's layout). A waiter must be subscribed before it reads the key, or it misses a
result stored in between. On RESP2 a subscribed connection runs no other command, so the
read needs a second connection and must wait for the subscription's confirmation first:
two round trips. On RESP3 it runs any command, and Redis runs one connection's commands
in order, so one write carries both: a result stored before the SUBSCRIBE is in the GET's
reply, a later one arrives as a message.

The replies are read straight off the connection. redis-py's PubSub did the same work
with locks, retries and a dictionary per reply, which cost the client more CPU than the
rest of ``get()`` (measured in docs/performance.md, optimisation 19).
"""

from __future__ import annotations

import time
from typing import Any

from .. import exceptions

WAIT_STEP = 1.0  # longest single wait on the socket; the caller checks its own state between


class Waiter:
    """One thread's connection for result waits, with at most one key subscribed."""

    def __init__(self, pool: Any):
        # Its own connection, outside the pool: a subscribed connection must never be lent
        # to another command. RESP3, whatever the pool uses.
        self.connection = pool.connection_class(**{**pool.connection_kwargs, "protocol": 3})
        # redis-py's default handler formats every push for a debug log, even when off.
        self.connection._parser.set_pubsub_push_handler(_as_is)

    def subscribe(self, key: str, deadline: float | None, read: bool = True) -> bytes | None:
        """Subscribe to ``key``'s channel; its stored value, or None if there is none yet.

        ``read=False`` only subscribes (and returns None once the subscription holds): for
        a caller that reads the value on another connection, because this one is cut when
        a reply outgrows Redis's output limit for subscribers.
        """
        connection = self.connection
        commands = [("SUBSCRIBE", key), ("GET", key)] if read else [("SUBSCRIBE", key)]
        connect_within(connection, deadline)
        connection.send_packed_command(connection.pack_commands(commands))
        wanted, found = key.encode(), None
        while True:
            reply = connection.read_response(
                disable_decoding=True, push_request=True, **within(deadline)
            )
            if not isinstance(reply, list):  # the GET's: every push is a list
                return reply if reply is not None else found
            if not read and len(reply) == 3 and reply[0] == b"subscribe" and reply[1] == wanted:
                return None
            # A message can come before the GET's reply (stored between the two); the
            # confirmations of earlier subscriptions and their late messages are skipped.
            found = _published(reply, wanted) or found

    def next_value(self, key: str, deadline: float | None) -> bytes | None:
        """The next value published on ``key``; None after a quiet second.

        Raises taskq.TimeoutError once ``deadline`` (monotonic) has passed.
        """
        left = WAIT_STEP if deadline is None else deadline - time.monotonic()
        if left <= 0:
            raise exceptions.TimeoutError("The operation timed out.")
        connection = self.connection
        if not connection.can_read(timeout=min(left, WAIT_STEP)):
            return None
        reply = connection.read_response(disable_decoding=True, push_request=True)
        return _published(reply, key.encode()) if isinstance(reply, list) else None

    def unsubscribe(self, key: str) -> None:
        # Not waited for: the next wait reads the confirmation along with its own replies.
        self.connection.send_command("UNSUBSCRIBE", key)

    def close(self) -> None:
        """Drop the connection, with its subscription and any unread replies."""
        self.connection.disconnect()


def left_until(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise exceptions.TimeoutError("The operation timed out.")
    return left


def within(deadline: float | None) -> dict[str, float]:
    """``read_response`` arguments so that a read blocks no later than ``deadline``."""
    return {} if deadline is None else {"timeout": left_until(deadline)}


def connect_within(connection: Any, deadline: float | None) -> None:
    """Connect now if need be, handshake included, in no longer than the deadline allows."""
    if deadline is None or connection._sock is not None:
        return
    left = left_until(deadline)
    timeouts = connection.socket_connect_timeout, connection.socket_timeout
    # The handshake (HELLO, AUTH, a health check) reads with the socket's timeout.
    connection.socket_connect_timeout = min(left, timeouts[0] or left)
    connection.socket_timeout = min(left, timeouts[1] or left)
    try:
        connection.connect()
    finally:
        connection.socket_connect_timeout, connection.socket_timeout = timeouts
        if connection._sock is not None:
            connection._sock.settimeout(timeouts[1])


def _published(push: list[Any], key: bytes) -> bytes | None:
    if len(push) == 3 and push[0] == b"message" and push[1] == key:
        return push[2]  # type: ignore[no-any-return]
    return None


def _as_is(push: Any) -> Any:
    return push
