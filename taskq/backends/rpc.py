"""The ``rpc://`` result backend: results come back as messages on the caller's own queue.

For fleets that have RabbitMQ and nothing else, as Celery's ``rpc://``. Every task message
carries ``reply_to``, the sending process's id (``app.oid``); the worker publishes each state
of the task (STARTED, RETRY, SUCCESS, ...) to that queue through the default exchange, with
the task id as ``correlation_id`` and Celery's meta document as a JSON body. The client reads
its queue when a result is asked for and keeps the last state of each task in memory.

What that means, as in Celery: only the process that sent a task can read its result, the
broker keeps nothing once it is read, ``GroupResult.save`` and chords need a backend that
stores results, and ``forget`` only drops the copy in memory.

One difference, for safety: on RabbitMQ the reply queue is not auto-deleted (Celery's is)
but expires after ``result_expires`` without a reader. An auto-deleted queue goes away when
the client's connection drops, and with it every result sent before the client reconnects.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kombu import Consumer, Exchange, Queue
from kombu.exceptions import OperationalError
from kombu.pools import ProducerPool

from .. import exceptions, states
from ..exceptions import BackendError, SecurityError
from ..serializers import CONTENT_TYPES
from .base import Backend, ResultContext
from .codec import ResultCodec
from .retry import RetryPolicy

logger = logging.getLogger(__name__)

DEFAULT_EXCHANGE = Exchange("", type="direct")
# Last states kept for tasks nobody has read yet; beyond it the oldest are dropped (logged).
KEPT_MAX = 100_000
# A reply queue is declared again after this long, so an expiry never catches a live client.
REDECLARE_AFTER = 60.0
# Kombu's own retries for one publish, inside the backend's retry policy.
PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 1}


class NotKeptHere(BackendError):
    """An operation that needs results kept in a store, asked of ``rpc://``."""


@dataclass(frozen=True)
class BrokerLink:
    """What the backend borrows from the app: the broker, its producers, this process's id."""

    connect: Callable[[], Any]  # a new kombu Connection
    producers: Callable[[], ProducerPool]
    oid: Callable[[], str]
    persistent: bool = False  # result_persistent: delivery mode 2


class RpcBackend(Backend):
    """Publishes states to ``reply_to``; reads its own reply queue into a bounded table."""

    def __init__(
        self,
        link: BrokerLink,
        expires: float | None = 86400.0,
        extended: bool = False,
        retry: RetryPolicy | None = None,
        codec: ResultCodec | None = None,
    ):
        super().__init__(expires, extended, retry, codec)
        self._content_type = CONTENT_TYPES[self.codec.name]
        self._content_encoding = "utf-8" if self.codec.name == "json" else "binary"
        self.link = link
        self._changed = threading.Condition()
        self._kept: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._draining = False
        self._pid = os.getpid()
        self._connection: Any = None
        self._consumer: Any = None
        self._declared: dict[str, float] = {}

    # -- the worker's side: each state is a message to the caller
    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        context: ResultContext | None = None,
    ) -> None:
        reply_to = context.reply_to if context is not None else None
        if not reply_to:
            # No caller to tell (a revoke of an id nobody sent, a message without
            # reply_to): Celery sends nothing either.
            logger.debug("Task %s: no reply_to, so no %s state is sent", task_id, state)
            return
        meta = self.make_meta(task_id, result, state, traceback, context)
        self._retried(
            lambda: self._publish(meta, reply_to, task_id),
            f"send the {state} state of task {task_id} to {reply_to}",
            f"Could not send the result of task {task_id}",
        )

    def _publish(self, meta: dict[str, Any], reply_to: str, task_id: str) -> None:
        with self.link.producers().acquire(block=True, timeout=10) as producer:
            producer.publish(
                self._encode(meta),  # in result_serializer, as Celery's rpc:// sends it
                exchange=DEFAULT_EXCHANGE,
                routing_key=reply_to,
                correlation_id=task_id,
                content_type=self._content_type,
                content_encoding=self._content_encoding,
                delivery_mode=2 if self.link.persistent else 1,
                retry=True,
                retry_policy=PUBLISH_RETRY,
            )

    def transient(self, exc: BaseException) -> bool:
        return isinstance(exc, OperationalError | OSError | ConnectionError)

    # -- the client's side
    def on_task_call(self, reply_to: str) -> None:
        """Before a task is sent: its reply queue must exist, or its results go nowhere."""
        if reply_to != self.link.oid():
            return  # replies go to another process's queue (an explicit reply_to)
        self._reset_after_fork()
        with self._changed:
            declared = self._declared.get(reply_to)
            if declared is not None and time.monotonic() - declared < REDECLARE_AFTER:
                return
        with self.link.producers().acquire(block=True, timeout=10) as producer:
            conn = producer.connection

            def declare() -> None:
                self._queue(conn, reply_to)(producer.channel).declare()

            try:
                conn.ensure(producer, declare, max_retries=3, interval_start=0)()
            except (OperationalError, OSError, *conn.connection_errors) as exc:
                raise exceptions.BrokerUnavailable(
                    f"Could not declare the reply queue {reply_to} for rpc:// results: {exc}"
                ) from exc
        with self._changed:
            self._declared[reply_to] = time.monotonic()

    def _queue(self, conn: Any, name: str) -> Queue:
        expires = self.expires or 86400.0
        if conn.transport.driver_type == "amqp":
            return Queue(name, DEFAULT_EXCHANGE, name, durable=True, auto_delete=False,
                         expires=expires)  # fmt: skip
        # Kombu's virtual brokers ignore x-expires: Celery's auto-delete, so a client that
        # stops consuming cleanly leaves no queue behind.
        return Queue(name, DEFAULT_EXCHANGE, name, durable=True, auto_delete=True)

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        self._drain(0.0)
        with self._changed:
            meta = self._kept.get(task_id)
        return dict(meta) if meta is not None else self.decode_meta(task_id, None)

    def get_many(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        self._drain(0.0)
        with self._changed:
            found = [self._kept.get(task_id) for task_id in task_ids]
        return [
            dict(meta) if meta is not None else self.decode_meta(task_id, None)
            for task_id, meta in zip(task_ids, found, strict=True)
        ]

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> Mapping[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._changed:
                meta = self._kept.get(task_id)
            if meta is not None and meta["status"] in states.READY_STATES:
                return dict(meta)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise exceptions.TimeoutError("The operation timed out.")
            self._drain(1.0 if left is None else min(left, 1.0))

    def forget(self, task_id: str) -> None:
        with self._changed:
            self._kept.pop(task_id, None)

    def _drain(self, timeout: float) -> None:
        """Read what the reply queue holds, waiting up to ``timeout`` for the first message.

        One thread reads at a time; the others wait for it to finish and look again.
        """
        self._reset_after_fork()
        with self._changed:
            if self._draining:
                self._changed.wait(timeout if timeout > 0 else None)
                return
            self._draining = True
        try:
            self._read(timeout)
        finally:
            with self._changed:
                self._draining = False
                self._changed.notify_all()

    def _read(self, timeout: float) -> None:
        try:
            conn = self._consuming()
            conn.drain_events(timeout=timeout)
            while True:  # then whatever else is already here, without waiting
                conn.drain_events(timeout=0)
        except TimeoutError:
            return
        except (OperationalError, OSError, *self._connection_errors()) as exc:
            logger.warning("rpc:// results: lost the broker (%s); reading again", exc)
            self._drop_consumer()
            time.sleep(min(timeout, 0.5))

    def _connection_errors(self) -> tuple[type[BaseException], ...]:
        conn = self._connection
        if conn is None:
            return ()
        return tuple(conn.connection_errors) + tuple(conn.channel_errors)

    def _consuming(self) -> Any:
        if self._connection is not None:
            return self._connection
        conn = self.link.connect()
        conn.ensure_connection(max_retries=1)
        name = self.link.oid()
        channel = conn.channel()
        queue = self._queue(conn, name)(channel)
        queue.declare()
        # Acked once kept, on RabbitMQ: what was on its way to a connection that died is
        # delivered again, not lost. Kombu's virtual brokers would pay a round trip per ack.
        no_ack = conn.transport.driver_type != "amqp"
        # Raw messages: the codec decodes them, and refuses what result_accept_content does.
        consumer = Consumer(channel, [queue], on_message=self._on_reply, no_ack=no_ack)
        consumer.consume()
        self._connection, self._consumer = conn, consumer
        with self._changed:
            self._declared[name] = time.monotonic()
        return conn

    def _on_reply(self, message: Any) -> None:
        try:
            body = self.codec.decode(message.body)
        except (ValueError, SecurityError) as exc:
            logger.error("rpc:// results: dropped a reply that cannot be read: %s", exc)
        else:
            self._keep(body, message.properties.get("correlation_id"))
        if not message.acknowledged:
            message.ack()

    def _keep(self, body: Any, task_id: str | None) -> None:
        if not isinstance(body, dict) or "status" not in body:
            logger.error("rpc:// results: dropped a reply that is not a task state: %r", body)
            return
        task_id = task_id or body.get("task_id")
        if not task_id:
            logger.error("rpc:// results: dropped a reply without a task id")
            return
        with self._changed:
            kept = self._kept.get(task_id)
            # A task that succeeded stays succeeded, whatever a duplicate run sends later.
            if kept is None or kept["status"] != states.SUCCESS:
                self._kept[task_id] = body
                self._kept.move_to_end(task_id)
            while len(self._kept) > KEPT_MAX:
                dropped, _ = self._kept.popitem(last=False)
                logger.warning(
                    "rpc:// results: over %d unread, dropped the state of task %s",
                    KEPT_MAX,
                    dropped,
                )
            self._changed.notify_all()

    def _drop_consumer(self) -> None:
        conn, self._connection, self._consumer = self._connection, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # already broken; the new one is what matters
                logger.debug("rpc:// results: closing a broken connection failed", exc_info=True)

    def _reset_after_fork(self) -> None:
        # A forked child must not read its parent's socket, nor think its queue declared.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._connection = self._consumer = None
            self._declared.clear()
            self._kept.clear()
            self._changed = threading.Condition()
            self._draining = False

    def close(self) -> None:
        if self._pid == os.getpid():
            self._drop_consumer()

    # -- nothing is kept on the broker's side
    def _refuse(self, what: str) -> NotKeptHere:
        return NotKeptHere(
            f"{what} needs a result backend that stores results (redis://, sqlite:///path); "
            "rpc:// sends each result to the process that sent the task and keeps nothing."
        )

    def _get(self, key: str) -> None:
        raise self._refuse("Reading a stored result by key")

    def _set(self, key: str, value: bytes | str, state: str) -> None:
        raise self._refuse("Storing a document")

    def _delete(self, key: str) -> None:
        raise self._refuse("Deleting a stored result")

    def save_group(self, group_id: str, result: Sequence[Any]) -> None:
        raise self._refuse("GroupResult.save()")

    def restore_group(self, group_id: str) -> list[Any] | None:
        raise self._refuse("GroupResult.restore()")

    def delete_group(self, group_id: str) -> None:
        raise self._refuse("GroupResult.delete()")


__all__ = ["BrokerLink", "NotKeptHere", "RpcBackend"]
