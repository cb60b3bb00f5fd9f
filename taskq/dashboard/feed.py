"""The dashboard's event thread: every event of the fleet, into the state.

An event queue of its own on the broker (``EventReceiver``), read on a thread that
reconnects with a growing pause (1 s to 30 s) when the broker goes away, so a broker
restart shows on the page as "reconnecting", then as live again, without a restart of
the dashboard. Events missed while away are gone (they are not stored by the broker,
by design); the next heartbeats and task events bring the state back.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ..events import EventReceiver, fans_out
from ..url import mask_url, scrub

if TYPE_CHECKING:
    from ..app import Taskq
    from .state import FleetState

logger = logging.getLogger(__name__)

FIRST_PAUSE = 1.0
LAST_PAUSE = 30.0


class EventFeed:
    def __init__(self, app: Taskq, state: FleetState):
        self.app = app
        self.state = state
        self.connected = False
        self.error: str | None = None
        self.hopeless = False  # the broker cannot broadcast: no event will ever come
        self._receiver: EventReceiver | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        receiver = self._receiver
        if receiver is not None:
            receiver.should_stop = True
        self._thread.join(timeout=10)

    def _run(self) -> None:
        pause = FIRST_PAUSE
        while not self._stop.is_set():
            if self._capture():
                pause = FIRST_PAUSE
            if self.hopeless:
                return
            self._stop.wait(pause)
            pause = min(pause * 2, LAST_PAUSE)

    def _capture(self) -> bool:
        """Read events until stopped or the broker goes; whether it got connected."""
        conn = self.app.connection()
        got_in = False
        try:
            conn.ensure_connection(max_retries=1)
            got_in = True
            if not fans_out(conn):
                self.error = (
                    f"The {conn.transport.driver_type} broker at {mask_url(self.app.broker_url)} "
                    "cannot broadcast, so no worker sends events: use Redis or RabbitMQ to see "
                    "workers and tasks here."
                )
                logger.warning("Dashboard: %s", self.error)
                self.hopeless = True
                return got_in
            self._receiver = EventReceiver(self.app, conn, {"*": self.state.apply})
            self.connected, self.error = True, None
            logger.info("Dashboard: listening for events at %s", mask_url(self.app.broker_url))
            for _ in self._receiver.itercapture(wakeup=True):
                pass
        except Exception as exc:
            self.error = f"Lost the broker: {scrub(str(exc)) or type(exc).__name__}; reconnecting"
            logger.warning("Dashboard: %s", self.error)
        finally:
            self.connected = False
            self._receiver = None
            try:
                conn.release()
            except Exception:  # already broken
                logger.debug("Dashboard: closing the event connection failed", exc_info=True)
        return got_in


__all__ = ["EventFeed"]
