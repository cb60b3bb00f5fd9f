"""The apps of the quorum-queue tests: a taskq app (the worker loads it) and a Celery 5.7
client app, sharing one quorum queue on a topic exchange.

From the environment: QUORUM_BROKER (amqp://), QUORUM_BACKEND (redis://), QUORUM_QUEUE
(a name of the test's own: quorum queues outlive the worker that declared them), and
QUORUM_TYPE ("quorum", or "classic" to compare).
``quorum.when`` returns its tag and the time it ran, so a test can tell the order.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from taskq import Taskq

QUEUE = os.environ.get("QUORUM_QUEUE", "quorum-tests")
KIND = os.environ.get("QUORUM_TYPE", "quorum")  # "classic" for benchmarks/quorum_eta.py


def quorum_queue(name: str, kind: str = "quorum") -> Queue:
    return Queue(
        name,
        Exchange(name, type="topic"),
        routing_key=name,
        queue_arguments={"x-queue-type": kind} if kind != "classic" else None,
    )


SETTINGS: dict[str, Any] = {
    "task_queues": [quorum_queue(QUEUE, KIND)],
    "task_default_queue": QUEUE,
    "task_dead_letter_queue": f"{QUEUE}.dead",
    "task_default_queue_type": KIND,
    "worker_prefetch_multiplier": 1,
}

app = Taskq(
    "quorumtest",
    broker=os.environ.get("QUORUM_BROKER") or None,
    backend=os.environ.get("QUORUM_BACKEND") or None,
    **SETTINGS,
)


@app.task(name="quorum.when")
def when(tag: str) -> list[Any]:
    return [tag, time.time()]


def celery_client(broker: str, backend: str, queue: str) -> Celery:
    """A Celery client that sends to ``queue`` as Celery 5.7 does with quorum queues."""
    client = Celery("quorum-celery", broker=broker, backend=backend, set_as_current=False)
    client.conf.update(
        task_queues=[quorum_queue(queue)],
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_exchange_type="topic",
        task_default_routing_key=queue,
    )
    return client
