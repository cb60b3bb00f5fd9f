"""Queues: the ones an app declares (``task_queues``) and its default, from its settings.

A name in ``task_queues`` is a direct queue of its own name; a kombu ``Queue`` keeps its
exchange, key and arguments, and one without an exchange gets the default exchange, as
Celery gives it. The default queue is the declared one of ``task_default_queue``'s name,
else one made from the ``task_default_*`` settings.
"""

from __future__ import annotations

import copy
from typing import Any

from kombu import Exchange, Queue

from .amqp import make_queue


def declared_queues(conf: Any) -> tuple[Queue, ...]:
    found = []
    for q in conf.task_queues or ():
        if not isinstance(q, Queue):
            found.append(make_queue(q, queue_type=conf.task_default_queue_type))
            continue
        if not q.exchange or not q.exchange.name:
            q = copy.copy(q)  # the config's own object stays as written
            name = conf.task_default_exchange or conf.task_default_queue
            q.exchange = Exchange(name, conf.task_default_exchange_type)
        found.append(q)
    return tuple(found)


def default_queue(conf: Any, declared: tuple[Queue, ...] = ()) -> Queue:
    for queue in declared:
        if queue.name == conf.task_default_queue:
            return queue  # declared with its own exchange and key: that one
    return make_queue(
        conf.task_default_queue,
        conf.task_default_exchange,
        conf.task_default_routing_key,
        conf.task_default_exchange_type,
        conf.task_default_queue_type,
    )


__all__ = ["declared_queues", "default_queue"]
