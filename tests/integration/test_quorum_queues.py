"""Quorum queues on a real RabbitMQ: declared as such, consumed with per-consumer
prefetch, and ETA tasks parked in the delay queues so they never starve the pool; the
delayed tasks of a Celery 5.7 client reach a taskq worker the same way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from kombu import Connection, Queue

from taskq import Taskq
from taskq.deadletter import DeadLetters
from tests.integration.helpers import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

APP = "tests.integration.quorum_tasks"


@pytest.fixture
def quorum(amqp_url: str, redis_backend_url: str) -> Iterator[tuple[Taskq, WorkerProcess, dict]]:
    queue = f"quorum-{uuid.uuid4().hex[:8]}"
    env = {"QUORUM_BROKER": amqp_url, "QUORUM_BACKEND": redis_backend_url, "QUORUM_QUEUE": queue}
    from tests.integration import quorum_tasks

    settings = {
        **quorum_tasks.SETTINGS,
        "task_queues": [quorum_tasks.quorum_queue(queue)],
        "task_default_queue": queue,
        "task_dead_letter_queue": f"{queue}.dead",
    }
    app = Taskq("quorum-client", broker=amqp_url, backend=redis_backend_url, **settings)
    worker = WorkerProcess(APP, "-P", "solo", "-c", "1", env=env).start()
    try:
        yield app, worker, env
    finally:
        app.close()
        assert worker.stop() == 0, worker.log()


def test_eta_tasks_park_in_the_delay_queues_and_do_not_starve_the_pool(
    quorum: tuple[Taskq, WorkerProcess, dict],
) -> None:
    app, worker, _ = quorum
    # Prefetch is 1 (one solo process, multiplier 1): an ETA task held by the worker
    # would keep the immediate ones waiting until it ran; parked, it does not.
    eta = datetime.now(UTC) + timedelta(seconds=3)
    later = [app.send_task("quorum.when", args=(f"eta{i}",), eta=eta) for i in range(3)]
    now = [app.send_task("quorum.when", args=(f"now{i}",)) for i in range(3)]
    ran_now = [r.get(timeout=60) for r in now]
    ran_later = [r.get(timeout=60) for r in later]
    assert max(t for _, t in ran_now) < min(t for _, t in ran_later)
    assert all(t >= eta.timestamp() for _, t in ran_later)  # parked, but never early
    log = worker.log()
    assert "park in the delay queues" in log, log
    for result in later:  # received twice: before it was parked, and when it came back
        assert log.count(f"[{result.id}] received") == 2, log


def test_the_queue_is_declared_as_a_quorum_queue(
    quorum: tuple[Taskq, WorkerProcess, dict],
) -> None:
    app, _worker, env = quorum
    name = env["QUORUM_QUEUE"]
    with Connection(app.conf.broker_url) as conn:
        channel = conn.channel()
        with pytest.raises(Exception, match="x-queue-type") as refused:
            Queue(name, durable=True)(channel).declare()  # as a classic queue: refused
        assert "quorum" in str(refused.value)


def test_a_celery_clients_delayed_task_reaches_a_taskq_worker(
    quorum: tuple[Taskq, WorkerProcess, dict], redis_backend_url: str
) -> None:
    _, worker, env = quorum
    from tests.integration.quorum_tasks import celery_client

    client = celery_client(env["QUORUM_BROKER"], redis_backend_url, env["QUORUM_QUEUE"])
    try:
        sent = client.send_task("quorum.when", args=("from-celery",), countdown=2)
        assert sent.get(timeout=60)[0] == "from-celery"
    finally:
        client.close()
    # Once: Celery sent it through the delay queues (a held task would show too), and the
    # queue's two bindings to the delivery exchange gave it one copy.
    assert worker.log().count(f"[{sent.id}] received") == 1, worker.log()


def test_a_message_the_broker_dead_letters_shows_why_in_the_dead_letter_queue(
    amqp_url: str, redis_backend_url: str
) -> None:
    # A user's own backstop: a quorum queue whose delivery limit sends a message that keeps
    # coming back to taskq's dead-letter queue (here a consumer that requeues it each time).
    name = f"limited-{uuid.uuid4().hex[:8]}"
    dead = f"{name}.dead"
    limited = Queue(name, routing_key=name, queue_arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 1,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead,
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
    })  # fmt: skip
    app = Taskq("limited", broker=amqp_url, backend=redis_backend_url, task_queues=[limited],
                task_default_queue=name, task_dead_letter_queue=dead,
                task_default_queue_type="quorum")  # fmt: skip
    try:
        with Connection(amqp_url) as conn:
            DeadLetters(app).queue(conn.channel()).declare()
        sent = app.send_task("quorum.when", args=("looping",))
        with Connection(amqp_url) as conn:
            channel = conn.channel()
            bound = limited(channel)
            for _ in range(10):
                message = bound.get(no_ack=False)
                if message is None:
                    break
                message.reject(requeue=True)
        letter = wait_for(lambda: DeadLetters(app).get(sent.id), 30, "the broker's dead letter")
        assert "x-delivery-limit" in letter.reason  # type: ignore[attr-defined]
        assert letter.queue == name and letter.task == "quorum.when"  # type: ignore[attr-defined]
    finally:
        app.close()
