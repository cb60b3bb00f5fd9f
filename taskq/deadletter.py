"""Dead letters: messages taskq will not run again by itself, kept for inspection.

A worker buries a message here when its task used up ``task_max_deliveries`` without
finishing (a poison task), when it cannot be decoded, names an unknown task, is too big,
or its arguments do not fit the task. The message keeps its bytes and headers; one extra
header, ``taskq_dead``, says why, when, where from and by whom. ``taskq dead`` reads and
requeues them through the same kombu connection the app uses, on any broker.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .amqp import RawMessage, make_queue, still_compressed
from .exceptions import BrokerUnavailable
from .message import recover_identity
from .url import mask_url, scrub

if TYPE_CHECKING:
    from kombu import Connection, Queue

    from .app import Taskq

DELIVERIES = "taskq_deliveries"  # deliveries of this message that ended without a result
DEAD = "taskq_dead"


def deliveries_of(headers: Mapping[str, Any] | None) -> int:
    """The delivery count a message carries; anything but a small whole number counts as 0."""
    value = (headers or {}).get(DELIVERIES)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1_000_000:
        return value
    return 0


@dataclass(frozen=True)
class DeadLetter:
    """One buried message."""

    id: str | None
    task: str | None
    reason: str
    deliveries: int
    queue: str | None
    dead_at: str | None
    worker: str | None
    headers: Mapping[str, Any]
    body: bytes
    content_type: str | None
    content_encoding: str | None

    @classmethod
    def from_message(cls, message: Any) -> DeadLetter:
        headers = dict(message.headers or {})
        if not still_compressed(message):
            headers.pop("compression", None)  # kombu inflated the body it holds
        info = headers.get(DEAD)
        info = info if isinstance(info, Mapping) else _broker_death(headers)
        task_id, task = recover_identity(headers)
        body = message.body
        return cls(
            id=task_id or None,
            task=task or None,
            reason=str(info.get("reason", "unknown")),
            deliveries=deliveries_of(headers),
            queue=_opt_str(info.get("queue")),
            dead_at=_opt_str(info.get("at")),
            worker=_opt_str(info.get("worker")),
            headers=headers,
            body=body.encode("utf-8") if isinstance(body, str) else bytes(body or b""),
            content_type=message.content_type,
            content_encoding=message.content_encoding,
        )

    def body_text(self, limit: int = 4096) -> str:
        """The body for people: JSON indented, anything else as bytes (never unpickled)."""
        if self.content_type == "application/json":
            try:
                return json.dumps(json.loads(self.body), indent=2)
            except ValueError:
                pass
        more = f" ... ({len(self.body)} bytes)" if len(self.body) > limit else ""
        return repr(self.body[:limit]) + more

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "reason": self.reason,
            "deliveries": self.deliveries,
            "queue": self.queue,
            "dead_at": self.dead_at,
            "worker": self.worker,
        }


def _broker_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    """What RabbitMQ says of a message it dead-lettered itself (its ``x-death`` header):
    a queue's ``x-delivery-limit`` reached, a TTL expired, a length limit, a rejection."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list | tuple) or not deaths or not isinstance(deaths[0], Mapping):
        return {}
    last = deaths[0]  # the most recent death comes first
    why = str(last.get("reason", "unknown"))
    said = {
        "delivery_limit": "the queue's x-delivery-limit was reached (RabbitMQ dead-lettered it)",
        "expired": "its TTL expired in the queue (RabbitMQ dead-lettered it)",
        "maxlen": "the queue's length limit pushed it out (RabbitMQ dead-lettered it)",
        "rejected": "a consumer rejected it without requeue (RabbitMQ dead-lettered it)",
    }.get(why, f"RabbitMQ dead-lettered it ({why})")
    when = last.get("time")
    return {
        "reason": said,
        "queue": last.get("queue"),
        "at": when.isoformat() if isinstance(when, datetime) else when,
    }


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def dead_headers(
    reason: str, queue: str | None, deliveries: int, worker: str | None = None
) -> dict[str, Any]:
    """The headers to set on a message being buried (for ``RawMessage.of``)."""
    return {
        DELIVERIES: deliveries,
        DEAD: {
            "reason": reason,
            "queue": queue,
            "at": datetime.now(UTC).isoformat(),
            "worker": worker or socket.gethostname(),
        },
    }


class DeadLetters:
    """The app's dead-letter queue: bury, list, requeue, purge."""

    def __init__(self, app: Taskq):
        self.app = app
        self.name: str = app.conf.task_dead_letter_queue

    @property
    def queue(self) -> Queue:
        return make_queue(self.name, queue_type=self.app.conf.task_default_queue_type)

    def bury(
        self,
        message: Any,
        reason: str,
        queue: str | None,
        deliveries: int,
        worker: str | None = None,
    ) -> None:
        """Copy a received kombu message here; the caller acks the original afterwards."""
        headers = dead_headers(reason, queue, deliveries, worker)
        compression = (message.headers or {}).get("compression")
        if compression and still_compressed(message):
            # The body is kept as it came, compressed; the header moves into the record, so
            # that nothing reading this queue inflates it (a bomb, or a body that does not
            # decompress at all). A requeue puts it back.
            headers[DEAD]["compression"] = compression
            headers["compression"] = None
        self.app.amqp.send_raw(RawMessage.of(message, **headers), self.queue)

    def list(self, limit: int | None = None) -> list[DeadLetter]:
        found: list[DeadLetter] = []

        def keep(letter: DeadLetter) -> bool:
            found.append(letter)
            return False  # leave it in the queue

        self._scan(keep, limit)
        return found

    def get(self, task_id: str) -> DeadLetter | None:
        found: list[DeadLetter] = []

        def match(letter: DeadLetter) -> bool:
            if letter.id == task_id and not found:
                found.append(letter)
            return False

        self._scan(match, None)
        return found[0] if found else None

    def requeue(self, ids: Iterable[str] | None = None) -> int:
        """Send buried messages back to their queue with a fresh delivery count."""
        wanted = None if ids is None else set(ids)
        router = self.app.amqp.router

        def take(letter: DeadLetter) -> bool:
            if wanted is not None and letter.id not in wanted:
                return False
            target = router.queue(letter.queue) if letter.queue else router.default_queue
            headers = {k: v for k, v in letter.headers.items() if k not in (DEAD, DELIVERIES)}
            info = letter.headers.get(DEAD)
            if isinstance(info, Mapping) and info.get("compression"):
                headers["compression"] = info["compression"]  # the body is still compressed
            raw = RawMessage(
                body=letter.body,
                content_type=letter.content_type,
                content_encoding=letter.content_encoding,
                headers=headers,
                correlation_id=letter.id,
            )
            self.app.amqp.send_raw(raw, target)
            return True

        return self._scan(take, None)

    def purge(self) -> int:
        with self._connection() as conn:
            bound = self.queue(conn.default_channel)
            bound.declare()
            count: int = bound.purge() or 0
            return count

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        conn = self.app.connection()
        try:
            conn.ensure_connection(max_retries=0)
        except Exception as exc:
            conn.release()
            raise BrokerUnavailable(
                f"Cannot reach the broker at {mask_url(self.app.broker_url)}: {scrub(str(exc))}"
            ) from exc
        with conn:
            yield conn

    def _scan(self, visit: Callable[[DeadLetter], bool], limit: int | None) -> int:
        """Take messages one by one; ``visit`` True acks one, the others are put back.

        The queue is empty of them by then, and each broker's requeue puts a message at
        the back (Redis, memory), or at its old place (RabbitMQ, SQLite), so putting them
        back in the order taken keeps the queue's order. Should the scan die half-way,
        the broker returns what it held (RabbitMQ at once, Redis after its timeout).

        A scan reads at most the letters there were when it began: a letter requeued by
        this scan and buried again meanwhile (a task still unknown to the workers) is
        left for the next one, not taken round and round.
        """
        taken = 0
        kept: list[Any] = []
        with self._connection() as conn:
            bound = self.queue(conn.default_channel)
            bound.declare()
            # Redis has no empty queue to declare passively: declare it as it is.
            there = int(bound.queue_declare().message_count)
            most = there if limit is None else min(limit, there)
            try:
                while taken + len(kept) < most:
                    message = bound.get(no_ack=False, accept=None)
                    if message is None:
                        break
                    if visit(DeadLetter.from_message(message)):
                        message.ack()
                        taken += 1
                    else:
                        kept.append(message)
            finally:
                for message in kept:
                    message.reject(requeue=True)
        return taken
