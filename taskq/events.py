"""Events: Celery's monitoring stream, sent by workers (and clients) and read by monitors.

One JSON object per event on the exchange ``celeryev`` (topic on RabbitMQ, fanout on
Redis), routing key the event type with dots (``task-succeeded`` → ``task.succeeded``),
transient, with the sender's node name in the ``hostname`` header. Every event carries
``type``, ``hostname``, ``timestamp``, ``utcoffset``, ``pid`` and a Lamport ``clock``. A
worker batches its task events and sends them as one JSON array under ``task.multi``,
so a busy worker sends one message per loop turn, not one per event; receivers take an
array or an object. So ``celery events``, Flower and Celery's ``EventReceiver`` read
taskq's events, and taskq's receiver reads Celery's.

Shared by client and worker: the worker wires the dispatcher into its loop
(worker/monitor.py); ``taskq events`` and tests use the receiver.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kombu import Consumer, Exchange, Producer, Queue
from kombu.clocks import LamportClock

from .exceptions import ConfigurationError
from .message import TaskMessage, args_repr, kwargs_repr

if TYPE_CHECKING:
    from .amqp import Route
    from .app import Taskq

logger = logging.getLogger("taskq.events")

Event = dict[str, Any]
Handler = Callable[[Event], object]
TASK = "task-"  # a worker sends events of this prefix as arrays, others one by one
MULTI_KEY = "task.multi"
FLUSH_SECONDS = 0.1  # how long a buffered event may wait: what a monitor lags behind
BATCH_MAX = 256  # events per array at most (Celery's workers send up to 24; any size is read)
BUFFER_MAX = 10_000  # events kept while the broker cannot take them; the oldest go first
TRANSIENT = 1
JSON = "application/json"
# Events are plain JSON values (str, numbers, None, lists, dicts): no cycles to look for.
_ENCODE = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode
SW_IDENT = "py-taskq"


def utcoffset() -> float:
    """The local offset from UTC in hours, positive west of Greenwich (Celery's sign)."""
    offset = time.altzone if time.daylight and time.localtime().tm_isdst else time.timezone
    return offset / 3600


def iso_or_none(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def routing_key(event_type: str) -> str:
    return event_type.replace("-", ".")


def client_hostname() -> str:
    """The sender name of a process that is not a worker, as Celery's clients name theirs."""
    return f"gen{os.getpid()}@{socket.gethostname()}"


def event_exchange(app: Taskq, connection: Any) -> Exchange:
    # Redis has no topic exchanges that fan out to subscribers: kombu's fanout is PUBLISH,
    # which is what Celery's receivers subscribe to there.
    kind = "fanout" if connection.transport.driver_type == "redis" else "topic"
    return Exchange(app.conf.event_exchange, type=kind, delivery_mode=TRANSIENT)


def fans_out(connection: Any) -> bool:
    """Whether a message on this connection can reach other processes' subscribers."""
    return "fanout" in connection.transport.implements.exchange_type


def check_serializer(app: Taskq) -> None:
    if app.conf.event_serializer != "json":
        raise ConfigurationError(
            f"event_serializer={app.conf.event_serializer!r}: taskq sends events as JSON only "
            "(Celery's default, what Flower and `celery events` read); set it to 'json'."
        )


class EventDispatcher:
    """Makes events and publishes them on one connection.

    Unbuffered (a client), ``send`` publishes at once. Buffered (a worker), ``send`` only
    appends to a buffer, from any thread, and ``flush`` publishes the buffer from the one
    thread that owns the connection: task events as arrays under ``task.multi``, others
    one by one, once ``FLUSH_SECONDS`` passed since the last flush or ``BATCH_MAX`` events
    wait. Task events are dropped while ``task_events`` is false.
    """

    def __init__(
        self,
        app: Taskq,
        hostname: str,
        *,
        clock: LamportClock | None = None,
        buffered: bool = False,
        task_events: bool = True,
    ):
        check_serializer(app)
        self.app = app
        self.hostname = hostname
        self.clock = clock or LamportClock()
        self.buffered = buffered
        self.task_events = task_events
        self.utcoffset = utcoffset()
        self._buffer: deque[Event] = deque(maxlen=BUFFER_MAX)
        self._flushed = 0.0  # when the buffer was last published (monotonic)
        self._pid = os.getpid()  # a buffered dispatcher lives in one process (a worker's)
        self._producer: Producer | None = None

    # -- the connection
    def connect(self, connection: Any) -> bool:
        """Publish on ``connection`` from now on; False when its transport cannot fan out."""
        self._producer = None
        if not fans_out(connection):
            return False
        channel = connection.channel()
        exchange = event_exchange(self.app, connection)
        self._producer = Producer(channel, exchange=exchange, serializer="json")
        exchange(channel).declare()
        return True

    def disconnect(self) -> None:
        self._producer = None  # the channel closes with its connection

    # -- sending
    def event(self, event_type: str, **fields: Any) -> Event:
        return {
            "hostname": self.hostname,
            "utcoffset": self.utcoffset,
            "pid": os.getpid(),
            "clock": self.clock.forward(),
            **fields,
            "timestamp": fields.get("timestamp") or time.time(),
            "type": event_type,
        }

    def send(self, event_type: str, **fields: Any) -> None:
        if event_type.startswith(TASK) and not self.task_events:
            return
        if self.buffered:
            self.append(event_type, fields)
        else:
            self.publish(routing_key(event_type), self.event(event_type, **fields))

    def append(self, event_type: str, fields: Event) -> None:
        """Buffer ``fields`` (taken over, not copied) as an event: the worker's hot path."""
        fields["hostname"] = self.hostname
        fields["utcoffset"] = self.utcoffset
        fields["pid"] = self._pid
        fields["clock"] = self.clock.forward()
        fields["timestamp"] = time.time()
        fields["type"] = event_type
        self._buffer.append(fields)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def due(self) -> bool:
        """Whether ``flush`` would publish now."""
        buffer = self._buffer
        return bool(buffer) and (
            len(buffer) >= BATCH_MAX or time.monotonic() - self._flushed >= FLUSH_SECONDS
        )

    def flush(self, force: bool = False) -> None:
        """Publish the buffer if it is ``due`` (or ``force``); what could not be sent stays.

        A busy worker so sends one message per few hundred events, not one per turn of its
        loop: each publish costs the loop a round trip to the broker.
        """
        if not (force or self.due()):
            return
        self._flushed = time.monotonic()
        buffer = self._buffer
        while buffer and self._producer is not None:
            chunk = [buffer.popleft() for _ in range(min(BATCH_MAX, len(buffer)))]
            try:
                self._publish_chunk(chunk)
            except Exception:
                buffer.extendleft(reversed(chunk))
                raise

    def _publish_chunk(self, chunk: list[Event]) -> None:
        tasks = [e for e in chunk if e["type"].startswith(TASK)]
        if tasks:
            self.publish(MULTI_KEY, tasks)
        for event in chunk:
            if not event["type"].startswith(TASK):
                self.publish(routing_key(event["type"]), event)

    def publish(self, key: str, body: Event | list[Event]) -> None:
        producer = self._producer
        if producer is None:
            return  # no broker that can carry events: monitoring is best effort
        # Encoded here, once, by a plain encoder: through kombu's serializer registry a
        # worker's event stream cost its loop half as much again.
        producer.publish(
            _ENCODE(body),
            routing_key=key,
            content_type=JSON,
            content_encoding="utf-8",
            headers={"hostname": self.hostname},
            delivery_mode=TRANSIENT,
            retry=False,
        )


def send_task_sent(app: Taskq, dispatcher: EventDispatcher, msg: TaskMessage, route: Route) -> None:
    """``task-sent`` for a task just published, on a pooled publishing connection.

    Best effort, as every event: the task is on its way whatever happens here, so a failure
    is logged, never raised to the caller.
    """
    event = dispatcher.event(
        "task-sent",
        uuid=msg.id,
        root_id=msg.root_id or msg.id,
        parent_id=msg.parent_id,
        name=msg.task,
        args=args_repr(msg),
        kwargs=kwargs_repr(msg),
        retries=msg.retries,
        eta=iso_or_none(msg.eta),
        expires=iso_or_none(msg.expires),
        queue=route.queue.name if route.queue is not None else route.routing_key,
        exchange=route.exchange,
        routing_key=route.routing_key,
    )
    try:
        with app.amqp.producers.acquire(block=True, timeout=10) as producer:
            if not fans_out(producer.connection):
                return  # no monitor could receive it (the embedded broker)
            exchange = event_exchange(app, producer.connection)
            producer.publish(
                event, exchange=exchange, routing_key="task.sent", serializer="json",
                headers={"hostname": dispatcher.hostname}, delivery_mode=TRANSIENT,
                declare=[exchange], retry=False,
            )  # fmt: skip
    except Exception as exc:
        logger.warning("The task-sent event of %s[%s] was not sent: %r", msg.task, msg.id, exc)


class EventReceiver:
    """Reads events: a queue of its own, bound to every event, gone when it disconnects.

    ``handlers`` maps event types to callables; ``"*"`` gets the types with no handler of
    their own. A worker's arrays of task events arrive here one event at a time.
    """

    def __init__(
        self,
        app: Taskq,
        connection: Any,
        handlers: Mapping[str, Handler],
        *,
        key: str = "#",
        clock: LamportClock | None = None,
    ):
        check_serializer(app)
        self.app = app
        self.connection = connection
        self.handlers = dict(handlers)
        self.clock = clock or LamportClock()
        c = app.conf
        exchange = event_exchange(app, connection)
        self.queue = Queue(
            f"{c.event_queue_prefix}.{uuid.uuid4()}",
            exchange=exchange,
            routing_key=key,
            durable=False,
            auto_delete=True,
            exclusive=True,
            message_ttl=c.event_queue_ttl,
            expires=c.event_queue_expires,
        )

    def capture(
        self,
        limit: int | None = None,
        timeout: float | None = None,
        wakeup: bool = True,
    ) -> int:
        """Dispatch events until ``limit`` were read or ``timeout`` seconds passed; the count.

        ``wakeup`` asks every worker for a heartbeat at once, as Celery's receiver does,
        so a monitor sees the fleet without waiting for the next beat.
        """
        seen = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in self.itercapture(wakeup=wakeup, deadline=deadline):
            seen += 1
            if limit is not None and seen >= limit:
                break
        return seen

    def itercapture(self, wakeup: bool = True, deadline: float | None = None) -> Iterator[Event]:
        if not fans_out(self.connection):
            raise ConfigurationError(
                "Events need a broker that can broadcast (Redis or RabbitMQ); this "
                "broker's transport cannot."
            )
        got: deque[Event] = deque()
        channel = self.connection.channel()
        consumer = Consumer(
            channel, queues=[self.queue], callbacks=[lambda body, m: got.extend(_events(body))],
            accept=["json"], no_ack=True,
        )  # fmt: skip
        with consumer:
            if wakeup:
                self.app.control.broadcast("heartbeat", connection=self.connection)
            while True:
                while got:
                    event = got.popleft()
                    self.dispatch(event)
                    yield event
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                try:
                    self.connection.drain_events(timeout=1.0 if left is None else min(left, 1.0))
                except TimeoutError:
                    continue

    def dispatch(self, event: Event) -> None:
        if event.get("type") != "task-sent":  # clients do not keep their clocks in step
            self.clock.adjust(int(event.get("clock") or 0))
        handler = self.handlers.get(str(event.get("type"))) or self.handlers.get("*")
        if handler is not None:
            handler(event)


def _events(body: Any) -> list[Event]:
    if isinstance(body, list):
        return [e for e in body if isinstance(e, dict)]
    return [body] if isinstance(body, dict) else []
