"""The worker's link to the broker: connect (with retries), set up QoS and consumers, close.

``open_link`` is what the consumer's loop calls on start and after every lost connection;
it returns everything the loop needs from one connection, or raises. How long to wait
between two such calls, and what to log, is the loop's business (backoff.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kombu import Consumer as KombuConsumer
from kombu import Queue
from kombu.common import QoS

from ..backoff import Incident, describe
from ..exceptions import BrokerUnavailable
from ..url import mask_url
from .delayed import bind_delay_queues, uses_quorum

if TYPE_CHECKING:
    from ..app import Taskq

logger = logging.getLogger(__name__)

# Called as on_message(raw, queue=...) and on_decode_error(raw, exc, queue=...).
OnMessage = Callable[..., None]
OnDecodeError = Callable[..., None]


@dataclass(frozen=True)
class LinkSpec:
    """What the worker asks of each connection."""

    queues: tuple[Queue, ...]
    prefetch_count: int
    hostname: str
    watch: tuple[int, ...] = ()  # files whose input ends a wait for the broker


@dataclass(frozen=True)
class Link:
    """One working connection, set up: its QoS, its consumers, and how to wake its wait."""

    connection: Any
    qos: QoS
    consumers: tuple[Any, ...]
    wake: Callable[[], None] | None  # None: the transport cannot be woken (polled instead)
    fixed_prefetch: bool = False  # quorum queues: the count cannot grow for held ETA tasks


class Stopped(OSError):
    """The worker was asked to stop while it was connecting."""


class SetUpRefused(OSError):
    """Connected, but the broker refused a command needed to start consuming."""


def open_link(
    app: Taskq,
    spec: LinkSpec,
    on_message: OnMessage,
    on_decode_error: OnDecodeError,
    between_attempts: Callable[[], None],
    first: bool,
    stopping: Callable[[], bool],
) -> Link:
    """Connect (retrying as the settings say), then set the connection up for consuming."""
    conn = app.connection()
    try:
        _ensure_connected(app, conn, between_attempts, first, stopping)
        try:
            return _set_up(app, conn, spec, on_message, on_decode_error)
        except OSError:
            raise
        except Exception as exc:
            # Both kinds are retried with backoff by the consumer's loop, which only knows
            # OSError until it holds a connection: say which one it was.
            if isinstance(exc, tuple(conn.connection_errors)):
                raise ConnectionResetError(f"lost while setting up: {describe(exc)}") from exc
            # Connected, but the broker refused what consuming needs (Redis out of memory,
            # a full disk under SQLite): a fault to wait out, like a lost link.
            raise SetUpRefused(f"it refused to set up consuming: {describe(exc)}") from exc
    except BaseException:
        close_quietly(conn)
        raise


def _ensure_connected(
    app: Taskq,
    conn: Any,
    between_attempts: Callable[[], None],
    first: bool,
    stopping: Callable[[], bool],
) -> None:
    conf = app.conf
    retry = conf.broker_connection_retry_on_startup if first else conf.broker_connection_retry
    url = mask_url(app.broker_url)
    incident = Incident(logger, f"Cannot connect to {url}")

    def on_error(exc: BaseException, interval: float) -> None:
        incident.failed(exc, f"Trying again in {interval:.1f} s")

    try:
        conn.ensure_connection(
            errback=on_error,
            max_retries=conf.broker_connection_max_retries if retry else 1,
            interval_start=0.5,
            interval_step=1.0,
            interval_max=5.0,
            callback=between_attempts,
        )
    except Exception as exc:
        if stopping():
            raise Stopped("stopped while connecting") from exc
        raise BrokerUnavailable(f"Cannot connect to the broker at {url}: {exc}") from exc
    if incident.open:
        logger.warning("Connected to %s after %d failed attempt(s)", url, incident.attempts)


def _set_up(
    app: Taskq, conn: Any, spec: LinkSpec, on_message: OnMessage, on_decode: OnDecodeError
) -> Link:
    channel = conn.default_channel
    # A transport that can be woken (taskq's Redis and RabbitMQ) lets a finished task end
    # the wait for the broker at once; the others are polled briefly while tasks run. The
    # pool's reports (prefork) and the signal inbox are read on the consumer's thread, so
    # the same wait watches their files.
    enable_wakeup = getattr(conn.transport, "enable_wakeup", None)
    wake = enable_wakeup(spec.watch) if enable_wakeup is not None else None
    # taskq's RabbitMQ sends the acks of one turn of the loop together.
    defer_acks = getattr(conn.transport, "defer_acks", None)
    if defer_acks is not None:
        defer_acks(channel)
    # Global (per-channel) QoS: RabbitMQ applies a non-global basic.qos only to consumers
    # started after it, so raising the count while ETA tasks are held would never reach the
    # consumers already running. This worker has one channel, so global is the worker's
    # limit. Redis and the embedded broker ignore the flag. Quorum queues refuse it: there
    # the limit is per consumer, and ETA tasks park in the delay queues (delayed.py).
    quorum = uses_quorum(app, conn, spec.queues)
    if quorum:
        channel.delayed_queues = bind_delay_queues(app, conn, spec.queues)
    qos = QoS(
        lambda prefetch_count: channel.basic_qos(0, prefetch_count, not quorum),
        spec.prefetch_count,
    )
    qos.update()
    # One kombu consumer per queue, so each message knows the queue it came from: returns
    # and dead letters name it, whatever exchange delivered the message.
    consumers = [consume_from(channel, source, on_message, on_decode) for source in spec.queues]
    return Link(conn, qos, tuple(consumers), wake, fixed_prefetch=quorum)


def consume_from(
    channel: Any, source: Queue, on_message: OnMessage, on_decode: OnDecodeError
) -> Any:
    """A started kombu consumer of ``source`` on ``channel`` (declared first)."""
    consumer = KombuConsumer(
        channel,
        [source],
        on_message=functools.partial(on_message, queue=source),
        # kombu re-raises a body it could not decompress unless told otherwise, which
        # would lose the message; the same handler takes it instead.
        on_decode_error=functools.partial(on_decode, queue=source),
        accept=None,
        auto_declare=True,
    )
    consumer.consume()
    return consumer


def cancel_consumers(consumers: Sequence[Any]) -> None:
    for consumer in consumers:
        try:
            consumer.cancel()
        except Exception as exc:
            logger.debug("cancel failed: %r", exc)


def close_quietly(conn: Any) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except Exception as exc:
        logger.debug("close failed: %r", exc)


def connection_errors(conn: Any) -> tuple[type[BaseException], ...]:
    if conn is None:
        return (OSError,)
    return (OSError, *conn.connection_errors, *conn.channel_errors)
