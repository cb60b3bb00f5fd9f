"""Stand-in workers for the remote-control tests: kombu's pidbox ``Node`` on memory://.

Each is the very code Celery's workers answer with, in a thread of its own: it records the
requests it receives and answers with the replies a real Celery 5.7 worker gave
(tests/data/celery-captures/control.json), or ``{"ok": "<command> done"}``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu import Connection
from kombu.pidbox import Mailbox

CAPTURES = Path(__file__).resolve().parents[1] / "data" / "celery-captures"
CAPTURE: dict[str, Any] = json.loads((CAPTURES / "control.json").read_text())
CAPTURED_NODE = "w1@vm"
WAIT = 10.0  # generous: a reply or a request normally takes milliseconds

# What a Celery 5.7 worker answered (the capture), by command; others get {"ok": ...}.
CANNED = {
    "ping": CAPTURE["ping"][0][CAPTURED_NODE],
    "revoke": CAPTURE["revoke_reply"][0][CAPTURED_NODE],
    **{
        verb: CAPTURE[verb][CAPTURED_NODE]
        for verb in ("active", "registered", "stats", "scheduled", "reserved", "revoked")
    },
    "query_task": CAPTURE["query_task"][CAPTURED_NODE],
}


@dataclass(frozen=True)
class Received:
    body: dict[str, Any]
    headers: dict[str, Any]
    exchange: str


class FakeWorker:
    """A worker's mailbox and nothing else: kombu's pidbox Node, in a thread of its own."""

    def __init__(self, hostname: str, exchange: str = "celery"):
        self.hostname = hostname
        self.conn = Connection("memory://", transport_options={"polling_interval": 0.01})
        mailbox = Mailbox(exchange, type="fanout", accept=["json"], serializer="json")
        self.node = mailbox(self.conn).Node(hostname, handlers=_Handlers())
        self.channel = self.conn.channel()
        self.node.channel = self.channel
        self.consumer = self.node.listen(channel=self.channel, callback=self._on_message)
        self.received: list[Received] = []
        self.handled = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"fake-{hostname}", daemon=True)
        self._thread.start()

    def _on_message(self, body: dict[str, Any], message: Any) -> None:
        exchange = message.delivery_info.get("exchange", "")
        with self._changed:
            self.received.append(Received(body, dict(message.headers), exchange))
            self._changed.notify_all()
        self.node.handle_message(body, message)
        with self._changed:
            self.handled += 1  # its reply, if any, is sent
            self._changed.notify_all()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                self.conn.drain_events(timeout=0.05)

    def request(self, index: int = -1, count: int = 1) -> Received:
        """The request at ``index`` once at least ``count`` have come (waits, bounded)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, WAIT):
                raise AssertionError(f"{self.hostname} received {len(self.received)} request(s)")
            return self.received[index]

    def wait_handled(self, count: int) -> None:
        """Until ``count`` requests were handled (answered, where they want an answer)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.handled >= count, WAIT):
                raise AssertionError(f"{self.hostname} handled {self.handled} request(s)")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        # memory:// is one broker per process: the node's queue must not outlive the test.
        self.consumer.cancel()
        self.node.mailbox.get_queue(self.hostname)(self.channel).delete()
        self.conn.release()


class _Handlers(dict[str, Any]):
    """Every command has a handler: the captured reply, or an "ok" naming the command."""

    def __missing__(self, method: str) -> Any:
        return lambda state, **arguments: CANNED.get(method, {"ok": f"{method} done"})


class Workers:
    """Starts stand-in workers (unique names unless given) and stops them all at the end."""

    def __init__(self) -> None:
        self.started: list[FakeWorker] = []

    def __call__(self, hostname: str | None = None, exchange: str = "celery") -> FakeWorker:
        worker = FakeWorker(hostname or f"w-{uuid.uuid4().hex[:8]}@test", exchange)
        self.started.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.started:
            worker.stop()
