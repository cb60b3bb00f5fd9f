"""The benchmark task body, shared verbatim by the taskq and the Celery task modules.

``add(x, y)`` returns ``x + y`` and counts itself with one Redis ``INCR`` on a database of
its own, so both frameworks pay exactly the same side effect. Completion number 1 and number
``BENCH_TARGET`` also store their wall-clock time: the harness reads first and last
completion from Redis instead of polling finely, and a completion is counted once however
many pool processes there are (INCR is atomic and orders them). ``tsum(values)``, the
chord scenario's body, sums the header's list.

Configured through the environment, because the worker is a separate command line:
``BENCH_COUNTER_URL`` (default db 2 of a local Redis) and ``BENCH_TARGET`` (0: stamp only
the first completion).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

COUNT_KEY = "bench:count"
FIRST_KEY = "bench:first"
LAST_KEY = "bench:last"

_client: redis.Redis | None = None
_client_pid = 0
_target = int(os.environ.get("BENCH_TARGET", "0") or 0)


def _redis() -> redis.Redis:
    # One connection per process, made after the pool forked: a socket shared across a
    # fork would interleave replies between the children.
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        url = os.environ.get("BENCH_COUNTER_URL", "redis://127.0.0.1:6379/2")
        _client = redis.Redis.from_url(url)
        _client_pid = os.getpid()
    return _client


def count() -> None:
    """Count one completion; stamp the time of the first and of the ``BENCH_TARGET``-th."""
    client = _redis()
    n = client.incr(COUNT_KEY)
    if n == 1:
        client.set(FIRST_KEY, repr(time.time()))
    if n == _target:
        client.set(LAST_KEY, repr(time.time()))


def add(x: Any, y: Any) -> Any:
    """The benchmark task: ints in the common case, strings for the payload-size sweep."""
    count()
    return x + y


def tsum(values: list[int]) -> int:
    """The chord scenario's body: the sum of the header's values (not counted)."""
    return sum(values)
