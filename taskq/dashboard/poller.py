"""What events do not carry, asked for on a timer: pool sizes and queues by remote control,
queue depths from the broker.

Every ``CONTROL_EVERY`` seconds the poller asks the online workers for ``stats`` and
``active_queues`` (the answers Celery's workers give too), and every ``DEPTH_EVERY``
seconds reads the depth of the app's queues, the queues any worker consumes, and the
dead-letter queue. A broker that is away costs a failed read and a message on the page,
never the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..depths import QueueDepths
from ..url import scrub

if TYPE_CHECKING:
    from ..app import Taskq
    from .state import FleetState

logger = logging.getLogger(__name__)

CONTROL_EVERY = 10.0
DEPTH_EVERY = 5.0
TICK = 1.0  # a worker that comes online is asked at the next tick, not the next round
REPLY_TIMEOUT = 2.0


@dataclass(frozen=True)
class QueueInfo:
    name: str
    depth: int | None
    consumers: int | None
    dead_letter: bool


@dataclass(frozen=True)
class QueueView:
    queues: tuple[QueueInfo, ...] = ()
    read_at: float | None = None
    error: str | None = None
    version: int = 0  # bumped at each read, for the live stream

    def as_json(self) -> dict[str, Any]:
        return {
            "queues": [q.__dict__ for q in self.queues],
            "read_at": self.read_at,
            "error": self.error,
        }


class Poller:
    """A thread of its own; ``view`` is replaced whole at each read, so readers need no lock."""

    def __init__(self, app: Taskq, state: FleetState, dead_letter: str):
        self.app = app
        self.state = state
        self.dead_letter = dead_letter
        self.depths = QueueDepths(app, cache_seconds=0.0)  # paced here, not by a cache
        self.view = QueueView()
        self.consumed: dict[str, list[str]] = {}  # worker -> queues it consumes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.depths.close()

    def _run(self) -> None:
        next_control = next_depth = 0.0
        while not self._stop.is_set():
            newcomer = set(self.state.online_workers()) - set(self.consumed)
            asked = newcomer or time.monotonic() >= next_control
            if asked:
                self.ask_workers()
                next_control = time.monotonic() + CONTROL_EVERY
            if asked or time.monotonic() >= next_depth:
                self.read_depths()
                next_depth = time.monotonic() + DEPTH_EVERY
            self._stop.wait(TICK)

    def ask_workers(self) -> None:
        online = self.state.online_workers()
        if not online:
            return
        try:
            inspect = self.app.control.inspect(online, timeout=REPLY_TIMEOUT)
            stats = inspect.stats() or {}
            queues = inspect.active_queues() or {}
        except Exception as exc:  # the broker is away: the next round tries again
            logger.warning("Dashboard: remote control failed: %s", scrub(repr(exc)))
            return
        for hostname in online:
            consumed = [str(q.get("name")) for q in queues.get(hostname) or () if q.get("name")]
            # One that did not answer is not asked again before the next round.
            self.consumed[hostname] = (
                consumed if hostname in queues else self.consumed.get(hostname, [])
            )
            self.state.set_worker_info(hostname, _pool_size(stats.get(hostname)),
                                       self.consumed.get(hostname, []))  # fmt: skip
        for gone in set(self.consumed) - set(self.state.online_workers()):
            del self.consumed[gone]

    def read_depths(self) -> None:
        names = self.queue_names()
        try:
            depths = self.depths.read(names)
        except Exception as exc:  # not expected: QueueDepths keeps broker errors itself
            logger.exception("Dashboard: reading queue depths failed")
            depths = {}
            error: str | None = f"queue depths not read: {type(exc).__name__}"
        else:
            error = self.depths.error
        consumers = Counter(q for qs in self.consumed.values() for q in qs)
        queues = tuple(
            QueueInfo(name, depths.get(name), consumers.get(name, 0), name == self.dead_letter)
            for name in names
        )
        self.view = QueueView(queues, time.time(), error, self.view.version + 1)

    def queue_names(self) -> list[str]:
        """The app's queues, then those the workers consume, then the dead letters."""
        own = [q.name for q in self.app.declared_queues()] + [self.app.default_queue().name]
        consumed = sorted({q for qs in self.consumed.values() for q in qs})
        names = [n for n in dict.fromkeys(own + consumed) if n and n != self.dead_letter]
        return [*names, self.dead_letter]


def _pool_size(stats: Any) -> int | None:
    pool = stats.get("pool") if isinstance(stats, Mapping) else None
    size = pool.get("max-concurrency") if isinstance(pool, Mapping) else None
    return size if isinstance(size, int) else None


__all__ = ["Poller", "QueueInfo", "QueueView"]
