"""Intake: one message from the broker, read and handed to its task's strategy.

A message that cannot be read, or names a task this worker does not have, is dead-lettered
at once with its FAILURE stored where the task id can be told: left unsettled it would come
back for ever, and stall the worker meanwhile. Runs on the consumer thread.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from kombu import Queue

from .. import signals, states
from ..exceptions import MalformedMessage, NotRegistered
from ..message import recover_identity
from .strategy import read_message, strategy_for

if TYPE_CHECKING:
    from .consumer import Consumer

logger = logging.getLogger(__name__)


def receive(consumer: Consumer, raw: Any, queue: Queue) -> None:
    o = consumer.options
    try:
        message = read_message(raw, o.accept, o.max_message_size, o.verifier)
    except Exception as exc:
        bad = (
            exc
            if isinstance(exc, MalformedMessage)
            else MalformedMessage(f"could not be read: {type(exc).__name__}: {exc}")
        )
        signals.task_rejected.send(sender=consumer, message=raw, exc=bad)
        bury_unrunnable(consumer, raw, queue, bad, bad.task_id or recover_identity(raw.headers)[0])
        return
    handler = consumer.strategies.get(message.task)
    if handler is None and message.task in consumer.app.tasks:
        # Registered after the worker started (a test defining a task): taken in now.
        handler = consumer.strategies[message.task] = strategy_for(
            consumer.app, consumer, o.hostname, message.task
        )
    if handler is None:
        unknown = NotRegistered(message.task)
        consumer.monitor.task("task-failed", message.id, exception=repr(unknown))
        logger.error(
            "Received unregistered task %r (id %s). Is the worker running the module "
            "that defines it (-A)?",
            message.task,
            message.id,
        )
        signals.task_unknown.send(
            sender=consumer, message=raw, exc=unknown, name=message.task, id=message.id
        )
        bury_unrunnable(consumer, raw, queue, unknown, message.id)
        return
    handler(message, raw, queue)


def bury_unrunnable(
    consumer: Consumer, raw: Any, queue: Queue, exc: Exception, task_id: str | None
) -> None:
    consumer.redelivery.bury_unrunnable(raw, queue, exc)
    if task_id:
        consumer.keeper.keep(
            f"store the FAILURE of task {task_id}",
            functools.partial(consumer.app.backend.store_result, task_id, exc, states.FAILURE),
            then=_nothing,
            give_up=functools.partial(_unrecorded, task_id),
        )


def _nothing() -> None:
    pass


def _unrecorded(task_id: str, reason: str) -> None:
    logger.error("Task %s is dead-lettered, but %s", task_id, reason)
