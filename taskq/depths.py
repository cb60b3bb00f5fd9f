"""How many messages wait in a queue, read from the broker: for metrics and the dashboard.

A passive declare answers the depth on every transport kombu has (RabbitMQ, Redis, the
embedded SQLite broker). Reads are cached for a few seconds, because a Prometheus scrape
or a page refresh every second must not ask the broker every second. Thread-safe: the
metrics endpoint and the dashboard read from threads of their own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Taskq

logger = logging.getLogger(__name__)

CACHE_SECONDS = 5.0


class QueueDepths:
    """Reads queue depths through one connection of its own, opened on first use."""

    def __init__(self, app: Taskq, cache_seconds: float = CACHE_SECONDS):
        self.app = app
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._connection: Any = None
        self._cache: tuple[float, tuple[str, ...], dict[str, int]] = (0.0, (), {})
        self.error: str | None = None  # why the last read failed, for a page to show

    def read(self, names: Iterable[str]) -> dict[str, int]:
        """Depth by queue name; a queue whose depth could not be read is left out."""
        wanted = tuple(dict.fromkeys(names))
        with self._lock:
            read_at, asked, depths = self._cache
            if asked == wanted and time.monotonic() - read_at < self.cache_seconds:
                return dict(depths)
            self.error = None
            depths = {}
            for name in wanted:
                count = self._depth(name)
                if count is not None:
                    depths[name] = count
            self._cache = (time.monotonic(), wanted, depths)
            return dict(depths)

    def _depth(self, name: str) -> int | None:
        try:
            if self._connection is None:
                self._connection = self.app.connection()
                self._connection.ensure_connection(max_retries=1)
            found = self._connection.default_channel.queue_declare(name, passive=True)
            return int(found.message_count)
        except self._not_found() as exc:
            # A queue nobody declared yet is empty (Redis: an empty list is no key). On
            # RabbitMQ the refusal closed the channel: the next read opens another.
            logger.debug("Queue %s not found (%s): depth 0", name, exc)
            self.close()
            return 0
        except Exception as exc:  # the broker is away: this read goes without the depth
            logger.debug("Depth of %s not read: %r", name, exc)
            self.error = f"queue depths not read: {type(exc).__name__}"
            self.close()
            return None

    def _not_found(self) -> tuple[type[BaseException], ...]:
        conn = self._connection
        return tuple(conn.channel_errors) if conn is not None else ()

    def close(self) -> None:
        conn, self._connection = self._connection, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # already broken
                logger.debug("Closing the depth reader's connection failed", exc_info=True)


__all__ = ["QueueDepths"]
