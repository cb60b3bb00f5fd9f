"""Monitor: the worker's events, the stage that tells monitoring tools what it does.

Worker events (``worker-online``, a ``worker-heartbeat`` every ``freq`` seconds,
``worker-offline``) go out by default, as Celery's do, so Flower and ``celery status``-style
tools see the worker; ``--without-heartbeat`` stops them. Task events are sent only with
``-E`` (``worker_send_task_events``) or after ``enable_events``.

Sending an event costs the task path one append to a buffer, from whatever thread it
happens on. The consumer thread publishes the buffer on its own connection at most every
``FLUSH_SECONDS`` (sooner when a few hundred wait), task events as one JSON array per few
hundred: a busy worker sends some ten event messages a second, whatever its task rate.
(A thread of its own would cost more: it would fight the consumer thread for the GIL.)
The heartbeat is timed by the consumer's loop, so a worker whose loop is stuck stops
beating, as it should.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kombu.clocks import LamportClock

from .. import signals
from ..events import (
    FLUSH_SECONDS,
    SW_IDENT,
    EventDispatcher,
    iso_or_none,
    json_fields,
    json_text,
)
from ..message import args_repr, kwargs_repr
from .connection import connection_errors

if TYPE_CHECKING:
    from ..app import Taskq
    from .metrics import WorkerMetrics
    from .request import Request

logger = logging.getLogger(__name__)

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
            app, hostname, clock=self.clock, buffered=True, task_events=task_events
        )
        self.load: Load = lambda: (0, 0)
        self.metrics: WorkerMetrics | None = None  # --metrics-port: counted here too
        self._online = False  # worker-online was sent
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

    # -- on the consumer thread
    def connect(self, connection: Any, call_later: Later) -> None:
        """Send on ``connection`` (after each connect of the consumer); time the beat."""
        if not self.dispatcher.connect(connection):
            if not self._said_unavailable:
                logger.info("Events are not available on this broker's transport.")
                self._said_unavailable = True
            self.task_events = False  # nothing would ever send them
            return
        if self.freq is None:
            return
        if not self._online:
            self._online = True
            self._worker_event("worker-online")
        # The consumer forgets its timers on a reconnect: the beat starts again here.
        self._generation += 1
        generation, freq = self._generation, self.freq

        def beat() -> None:
            if generation == self._generation:
                self.heartbeat()
                call_later(freq, beat)

        call_later(freq, beat)

    def heartbeat(self) -> None:
        if self._online:
            self._worker_event("worker-heartbeat")
            self.dispatcher.flush(force=True)  # a beat is never held back
            signals.heartbeat_sent.send(sender=self)

    def flush(self) -> None:
        """Publish buffered events if they are due (each turn of the consumer's loop)."""
        self.dispatcher.flush()

    def wait_limit(self, timeout: float) -> float:
        """How long the loop may wait for the broker without holding events back."""
        return min(timeout, FLUSH_SECONDS) if self.dispatcher.pending else timeout

    def offline(self, connection: Any) -> None:
        """At a stop, while ``connection`` is still open: what is buffered, then goodbye."""
        if connection is None:
            return
        if self._online:
            self._worker_event("worker-offline")
        try:
            self.dispatcher.flush(force=True)
        except connection_errors(connection) as exc:
            logger.debug("Last events not sent, the broker is away: %r", exc)
        self.dispatcher.disconnect()

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

    # -- task events, from any thread: the hot ones written field by field
    def task(self, event_type: str, task_id: str, **fields: Any) -> None:
        if self.dispatcher.task_events:
            self.dispatcher.task(event_type, task_id, json_fields(fields))

    def started(self, task_id: str, name: str) -> None:
        if self.metrics is not None:
            self.metrics.started(name)
        if self.dispatcher.task_events:
            self.dispatcher.task("task-started", task_id)

    def succeeded(self, task_id: str, result: str, runtime: float) -> None:
        if self.dispatcher.task_events:
            rest = f',"result":{json_text(result)},"runtime":{float(runtime)!r}'
            self.dispatcher.task("task-succeeded", task_id, rest)

    def received(self, request: Request) -> None:
        m = request.message
        if self.metrics is not None:
            self.metrics.received(m.task)
        if not self.dispatcher.task_events:
            return
        rest = (
            f',"name":{json_text(m.task)},"args":{json_text(args_repr(m))},'
            f'"kwargs":{json_text(kwargs_repr(m))},"root_id":{json_text(m.root_id)},'
            f'"parent_id":{json_text(m.parent_id)},"retries":{int(m.retries):d},'
            f'"eta":{json_text(iso_or_none(m.eta))},"expires":{json_text(iso_or_none(m.expires))}'
        )
        self.dispatcher.task("task-received", m.id, rest)


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every platform
        return [0.0, 0.0, 0.0]
