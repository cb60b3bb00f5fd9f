"""Watchers: an idle consumer of several Redis queues waits on all of them at once.

``BLMOVE`` waits on one list. A consumer of several queues used to wait on one of them
and look at all of them every 0.1 s: about 100 commands a second per idle worker on
three queues, for every worker of the fleet (docs/scaling.md). Instead, each queue gets a
watcher: a connection of its own, blocked in ``BLMOVE <queue> <landing list> RIGHT LEFT``
into the consumer's landing list for that queue, with a ring of the consumer's bell
pipelined behind it. The consumer's own connection waits on the bell (``BLPOP``) with its
take behind it, and every take empties the landing lists first. A message that arrives
on any queue thus goes to one waiting consumer's landing list, rings its bell, ends its
wait and is taken, all inside Redis: no round trip to the worker in between, and one
message still wakes one consumer.

The consumer reads a watcher's replies (and arms it again) before each of its own waits,
which end at least every ``brpop_timeout``; nothing else reads the watchers' connections,
so they stay out of kombu's poller. A watcher that cannot run (its connection lost) costs
latency, never a message: every take looks at every queue and landing list anyway.

A consumer that runs out of credit (prefetch) must not go on landing messages it cannot
take while other workers are idle: its watchers stand down (``CLIENT UNBLOCK``, their
replies read) and whatever they had landed goes back to the consuming end of its queue.
They wait again with the consumer's next wait.

A watcher is stopped with ``CLIENT KILL ID`` from another connection before its landing
list's lease ends: once Redis has answered that, the watcher's wait can no longer move a
message, where a socket merely closed on the worker's side could still be served. A
server that refuses ``CLIENT`` commands (an ACL, a managed service) gets no watchers: the
consumer waits on one queue and looks at all of them every 0.1 s, as before watchers.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from .redis_script import Source

logger = logging.getLogger(__name__)

WATCH_TIMEOUT = 10  # seconds a watcher waits before it is armed again (on its queue's peek)
STALE_AFTER = 10.0  # seconds past its timeout without a reply: the connection is dead
UNBLOCKED_REPLY = 5.0  # seconds an unblocked watcher's reply may take before it is killed
BELL_TTL_MS = 60_000  # a ring nobody takes (its consumer gone) expires by itself

# KEYS: the bell, the watcher's landing list. ARGV: the bell's lifetime in ms. Rings only
# if something landed (not after a wait that timed out). At most one ring waits, so a
# consumer that was busy while several messages landed wakes once, and takes them all.
RING_SCRIPT = """
if redis.call('LLEN', KEYS[2]) == 0 then return 0 end
redis.call('LPUSH', KEYS[1], 1)
redis.call('LTRIM', KEYS[1], 0, 0)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


@dataclass
class Watcher:
    """One queue's watcher: its connection and the wait outstanding on it, if any."""

    connection: Any
    client_id: int | None = None  # the server's id for the connection, to stop it by
    armed_at: float | None = None  # monotonic time its wait was sent; None: none outstanding


class Watchers:
    """A consumer's watchers, one per queue, and its bell.

    ``connect`` makes a connection outside the channel's pool (a watcher holds its own for
    as long as it watches); ``prefix`` is the channel's key prefix, added here because the
    connection adds none.
    """

    def __init__(self, connect: Callable[[], Any], prefix: str, bell: str):
        self._connect = connect
        self._prefix = prefix
        self.bell = prefix + bell
        self._by_queue: dict[str, Watcher] = {}
        self.refused = False  # the server refused a CLIENT command: no more watchers

    @property
    def queues(self) -> frozenset[str]:
        return frozenset(self._by_queue)

    @property
    def armed(self) -> bool:
        """Whether any watcher's wait is outstanding."""
        return any(watcher.armed_at is not None for watcher in self._by_queue.values())

    def harvest(self) -> None:
        """Read the replies of the watchers whose wait ended, so they can wait again."""
        now = time.monotonic()
        for queue, watcher in self._by_queue.items():
            if watcher.armed_at is None:
                continue
            connection = watcher.connection
            try:
                if connection._sock is None:  # lost, and dropped by redis-py
                    pass
                elif connection.can_read(timeout=0):
                    _read_replies(connection, 2)  # the move (or nil), then the ring
                elif now - watcher.armed_at < WATCH_TIMEOUT + STALE_AFTER:
                    continue
                else:
                    # A half-open connection never answers: connect again. A message its
                    # wait may have moved is in the landing list, which every take empties.
                    logger.warning("Redis watcher of %r got no reply: reconnecting.", queue)
                    connection.disconnect()
            except redis.exceptions.ResponseError as exc:
                logger.debug("Redis watcher of %r refused: %r", queue, exc)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                connection.disconnect()  # connects again when next armed
            watcher.armed_at = None

    def arm(self, wanted: dict[str, tuple[Source, Source]]) -> bool:
        """Have every queue in ``wanted`` (queue: its list to watch, its landing list)
        watched; a watcher already waiting goes on waiting where it is. False if the
        server refuses watchers."""
        if self.refused:
            return False
        for queue, (source, landing) in wanted.items():
            watcher = self._by_queue.get(queue)
            if watcher is None:
                watcher = self._by_queue[queue] = Watcher(self._connect())
            if watcher.armed_at is not None:
                continue
            connection = watcher.connection
            if connection._sock is None or watcher.client_id is None:
                connection.connect()
                connection.send_command("CLIENT", "ID")
                try:
                    watcher.client_id = int(connection.read_response())
                except redis.exceptions.ResponseError as exc:
                    connection.disconnect()
                    self._refuse(exc)
                    return False
            p = self._prefix
            commands = [
                ("BLMOVE", p + source.key, p + landing.key, "RIGHT", "LEFT", WATCH_TIMEOUT),
                ("EVAL", RING_SCRIPT, 2, self.bell, p + landing.key, BELL_TTL_MS),
            ]
            connection.send_packed_command(connection.pack_commands(commands))
            watcher.armed_at = time.monotonic()
        return True

    def _refuse(self, exc: Exception) -> None:
        logger.warning(
            "Redis refused %r, which watching several queues at once needs (CLIENT ID, "
            "UNBLOCK and KILL): this consumer looks at its queues every 0.1 s instead.",
            exc,
        )
        self.refused = True

    def stand_down(self, unblock: Callable[[list[int]], Any], kill: Callable[[int], Any]) -> None:
        """End every outstanding wait now and read its replies: afterwards no watcher
        can move a message until armed again. ``unblock`` sends ``CLIENT UNBLOCK`` for
        each id, on another connection."""
        if self.refused:
            return  # their waits end by themselves; they are not armed again
        armed = [w for w in self._by_queue.values() if w.armed_at is not None]
        live = [w for w in armed if w.connection._sock is not None]
        if live:
            try:
                unblock([w.client_id or 0 for w in live])
            except redis.exceptions.ResponseError as exc:
                self._refuse(exc)
                return
        for watcher in armed:
            watcher.armed_at = None
            connection = watcher.connection
            try:
                if connection._sock is not None and connection.can_read(timeout=UNBLOCKED_REPLY):
                    _read_replies(connection, 2)
                    continue
            except redis.exceptions.ResponseError:
                continue  # answered: its wait is over
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                pass
            # No answer: unblocked before Redis had even read its wait. Only its end
            # makes sure the wait never runs.
            with contextlib.suppress(Exception):
                kill(watcher.client_id or 0)
            connection.disconnect()

    def stop(self, queues: Iterable[str], kill: Callable[[int], Any]) -> bool:
        """Stop the watchers of ``queues``; True if Redis confirmed that none of their
        waits can move anything any more (``kill`` sends ``CLIENT KILL ID`` for an id on
        another connection), so their landing lists' leases may end now."""
        stopped = True
        for queue in list(queues):
            watcher = self._by_queue.pop(queue, None)
            if watcher is None:
                continue
            if watcher.armed_at is not None and watcher.connection._sock is not None:
                try:
                    kill(watcher.client_id or 0)
                except Exception as exc:
                    # Not allowed (an ACL) or no server: the lease runs out instead, and
                    # the sweep puts back whatever the wait moved.
                    logger.debug("Could not stop the Redis watcher of %r: %r", queue, exc)
                    stopped = False
            watcher.connection.disconnect()
        return stopped

    def close(self, kill: Callable[[int], Any]) -> bool:
        return self.stop(self.queues, kill)


def _read_replies(connection: Any, count: int) -> None:
    """Read ``count`` replies; an error reply is raised after all have been read."""
    error: redis.exceptions.ResponseError | None = None
    for _ in range(count):
        try:
            connection.read_response()
        except redis.exceptions.ResponseError as exc:
            error = error or exc
    if error is not None:
        raise error


__all__ = ["RING_SCRIPT", "WATCH_TIMEOUT", "Watcher", "Watchers"]
