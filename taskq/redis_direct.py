"""Commands sent straight on a redis-py connection, past the client's command layer.

A redis-py client wraps every command in a lock, a retry policy and reply callbacks, and a
pooled one also takes a connection from its pool and checks it for unread data: together
more than the round trip itself on loopback. The hot paths (a publish, a take, an ack)
send on a connection they own instead; the result backend sends its stores the same way,
and reads their replies later (``RedisBackend.stores_in_flight``). The connection still
connects on first use, checks its health and drops itself on an error; callers decide
what a failure means.
"""

from __future__ import annotations

import os
import select
import ssl
import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

DEFAULT_SPIN = 100e-6  # seconds; a loopback reply comes back in 50-60 us on a 2-core VM
MISSES_BEFORE_REST = 3  # spins in a row that outlast their limit before the waits rest
LONGEST_REST = 1024  # replies waited for by sleeping alone while the spin keeps missing
_yield = getattr(os, "sched_yield", lambda: None)  # not on every platform


class ReplyWait:
    """Waits for the reply on one connection: a short spin of polls, then the usual sleep.

    A thread that sleeps for a reply pays for its wake-up and for caches it finds cold:
    on loopback that cost more CPU than polling until the reply is there, and it added
    the wake-up to every round trip (a delay() on a 2-core VM: 175 us of wall time and
    128 us of CPU sleeping, 112 us and 112 us spinning). Between polls the thread yields
    the CPU to any process that is ready to run there. The spin is bounded by ``limit``
    and gives up on connections whose replies take longer (a remote server): after
    ``MISSES_BEFORE_REST`` misses in a row the next waits only sleep, for a stretch that
    doubles while the spin keeps missing and ends on the first reply that came in time.

    One per connection, used under the lock that keeps the connection's callers apart.
    """

    def __init__(self, limit: float = DEFAULT_SPIN):
        self.limit = limit
        self._sock: Any = None
        self._poll: Any = None
        self._misses = 0
        self._rest = 0  # waits left that only sleep
        self._rest_length = 1

    @property
    def spinning(self) -> bool:
        """Whether the next wait spins before it sleeps."""
        return self.limit > 0 and not self._rest

    def __call__(self, connection: Any) -> None:
        """Return once a reply is readable on ``connection``, or once the spin gives up."""
        if self.limit <= 0:
            return
        if self._rest:
            self._rest -= 1
            return
        poll = self._poller(connection)
        if poll is None:
            return
        end = time.perf_counter() + self.limit
        while not poll(0):
            # Lets a process with work run on this CPU first (the worker, in the results
            # row, where a plain spin cost 15% of the rate); returns at once when none has.
            _yield()
            if time.perf_counter() >= end:
                self._missed()
                return
        self._misses = 0
        self._rest_length = 1

    def _poller(self, connection: Any) -> Any:
        sock = getattr(connection, "_sock", None)
        if sock is not self._sock:  # connected or reconnected since the last wait
            self._sock = sock
            self._poll = None
            # A TLS socket may hold a decrypted reply that polling the file cannot see.
            # No poll() at all: gevent and eventlet remove it when they patch, and a spin
            # would stall their loop anyway.
            make = getattr(select, "poll", None)
            if make is not None and sock is not None and not isinstance(sock, ssl.SSLSocket):
                poller = make()
                poller.register(sock.fileno(), select.POLLIN)
                self._poll = poller.poll
        return self._poll

    def _missed(self) -> None:
        self._misses += 1
        if self._misses >= MISSES_BEFORE_REST:
            # After the rest one more miss is enough to rest again, for twice as long.
            self._misses = MISSES_BEFORE_REST - 1
            self._rest = self._rest_length
            self._rest_length = min(self._rest_length * 2, LONGEST_REST)


def call(connection: Any, *args: Any, wait: ReplyWait | None = None) -> Any:
    """One command and its reply; an error reply is raised."""
    connection.send_command(*args)
    if wait is not None:
        wait(connection)
    return connection.read_response()


def run_script(
    connection: Any, text: str, sha: str, args: Sequence[Any], wait: ReplyWait | None = None
) -> Any:
    """``EVALSHA sha *args``; loads the script first if the server lost it (a restart)."""
    try:
        return call(connection, "EVALSHA", sha, *args, wait=wait)
    except NoScriptError:
        call(connection, "SCRIPT", "LOAD", text)
        return call(connection, "EVALSHA", sha, *args, wait=wait)
