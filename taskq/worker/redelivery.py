"""Redelivery: what the consumer does with a message it will not simply ack.

Every such move is *copy, then ack*: the copy is published (with publisher confirms on
AMQP) before the original is acknowledged, so a crash in between duplicates a message but
never loses one. Copies carry the delivery count in the ``taskq_deliveries`` header,
which is how the count survives workers that die: brokers only say "redelivered", not
how often, and a plain requeue would keep no count at all.

* ``give_back``: a message this worker took but did not finish through no fault of the
  task (shutdown, a far-future ETA): same count.
* ``count_failed_delivery``: the delivery ended without a result (the process died, the
  task asked to be requeued): count + 1, or buried once the limit is reached.
* ``bury``: to the dead-letter queue, with the reason.
* ``park``: an ETA message goes to the broker until due: the parked set on Redis, the
  delay queues on RabbitMQ when the worker consumes quorum queues (delayed.py).

All of it runs on the consumer thread (it acks kombu messages).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..amqp import RawMessage, headers_of
from ..deadletter import DELIVERIES, DeadLetters, deliveries_of
from ..exceptions import MalformedMessage
from ..message import recover_identity

if TYPE_CHECKING:
    from kombu import Queue

    from ..app import Taskq

logger = logging.getLogger(__name__)

DEFAULT_BURY_ATTEMPTS = 5  # when task_max_deliveries is None (no cap on deliveries)
UNBURIED_KEPT = 10_000  # identities remembered, the oldest forgotten first


@runtime_checkable
class ParkingChannel(Protocol):
    """A kombu channel that can keep a message aside until it is due (taskq's Redis)."""

    def park(self, message: Any, queue: str, due: float, headers: dict[str, Any]) -> None: ...


@runtime_checkable
class CopyingChannel(Protocol):
    """A kombu channel that queues a copy ahead of a later ack of the original (RabbitMQ).

    A copy through the publisher waits for its confirm before the ack: a worker killed in
    that wait leaves the original and its copy both to run, possibly at the same time.
    """

    def send_copy(
        self, queue: str, body: bytes, headers: dict[str, Any], properties: dict[str, Any]
    ) -> None: ...


@runtime_checkable
class DelayingChannel(Protocol):
    """A kombu channel that can send a copy through the broker's delay queues (RabbitMQ,
    when the worker bound the queue to them: taskq/worker/delayed.py)."""

    def can_delay(self, queue: str) -> bool: ...

    def delay_copy(
        self,
        queue: str,
        due: float,
        body: bytes,
        headers: dict[str, Any],
        properties: dict[str, Any],
    ) -> None: ...


def was_redelivered(raw: Any) -> bool:
    """The broker delivered this message before, to a consumer that did not settle it."""
    info = getattr(raw, "delivery_info", None) or {}
    return bool(info.get("redelivered"))


class Redelivery:
    def __init__(self, app: Taskq, hostname: str):
        self.app = app
        self.hostname = hostname
        self.dead = DeadLetters(app)
        # Failed attempts to bury a message, by its identity: a burial that keeps failing
        # uses up deliveries like any other, so that it cannot loop for ever.
        self.max_attempts: int = app.conf.task_max_deliveries or DEFAULT_BURY_ATTEMPTS
        self._unburied: OrderedDict[str, int] = OrderedDict()
        self.held_unburied: list[Any] = []

    def give_back(self, raw: Any, queue: Queue, deliveries: int) -> None:
        copy = RawMessage.of(raw, **{DELIVERIES: deliveries or None})
        channel = getattr(raw, "channel", None)
        send: Callable[[], None]
        if isinstance(channel, CopyingChannel):
            headers, properties = dict(copy.headers), copy.properties()
            send = functools.partial(channel.send_copy, queue.name, copy.body, headers, properties)
        else:
            send = functools.partial(self.app.amqp.send_raw, copy, queue)
        if self._move(raw, send, f"return it to {queue.name}"):
            logger.debug("Returned a message to %s (deliveries so far: %d)", queue.name, deliveries)

    def can_park(self, raw: Any, queue: Queue) -> bool:
        channel = getattr(raw, "channel", None)
        if isinstance(channel, DelayingChannel):
            return channel.can_delay(queue.name)
        return isinstance(channel, ParkingChannel)

    def park(self, raw: Any, queue: Queue, due: float, deliveries: int) -> None:
        """Hand an ETA message to the broker to keep until ``due`` (epoch s)."""
        channel = raw.channel
        if isinstance(channel, DelayingChannel):
            copy = RawMessage.of(raw, **{DELIVERIES: deliveries or None})
            send = functools.partial(channel.delay_copy, queue.name, due, copy.body,
                                     dict(copy.headers), copy.properties())  # fmt: skip
            self._move(raw, send, "park it in the delay queues")
            return
        # The parked copy is kombu's stored form, body still compressed: keep that header.
        headers = headers_of(raw, keep_compression=True, **{DELIVERIES: deliveries or None})
        self._move(raw, lambda: channel.park(raw, queue.name, due, headers), "park it")

    def bury(self, raw: Any, queue: Queue | None, reason: str, deliveries: int) -> None:
        name = queue.name if queue is not None else None
        dead = self.dead

        def send() -> None:
            dead.bury(raw, reason, name, deliveries, self.hostname)

        key = _identity(raw)
        failed = self._unburied.get(key, 0)
        if failed + 1 >= self.max_attempts:
            # The last attempt: if it fails too, the message is held rather than given back
            # to loop for ever (the count cannot be written into a copy that cannot be sent).
            if self._try(send, f"move it to the dead-letter queue {dead.name!r}"):
                self._buried(raw, key, name, reason)
            else:
                self._hold_unburied(raw, key, reason)
            return
        if self._move(raw, send, f"move it to the dead-letter queue {dead.name!r}"):
            self._buried(raw, key, name, reason)
        else:
            self._unburied[key] = failed + 1
            self._unburied.move_to_end(key)
            while len(self._unburied) > UNBURIED_KEPT:
                self._unburied.popitem(last=False)

    def _buried(self, raw: Any, key: str, queue: str | None, reason: str) -> None:
        self._unburied.pop(key, None)
        _settle(raw, raw.ack)
        send_acks_now(raw)
        logger.error("Dead-lettered a message from %s: %s. See `taskq dead list`.", queue, reason)

    def _hold_unburied(self, raw: Any, key: str, reason: str) -> None:
        self._unburied.pop(key, None)
        self.held_unburied.append(raw)  # unacked: the broker keeps it, this worker holds it
        logger.error(
            "Could not move a message to the dead-letter queue %r %d times (it is there "
            "because %s): holding it unacknowledged, so that nothing is lost; it goes back "
            "to the broker when this worker stops. Check the dead-letter queue.",
            self.dead.name,
            self.max_attempts,
            reason,
        )

    def bury_unrunnable(self, raw: Any, queue: Queue, exc: Exception) -> None:
        """A message no worker can run as it is: keep it as a dead letter, with the reason.

        Its FAILURE, when it has a task id, is the consumer's to store (off its thread).
        """
        reason = exc.reason if isinstance(exc, MalformedMessage) else f"{type(exc).__name__}: {exc}"
        self.bury(raw, queue, reason, deliveries_of(raw.headers))

    def _move(self, raw: Any, send: Callable[[], None], what: str) -> bool:
        if not self._try(send, what):
            # Given back, the message comes back from the broker; nothing is lost.
            _settle(raw, lambda: raw.reject(requeue=True))
            return False
        _settle(raw, raw.ack)
        send_acks_now(raw)
        return True

    def _try(self, send: Callable[[], None], what: str) -> bool:
        try:
            send()
        except Exception as exc:
            logger.error("Could not %s (%r); leaving it to the broker", what, exc)
            return False
        return True


def _identity(raw: Any) -> str:
    """Which message this is, across its redeliveries (no delivery tag survives them)."""
    task_id, _ = recover_identity(getattr(raw, "headers", None))
    if task_id:
        return f"id:{task_id}"
    body = raw.body or b""
    body = body.encode("utf-8", "replace") if isinstance(body, str) else bytes(body)
    # A digest of both ends and the length: cheap even for a very large body.
    digest = hashlib.sha1(body[:4096] + body[-4096:], usedforsecurity=False).hexdigest()
    return f"body:{len(body)}:{digest}"


def _settle(raw: Any, how: Callable[[], None]) -> None:
    if getattr(raw, "acknowledged", False):
        return
    try:
        how()
    except Exception as exc:
        # The connection that delivered it is gone: the broker already has it back.
        logger.warning("Could not settle a message: %r", exc)


def send_acks_now(raw: Any) -> None:
    """Send the acks noted on ``raw``'s channel now, not at the end of the consumer's turn.

    For acks whose timing is a promise: a copied message's (until it goes, a crash leaves
    the original and its copy both to run) and an early ack (at most once).
    """
    flush = getattr(getattr(raw, "channel", None), "flush_acks", None)
    if flush is None:
        return
    try:
        flush()
    except Exception as exc:
        logger.warning("Could not settle a message: %r", exc)
