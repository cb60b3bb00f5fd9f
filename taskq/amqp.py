"""The client's kombu boundary: queues, routing, connections and publishing with retry.

Everything that touches the broker on the client side goes through ``Amqp.publish``; the
connection itself comes from ``broker.broker_connection``, as the worker's does, so both
sides agree on transport options (confirms, timeouts, the embedded SQLite transport).
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection, Exchange, Queue
from kombu.connection import ConnectionPool
from kombu.exceptions import OperationalError
from kombu.pools import ProducerPool
from kombu.serialization import dumps

from .exceptions import BrokerUnavailable, ConfigurationError, MessageTooLarge
from .message import TaskMessage, to_body, to_headers
from .publisher import Publisher, queue_known
from .serializers import AUTH, check_sending, serializer_name
from .signals import after_task_publish, before_task_publish
from .url import mask_url, scrub

QUEUE_TYPE = "x-queue-type"  # RabbitMQ's queue argument: classic, quorum, stream


def make_queue(
    name: str,
    exchange: str | None = None,
    routing_key: str | None = None,
    exchange_type: str = "direct",
    queue_type: str = "classic",
) -> Queue:
    """A durable queue on an exchange of its own name; ``queue_type`` "quorum" on RabbitMQ
    (other brokers ignore the argument)."""
    exchange_name = name if exchange is None else exchange
    arguments = {QUEUE_TYPE: queue_type} if queue_type != "classic" else None
    return Queue(
        name,
        Exchange(exchange_name, exchange_type),
        routing_key=routing_key or name,
        queue_arguments=arguments,
    )


def is_quorum(queue: Queue) -> bool:
    return (queue.queue_arguments or {}).get(QUEUE_TYPE) == "quorum"


@dataclass(frozen=True)
class Route:
    """Where one message goes: the queue to declare (if known), exchange and routing key."""

    queue: Queue | None
    exchange: str
    routing_key: str
    options: Mapping[str, Any] = field(default_factory=dict)


class Router:
    """Resolves a task name and call options to a Route, as Celery's task_routes does."""

    def __init__(
        self,
        routes: Any,
        default_queue: Queue,
        create_missing: bool = True,
        declared: Sequence[Queue] = (),
        queue_type: str = "classic",
    ):
        self.routes: Sequence[Any] = (
            ()
            if routes is None
            else tuple(routes)
            if isinstance(routes, list | tuple)
            else (routes,)
        )
        self.default_queue = default_queue
        self.create_missing = create_missing
        self.queue_type = queue_type
        self._queues: dict[str, Queue] = {q.name: q for q in declared}
        self._queues[default_queue.name] = default_queue
        self._lock = threading.Lock()

    def queue(self, name: str) -> Queue:
        with self._lock:
            if name not in self._queues:
                if not self.create_missing:
                    raise ConfigurationError(
                        f"Queue {name!r} is not defined and task_create_missing_queues is off"
                    )
                self._queues[name] = make_queue(name, queue_type=self.queue_type)
            return self._queues[name]

    def route(
        self,
        task_name: str,
        task_queue: str | None,
        options: Mapping[str, Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Route:
        explicit = {k: options[k] for k in ("queue", "exchange", "routing_key") if options.get(k)}
        found = explicit or self._lookup(task_name, args, kwargs or {})
        if not found and task_queue:
            found = {"queue": task_queue}
        queue_name = found.get("queue")
        queue = (
            self.queue(queue_name)
            if isinstance(queue_name, str)
            else (queue_name if isinstance(queue_name, Queue) else None)
        )
        if queue is None and "exchange" not in found:
            queue = self.default_queue
        extra = {k: v for k, v in found.items() if k not in ("queue", "exchange", "routing_key")}
        if "exchange" in found or "routing_key" in found:
            exchange = found.get("exchange", queue.exchange.name if queue else "")
            key = found.get("routing_key", queue.routing_key if queue else task_name)
            return Route(queue, str(getattr(exchange, "name", exchange)), str(key), extra)
        assert queue is not None
        exchange = queue.exchange
        if exchange is not None and exchange.name and exchange.type != "direct":
            # A declared queue bound to a topic or fanout exchange: through that exchange,
            # with the queue's key, as Celery sends it.
            return Route(queue, exchange.name, queue.routing_key or queue.name, extra)
        # Like Celery: a plain queue route goes through the default exchange with the
        # queue's name as key, which every broker delivers without a binding lookup.
        return Route(queue, "", queue.name, extra)

    def _lookup(
        self, task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        for router in self.routes:
            if callable(router):
                found = router(task_name, args, kwargs, {})
            else:
                found = next(
                    (v for pattern, v in router.items() if fnmatch.fnmatchcase(task_name, pattern)),
                    None,
                )
            if found:
                return {"queue": found} if isinstance(found, str) else dict(found)
        return {}


@dataclass(frozen=True)
class RawMessage:
    """A message as it was received, to move between queues without decoding its body."""

    body: bytes
    content_type: str | None
    content_encoding: str | None
    headers: Mapping[str, Any]
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None

    @classmethod
    def of(cls, message: Any, **headers: Any) -> RawMessage:
        """A kombu message's bytes and properties, with ``headers`` set (None removes one)."""
        props = message.properties or {}
        body = message.body
        return cls(
            body=body.encode("utf-8") if isinstance(body, str) else bytes(body or b""),
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            # The body as received: still compressed on taskq's transports, inflated by
            # kombu's own (the header must then go).
            headers=headers_of(message, still_compressed(message), **headers),
            priority=props.get("priority"),
            correlation_id=props.get("correlation_id"),
            reply_to=props.get("reply_to"),
        )

    def properties(self) -> dict[str, Any]:
        """The AMQP properties a copy goes out with: persistent, typed, the rest as received."""
        props: dict[str, Any] = {
            "content_type": self.content_type or "application/octet-stream",
            "content_encoding": self.content_encoding or "binary",
            "delivery_mode": 2,
            "priority": self.priority,
        }
        for key, value in (("correlation_id", self.correlation_id), ("reply_to", self.reply_to)):
            if value:
                props[key] = value
        return props


def still_compressed(message: Any) -> bool:
    """Whether a received message's body is still as compressed as it was sent."""
    return bool(getattr(message, "held_compression", None)) or bool(
        getattr(message, "errors", None)
    )


def headers_of(message: Any, keep_compression: bool, **changes: Any) -> dict[str, Any]:
    """A received message's headers for a copy of it, with ``changes`` (None removes one)."""
    headers = dict(message.headers or {})
    headers.pop("redelivered", None)  # set by kombu's Redis restores; the copy is new
    if not keep_compression:
        headers.pop("compression", None)
    for key, value in changes.items():
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    return headers


class _ForkSafeConnectionPool(ConnectionPool):  # type: ignore[misc]  # kombu is untyped
    # A class attribute because kombu's ConnectionPool drops a close_after_fork argument.
    close_after_fork = False


@dataclass(frozen=True)
class PublishDefaults:
    serializer: str = "json"
    accept: tuple[str, ...] = ("json",)  # accept_content: pickle is sent only when it names it
    compression: str | None = None
    delivery_mode: int = 2
    priority: int | None = None
    retry: bool = True
    retry_policy: Mapping[str, Any] = field(default_factory=dict)
    max_message_size: int | None = None
    # The signer's dumps when setup_security() ran (serializer "auth"): (type, encoding, body).
    sign: Callable[[Any], tuple[str, str, bytes]] | None = None


class Amqp:
    """The app's publisher: one connection pool and one producer pool, made on first use."""

    def __init__(
        self,
        url: str,
        connection_factory: Callable[[], Connection],
        router: Router,
        defaults: PublishDefaults,
        pool_limit: int = 10,
    ):
        self.url = url
        self.router = router
        self.defaults = defaults
        self._connection_factory = connection_factory
        self._pool_limit = pool_limit
        self._producers: ProducerPool | None = None
        self._publisher: Publisher | None = None
        self._errors: tuple[type[BaseException], ...] = (OperationalError, OSError)
        self._lock = threading.Lock()

    def connection(self) -> Connection:
        """A new, unpooled connection (the worker's consuming connection)."""
        return self._connection_factory()

    def _connect(self) -> Connection:
        """A new publishing connection; its transport's error types become ours to catch."""
        connection = self._connection_factory()
        self._errors = (OperationalError, OSError, *connection.connection_errors)
        return connection

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            with self._lock:
                if self._publisher is None:
                    self._publisher = Publisher(self._connect, self._pool_limit)
        return self._publisher

    @property
    def producers(self) -> ProducerPool:
        with self._lock:
            if self._producers is None:
                first = self._connect()
                # Not closed after a fork: in a pool child that would shut down the
                # sockets it shares with the parent and cut the parent's connections
                # mid-publish. Children drop these clients and open their own.
                connections = _ForkSafeConnectionPool(first, limit=self._pool_limit)
                self._producers = ProducerPool(
                    connections, limit=self._pool_limit, close_after_fork=False
                )
            return self._producers

    def publish(
        self,
        msg: TaskMessage,
        route: Route,
        *,
        priority: int | None = None,
        expiration: float | None = None,
        reply_to: str | None = None,
        retry: bool | None = None,
        retry_policy: Mapping[str, Any] | None = None,
        compression: str | None = None,
        delivery_mode: int | None = None,
        serializer: str | None = None,
    ) -> None:
        d = self.defaults
        if serializer is None or serializer_name(serializer) == d.serializer:
            serializer = d.serializer
        else:
            serializer = serializer_name(serializer)
            check_sending(serializer, d.accept)
        properties: dict[str, Any] = {"correlation_id": msg.id}
        if reply_to:
            properties["reply_to"] = reply_to
        prio = priority if priority is not None else route.options.get("priority", d.priority)
        payload, headers = to_body(msg), to_headers(msg)
        declare = [route.queue] if route.queue is not None else []
        policy = {**d.retry_policy, **(retry_policy or {})}
        if before_task_publish.receivers:
            # Receivers may add headers (tracing, a request id): taken as they leave them.
            before_task_publish.send(
                sender=msg.task, body=payload, exchange=route.exchange,
                routing_key=route.routing_key, headers=headers, properties=properties,
                declare=declare, retry_policy=policy,
            )  # fmt: skip
        # Serialized here rather than by kombu, to refuse an oversized body before sending.
        if serializer == AUTH:
            if d.sign is None:
                raise ConfigurationError(
                    f"Task {msg.task}: serializer 'auth' signs messages; call "
                    "app.setup_security() first"
                )
            content_type, content_encoding, body = d.sign(payload)
        else:
            content_type, content_encoding, body = dumps(payload, serializer=serializer)
        if d.max_message_size is not None and len(body) > d.max_message_size:
            raise MessageTooLarge(
                f"Task {msg.task}[{msg.id}]: the message body is {len(body)} bytes, over "
                f"task_max_message_size ({d.max_message_size}). Pass a reference to the data "
                "(a key, a path, a URL) instead of the data itself, or raise the setting."
            )
        self._send(
            body,
            f"send task {msg.task}[{msg.id}] to the broker",
            exchange=route.exchange,
            routing_key=route.routing_key,
            content_type=content_type,
            content_encoding=content_encoding,
            compression=compression or d.compression,
            headers=headers,
            delivery_mode=delivery_mode or d.delivery_mode,
            priority=prio,
            expiration=expiration,
            declare=declare,
            retry=d.retry if retry is None else retry,
            retry_policy=policy,
            properties=properties,
        )
        if after_task_publish.receivers:
            after_task_publish.send(
                sender=msg.task, body=payload, headers=headers, exchange=route.exchange,
                routing_key=route.routing_key,
            )  # fmt: skip

    def send_raw(self, message: RawMessage, queue: Queue) -> None:
        """Put ``message`` on ``queue`` as it is (no serializing): returns, parks, buries."""
        properties = message.properties()
        self._send(
            message.body,
            f"put a message on queue {queue.name!r}",
            exchange="",
            routing_key=queue.name,
            content_type=properties.pop("content_type"),
            content_encoding=properties.pop("content_encoding"),
            headers=dict(message.headers),
            compression=None,
            delivery_mode=properties.pop("delivery_mode"),
            priority=properties.pop("priority"),
            expiration=None,
            declare=[queue],
            retry=self.defaults.retry,
            retry_policy=dict(self.defaults.retry_policy),
            properties=properties,
        )

    def _send(self, body: bytes, what: str, **publish: Any) -> None:
        """Publish ``body``; connection failures become ``BrokerUnavailable``.

        Tried once on a borrowed channel; if that fails, or the message is to be compressed,
        kombu's ``Producer`` sends it with the retry policy.
        """
        try:
            if publish["compression"] is None and self._send_direct(body, publish):
                return
            with self.producers.acquire(block=True, timeout=10) as producer:
                done = producer.connection
                publish["declare"] = [q for q in publish["declare"] if not queue_known(done, q)]
                properties = publish.pop("properties")
                producer.publish(body, **publish, **properties)
        except self._errors as exc:
            raise BrokerUnavailable(
                f"Could not {what} at {mask_url(self.url)}: {scrub(str(exc))}. "
                "Check that the broker is running and broker_url is right."
            ) from exc

    def _send_direct(self, body: bytes, publish: dict[str, Any]) -> bool:
        # A copy: kombu writes its delivery details into the properties it sends, and the
        # long way after a failure needs them as the caller gave them.
        properties = {**publish["properties"], "delivery_mode": publish["delivery_mode"]}
        if publish["expiration"] is not None:
            # As kombu's Producer writes it: whole milliseconds, as text.
            properties["expiration"] = str(int(publish["expiration"] * 1000))
        try:
            self.publisher.publish(
                body,
                exchange=publish["exchange"],
                routing_key=publish["routing_key"],
                declare=publish["declare"],
                priority=publish["priority"],
                content_type=publish["content_type"],
                content_encoding=publish["content_encoding"],
                headers=publish["headers"],
                properties=properties,
            )
        except self._errors:
            if not publish["retry"]:
                raise
            return False  # the long way retries it
        return True

    def close(self) -> None:
        with self._lock:
            if self._publisher is not None:
                self._publisher.close()
                self._publisher = None
            if self._producers is not None:
                self._producers.force_close_all()
                self._producers.connections.force_close_all()
                self._producers = None
