"""Quorum queues on RabbitMQ: per-consumer prefetch, and ETA tasks parked in delay queues.

A quorum queue refuses a consumer on a channel with a global prefetch limit, and a
per-consumer limit cannot be raised for consumers already running, so a worker cannot
make room for the ETA tasks it holds, as it does on classic queues: a few held ETA tasks
would take every prefetch slot and starve the pool. So when the worker consumes a quorum
queue it parks every ETA task due a second or more ahead in the broker's delay queues
(kombu's native delayed delivery, the exchanges and queues ``celery_delayed_0..27`` that
Celery's workers declare too): a copy goes in, the original is acked, and the copy comes
back to its queue when due.

Each queue the worker consumes is bound to the delivery exchange by its own name, which
works whatever the queue's exchange type (Celery's binding needs a topic exchange), and,
for queues on a topic or fanout exchange, also the way Celery binds them, so the delayed
tasks a Celery client publishes there reach taskq's workers too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kombu import Queue
from kombu.transport.native_delayed_delivery import (
    CELERY_DELAYED_DELIVERY_EXCHANGE,
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)

from ..amqp import is_quorum

if TYPE_CHECKING:
    from ..app import Taskq

logger = logging.getLogger(__name__)

SHORTEST_PARK = 1.0  # seconds: the delay queues count whole seconds; shorter waits are held


def uses_quorum(app: Taskq, connection: Any, queues: Sequence[Queue]) -> bool:
    """Whether this worker must consume as quorum queues need (RabbitMQ only)."""
    return (
        bool(app.conf.worker_detect_quorum_queues)
        and connection.transport.driver_type == "amqp"
        and any(is_quorum(q) for q in queues)
    )


def bind_delay_queues(app: Taskq, connection: Any, queues: Sequence[Queue]) -> frozenset[str]:
    """Declare the delay queues and bind ``queues`` to them; the names of those bound.

    On a connection of its own (kombu's functions leave their channels open), cloned from
    the worker's, so it reaches the same node.
    """
    kind = app.conf.broker_native_delayed_delivery_queue_type
    with connection.clone() as aux:
        aux.ensure_connection(max_retries=1)
        declare_native_delayed_delivery_exchanges_and_queues(aux, kind)
        channel = aux.channel()
        for queue in queues:
            bound = queue(channel)
            bound.declare()
            bound.bind_to(CELERY_DELAYED_DELIVERY_EXCHANGE, routing_key=f"#.{queue.name}")
            if queue.exchange is not None and queue.exchange.type in ("topic", "fanout"):
                bind_queue_to_native_delayed_delivery_exchange(aux, queue)
    logger.info("Quorum queues: ETA tasks of %s park in the delay queues (%s)",
                ", ".join(q.name for q in queues), kind)  # fmt: skip
    return frozenset(q.name for q in queues)


__all__ = ["SHORTEST_PARK", "bind_delay_queues", "uses_quorum"]
