"""The strategy map: task name -> the handler that admits its messages, built at start-up.

Each handler owns what is fixed per task (its ack policy and rate-limit bucket), so the
per-message work is a dict lookup and a few checks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from kombu import Queue
from kombu.utils.limits import TokenBucket

from ..compression import inflate
from ..exceptions import ConfigurationError, MalformedMessage, SecurityError
from ..message import TaskMessage, decode_body, parse, recover_identity
from ..serializers import AUTH, CONTENT_TYPES
from ..signals import task_received as received
from .delayed import SHORTEST_PARK
from .keeper import Keeper
from .redelivery import Redelivery
from .request import AckPolicy, Request

if TYPE_CHECKING:
    from ..app import Taskq
    from ..security import Verifier
    from .monitor import Monitor

Handler = Callable[[TaskMessage, Any, Queue], None]
logger = logging.getLogger(__name__)
SIGNED = CONTENT_TYPES[AUTH]
RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")


class Reserver(Protocol):
    """What a handler needs from the consumer."""

    def revoked_now(self, request: Request) -> bool: ...

    # Read-only to the handlers (properties, so the consumer's own types may be narrower).
    @property
    def redelivery(self) -> Redelivery: ...

    @property
    def keeper(self) -> Keeper: ...

    @property
    def monitor(self) -> Monitor: ...

    @property
    def fixed_prefetch(self) -> bool: ...

    def reserve(self, request: Request) -> None: ...

    def hold(
        self,
        delay: float,
        request: Request,
        then: Callable[[Request], None],
        raise_prefetch: bool = True,
    ) -> None: ...


def parse_rate(rate: str | float | None) -> float | None:
    """'10/s', '100/m', '5/h' or a number per second -> tasks per second (None: no limit)."""
    if rate is None or rate == "" or rate == 0:
        return None
    if isinstance(rate, int | float):
        return float(rate)
    match = RATE.match(rate)
    if not match:
        raise ConfigurationError(f"Invalid rate limit {rate!r}: use e.g. '10/s', '100/m' or '5/h'")
    per = {"s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    value = float(match.group(1)) / per
    return value or None


def read_message(
    raw: Any, accept: frozenset[str], limit: int | None, verifier: Verifier | None = None
) -> TaskMessage:
    """The task message in a kombu message; ``MalformedMessage`` says what is wrong.

    A signed message (``application/data``, when ``accept`` takes it) is checked by
    ``verifier`` first; its signed body is then decoded with the serializers the verifier
    allows, never with one the unsigned envelope names alone.
    """
    body = raw.body or b""
    if limit is not None and len(body) > limit:
        raise MalformedMessage(
            f"the body is {len(body)} bytes, over task_max_message_size ({limit})"
        )
    held = getattr(raw, "held_compression", None)
    if held:  # taskq's transports leave it to us, to inflate within the limit
        body = inflate(body, held, limit)
    elif raw.errors:  # kombu's own transports inflate it themselves
        raise MalformedMessage(f"body could not be decompressed: {raw.errors[0][1]!r}")
    content_type, encoding = raw.content_type, raw.content_encoding
    if content_type == SIGNED and content_type in accept:
        body, content_type, encoding, accept = _verified(body, verifier, raw.headers)
    return parse(raw.headers, decode_body(body, content_type, encoding, accept))


def _verified(
    body: Any, verifier: Verifier | None, headers: Any
) -> tuple[bytes, str, str, frozenset[str]]:
    task_id, name = recover_identity(headers)
    if verifier is None:  # accept_content names auth, yet setup_security() never ran
        raise MalformedMessage("a signed message, but this worker has no certificates", task_id)
    try:
        envelope = verifier.open(body)
    except SecurityError as exc:
        raise MalformedMessage(f"refused: {exc}", task_id, name) from None
    return envelope.body, envelope.content_type, envelope.content_encoding, verifier.accept


def build_strategies(app: Taskq, consumer: Reserver, hostname: str) -> dict[str, Handler]:
    return {name: strategy_for(app, consumer, hostname, name) for name in app.tasks}


def strategy_for(app: Taskq, consumer: Reserver, hostname: str, name: str) -> Handler:
    """The handler of one task, from its options as they are now (a rate_limit or
    time_limit command changes them, then builds it again)."""
    task = app.tasks[name]
    limits_off = app.conf.worker_disable_rate_limits
    rate = (
        None
        if limits_off
        else parse_rate(task.options.rate_limit or app.conf.task_default_rate_limit)
    )
    return _handler(app, consumer, hostname, AckPolicy.for_task(app, task), rate)


def _handler(
    app: Taskq, consumer: Reserver, hostname: str, policy: AckPolicy, rate: float | None
) -> Handler:
    bucket = TokenBucket(rate, capacity=1) if rate else None
    horizon: float | None = app.conf.worker_eta_horizon
    info = logger.isEnabledFor(logging.INFO)  # asked once: the level is set at start
    monitor = consumer.monitor

    def admit(request: Request) -> None:
        if consumer.revoked_now(request):
            request.revoke("revoked")
        elif request.expired():
            request.revoke("expired")
        elif bucket is not None and not bucket.can_consume(1):
            consumer.hold(bucket.expected_time(1), request, admit, raise_prefetch=False)
        else:
            consumer.reserve(request)

    def handle(message: TaskMessage, raw: Any, queue: Queue) -> None:
        request = Request(
            app, message, raw, policy, hostname, queue, consumer.redelivery, consumer.keeper,
            monitor,
        )  # fmt: skip
        if not request.admit():
            return
        monitor.received(request)
        if received.receivers:
            received.send(sender=consumer, request=request)
        if info:
            logger.info("Task %r received", request)
        wait = (message.eta - datetime.now(UTC)).total_seconds() if message.eta else 0.0
        if wait <= 0 or request.expired():
            admit(request)
            return
        # On quorum queues the prefetch cannot grow for held tasks, so the broker keeps
        # any due a second or more ahead (delayed.py); elsewhere, those past the horizon.
        keep = SHORTEST_PARK if consumer.fixed_prefetch else horizon
        if keep is not None and wait > keep and request.park():
            return
        if horizon is None or wait <= horizon:
            consumer.hold(wait, request, admit)
        else:
            # No parking on this broker: hold it until the horizon, then give it back, so
            # no message stays unacked for long (RabbitMQ closes such channels).
            consumer.hold(horizon, request, Request.give_back)

    return handle
