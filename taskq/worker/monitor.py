"""Monitor: the worker's events, the stage that tells monitoring tools what it does.

Worker events (``worker-online``, a ``worker-heartbeat`` every ``freq`` seconds,
``worker-offline``) go out by default, as Celery's do, so Flower and ``celery status``-style
tools see the worker; ``--without-heartbeat`` stops them. Task events are sent only with
``-E`` (``worker_send_task_events``) or after ``enable_events``. They are buffered wherever
they happen (pool threads included) and published by the consumer thread once per turn of
its loop, as arrays, so the task path never waits for the broker on their account.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kombu.clocks import LamportClock

from ..events import SW_IDENT, EventDispatcher, iso_or_none
from ..message import args_repr, kwargs_repr
from .connection import connection_errors

if TYPE_CHECKING:
    from ..app import Taskq
    from .request import Request

logger = logging.getLogger("taskq.worker")

HEARTBEAT_FREQ = 2.0  # Celery's interval: monitors call a worker gone after two missed
Load = Callable[[], tuple[int, int]]  # (tasks running now, tasks finished since start)
Later = Callable[[float, Callable[[], None]], None]


class Monitor:
    def __init__(
        self,
        app: Taskq,
        hostname: str,
        *,
        task_events: bool = False,
        heartbeat: float | None = HEARTBEAT_FREQ,
        clock: LamportClock | None = None,
    ):
        self.hostname = hostname
        self.freq = heartbeat
        self.clock = clock or LamportClock()
        self.dispatcher = EventDispatcher(
            app, hostname, clock=self.clock, batch=True, task_events=task_events
        )
        self.load: Load = lambda: (0, 0)
        self._online = False
        self._said_unavailable = False
        self._generation = 0  # one beat timer per connection (a reconnect starts another)
        from .. import __version__

        self._software = {"sw_ident": SW_IDENT, "sw_ver": __version__, "sw_sys": platform.system()}

    @property
    def task_events(self) -> bool:
        return self.dispatcher.task_events

    @task_events.setter
    def task_events(self, on: bool) -> None:
        self.dispatcher.task_events = on

    # -- wiring, on the consumer thread
    def connect(self, connection: Any, call_later: Later) -> None:
        """Send on ``connection`` (after every connect); beats are timed with ``call_later``."""
        if not self.dispatcher.connect(connection):
            if not self._said_unavailable:
                logger.info("Events are not available on this broker's transport.")
                self._said_unavailable = True
            return
        if self.freq is None:
            return
        self._worker_event("worker-heartbeat" if self._online else "worker-online")
        self._online = True
        # The consumer forgets its timers on a reconnect: the beat starts again here.
        self._arm(call_later)

    def _arm(self, call_later: Later) -> None:
        self._generation += 1
        generation, freq = self._generation, self.freq or HEARTBEAT_FREQ

        def beat() -> None:
            if generation == self._generation and self.dispatcher.connected:
                self.heartbeat()
                call_later(freq, beat)

        call_later(freq, beat)

    def heartbeat(self) -> None:
        self._worker_event("worker-heartbeat")

    def offline(self, connection: Any) -> None:
        """Say goodbye, while ``connection`` is still open (a clean stop only)."""
        if self.dispatcher.connected and connection is not None:
            self._quietly(self.flush, connection)
            if self._online:
                self._quietly(lambda: self._worker_event("worker-offline"), connection)

    def flush(self) -> None:
        self.dispatcher.flush()

    def _worker_event(self, event_type: str) -> None:
        active, processed = self.load()
        self.dispatcher.send(
            event_type,
            freq=self.freq or HEARTBEAT_FREQ,
            active=active,
            processed=processed,
            loadavg=_loadavg(),
            **self._software,
        )

    def _quietly(self, send: Callable[[], None], connection: Any) -> None:
        try:
            send()
        except connection_errors(connection) as exc:
            logger.debug("Event not sent, the broker is away: %r", exc)

    # -- task events, from any thread (buffered)
    def task(self, event_type: str, task_id: str, **fields: Any) -> None:
        if self.dispatcher.task_events:
            self.dispatcher.send(event_type, uuid=task_id, **fields)

    def received(self, request: Request) -> None:
        if not self.dispatcher.task_events:
            return
        m = request.message
        self.dispatcher.send(
            "task-received",
            uuid=m.id,
            name=m.task,
            args=args_repr(m),
            kwargs=kwargs_repr(m),
            root_id=m.root_id,
            parent_id=m.parent_id,
            retries=m.retries,
            eta=iso_or_none(m.eta),
            expires=iso_or_none(m.expires),
        )


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every platform
        return [0.0, 0.0, 0.0]
