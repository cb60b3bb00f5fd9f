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

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from kombu import Consumer, Exchange, Producer, Queue
from kombu.clocks import LamportClock

from .exceptions import ConfigurationError
from .message import TaskMessage, args_repr, kwargs_repr

if TYPE_CHECKING:
    from .amqp import Route
    from .app import Taskq

logger = logging.getLogger(__name__)

Event = dict[str, Any]
Handler = Callable[[Event], object]
TASK = "task-"  # a worker sends events of this prefix as arrays, others one by one
MULTI_KEY = "task.multi"
FLUSH_SECONDS = 0.1  # how long a buffered event may wait: what a monitor lags behind
BATCH_MAX = 512  # events per array at most (Celery's workers send up to 24; any size is read)
BUFFER_MAX = 10_000  # events kept while the broker cannot take them; the oldest go first
TRANSIENT = 1
JSON = "application/json"
# Events are plain JSON values (str, numbers, None, lists, dicts): no cycles to look for.
_ENCODE = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode
_STRING = encode_basestring_ascii  # a str as a JSON string, as the encoder writes it
SW_IDENT = "py-taskq"


def utcoffset() -> float:
    """The local offset from UTC in hours, positive west of Greenwich (Celery's sign)."""
    offset = time.altzone if time.daylight and time.localtime().tm_isdst else time.timezone
    return offset / 3600


def iso_or_none(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def json_text(value: str | None) -> str:
    """A str or None as JSON: what a worker's hot events write field by field."""
    return "null" if value is None else _STRING(value)


def json_fields(fields: Mapping[str, Any]) -> str:
    """``fields`` as the members of a JSON object, each after a comma (or nothing)."""
    return "," + _ENCODE(fields)[1:-1] if fields else ""


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
    thread that owns the connection: task events as arrays under ``task.multi`` (a full
    array at once, the rest once ``FLUSH_SECONDS`` passed since the last flush), others
    one by one. Task events are dropped while ``task_events`` is false.

    A task event is written as JSON text when it happens (``task``): its fixed members
    are text made once, the rest formatted in place, which costs the worker's loop a
    third of building a dict and encoding it at the flush.
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
        self._tasks: deque[str] = deque(maxlen=BUFFER_MAX)  # task events, as JSON text
        self._others: deque[Event] = deque(maxlen=BUFFER_MAX)
        self._flushed = 0.0  # when the buffer was last published (monotonic)
        # A buffered dispatcher lives in one process (a worker's): its fixed members are
        # the same in every event it sends.
        self._head = (
            f'{{"hostname":{_STRING(hostname)},"utcoffset":{float(self.utcoffset)!r},'
            f'"pid":{os.getpid():d},'
        )
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
        if event_type.startswith(TASK):
            if not self.task_events:
                return
            if self.buffered:
                self.task(event_type, str(fields.pop("uuid")), json_fields(fields))
                return
        if self.buffered:
            self._others.append(self.event(event_type, **fields))
        else:
            self.publish(routing_key(event_type), _ENCODE(self.event(event_type, **fields)))

    def task(self, event_type: str, uuid: str, rest: str = "") -> None:
        """Buffer a task event: ``rest`` its members after ``uuid`` (see ``json_fields``).

        The worker's hot path: ``event_type`` is one of Celery's names, written as is.
        """
        self._tasks.append(
            f'{self._head}"clock":{self.clock.forward():d},"timestamp":{time.time()!r},'
            f'"type":"{event_type}","uuid":{_STRING(uuid)}{rest}}}'
        )

    @property
    def pending(self) -> int:
        return len(self._tasks) + len(self._others)

    def due(self) -> bool:
        """Whether ``flush`` would publish now."""
        return bool(self._others or self._tasks) and (
            len(self._tasks) >= BATCH_MAX or time.monotonic() - self._flushed >= FLUSH_SECONDS
        )

    def flush(self, force: bool = False) -> None:
        """Publish the buffer if it is ``due`` (or ``force``); what could not be sent stays.

        A busy worker so sends one message per few hundred events, not one per turn of its
        loop: each publish costs the loop a round trip to the broker.
        """
        tasks, others = self._tasks, self._others
        if not (force or tasks or others):
            return  # each turn of an idle worker's loop
        now = time.monotonic()
        # Full arrays go as soon as they are full; the rest waits for the interval, so a
        # busy worker never sends a few events left over from a full array on their own.
        timely = force or now - self._flushed >= FLUSH_SECONDS
        if not (timely or len(tasks) >= BATCH_MAX):
            return
        if timely:
            self._flushed = now
        while self._producer is not None and (len(tasks) >= BATCH_MAX or (timely and tasks)):
            chunk = [tasks.popleft() for _ in range(min(BATCH_MAX, len(tasks)))]
            try:
                self.publish(MULTI_KEY, "[" + ",".join(chunk) + "]")
            except Exception:
                tasks.extendleft(reversed(chunk))
                raise
        while self._producer is not None and timely and others:
            event = others[0]
            self.publish(routing_key(event["type"]), _ENCODE(event))
            others.popleft()

    def publish(self, key: str, text: str) -> None:
        """Publish one event or array, ``text`` its JSON."""
        producer = self._producer
        if producer is None:
            return  # no broker that can carry events: monitoring is best effort
        # Encoded by us, not kombu's serializer registry: through it a worker's event
        # stream cost its loop half as much again.
        producer.publish(
            text,
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
        self.should_stop = False  # set from another thread: the capture ends within a second
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
                if self.should_stop or (left is not None and left <= 0):
                    return
                with contextlib.suppress(TimeoutError):
                    self.connection.drain_events(timeout=1.0 if left is None else min(left, 1.0))
                # A receiver sends nothing of its own: without heartbeats RabbitMQ would
                # close its connection after two heartbeat intervals (a no-op on Redis).
                self.connection.heartbeat_check()

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
