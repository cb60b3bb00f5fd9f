"""`task_queues` as a Celery config has it: kombu Queue objects with their own exchanges and
routing keys, consumed by a worker and routed to by name (memory transport, real worker)."""

from __future__ import annotations

import uuid

import pytest
from kombu import Exchange, Queue

from taskq import ConfigurationError, Taskq


@pytest.fixture
def names() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:6]
    return f"default-{tag}", f"feeds-{tag}", f"tasks-{tag}"


def celery_style_app(names: tuple[str, str, str]) -> Taskq:
    default, feeds, exchange = names
    return Taskq(
        "queues",
        broker="memory://",
        backend="memory://",
        set_as_current=False,
        # Celery's routing guide, nearly word for word:
        task_queues=(
            Queue(default, routing_key="task.#"),
            Queue(feeds, Exchange(f"{exchange}-feeds", type="topic"), routing_key="feed.#"),
        ),
        task_default_queue=default,
        task_default_exchange=exchange,
        task_default_exchange_type="topic",
        task_default_routing_key="task.default",
        task_routes={"feeds.*": {"queue": feeds}},
    )


def test_queues_are_kept_as_declared_and_get_the_default_exchange(
    names: tuple[str, str, str],
) -> None:
    app = celery_style_app(names)
    default, feeds = app.declared_queues()
    assert (default.exchange.name, default.exchange.type) == (names[2], "topic")
    assert (feeds.exchange.name, feeds.routing_key) == (f"{names[2]}-feeds", "feed.#")
    assert app.conf.task_queues[0].exchange.name == ""  # the config's object is untouched
    assert app.default_queue() == default
    route = app.amqp.router.route("feeds.import", None, {})
    assert (route.exchange, route.routing_key) == (f"{names[2]}-feeds", "feed.#")
    assert app.amqp.router.route("other.task", None, {}).queue == default
    with pytest.raises(ConfigurationError, match="queue names or kombu Queue objects"):
        Taskq("bad", task_queues=[1, 2])
    assert Taskq("csv", task_queues="a, b").conf.task_queues == ("a", "b")


def test_a_worker_consumes_the_declared_queues(names: tuple[str, str, str]) -> None:
    app = celery_style_app(names)

    @app.task(name="feeds.import")
    def feed_import(url: str) -> str:
        return f"imported {url}"

    @app.task(name="other.task")
    def other() -> str:
        return "other"

    from tests.unit.conftest import RunningWorker

    worker = RunningWorker(app, "solo").start()
    try:
        assert {q.name for q in worker.worker.queues} == {names[0], names[1]}
        assert feed_import.delay("x").get(timeout=10) == "imported x"
        assert other.delay().get(timeout=10) == "other"
    finally:
        worker.stop()


def test_task_default_queue_type_quorum_declares_every_named_queue_as_quorum() -> None:
    app = Taskq("quorum", broker="memory://", backend="memory://", set_as_current=False,
                task_queues=["named"], task_default_queue_type="quorum")  # fmt: skip
    try:
        quorum = {"x-queue-type": "quorum"}
        assert app.default_queue().queue_arguments == quorum
        assert [q.queue_arguments for q in app.declared_queues()] == [quorum]
        created = app.amqp.router.queue("made-on-first-use")
        assert created.queue_arguments == quorum and created.durable
        from taskq.deadletter import DeadLetters

        assert DeadLetters(app).queue.queue_arguments == quorum
    finally:
        app.close()


def test_classic_queues_carry_no_type_argument_and_bad_types_are_refused() -> None:
    app = Taskq("classic", broker="memory://", backend="memory://", set_as_current=False)
    try:
        assert not app.default_queue().queue_arguments
    finally:
        app.close()
    with pytest.raises(ConfigurationError, match="task_default_queue_type"):
        Taskq("bad", broker="memory://", task_default_queue_type="stream", set_as_current=False)


AMQP = "amqp://guest:guest@127.0.0.1:1//"  # never connected: the transport's kind is enough


@pytest.mark.parametrize(
    ("url", "queue_type", "detect", "expected"),
    [
        (AMQP, "quorum", True, True),
        (AMQP, "quorum", False, False),  # worker_detect_quorum_queues off: consumed as classic
        (AMQP, "classic", True, False),
        ("memory://", "quorum", True, False),  # only RabbitMQ has quorum queues
    ],
)
def test_a_worker_consumes_the_quorum_way_only_where_quorum_queues_are_detected(
    url: str, queue_type: str, detect: bool, expected: bool
) -> None:
    from taskq.broker import broker_connection
    from taskq.worker.delayed import uses_quorum

    app = Taskq("detect", broker=url, backend="memory://", set_as_current=False,
                task_default_queue_type=queue_type, worker_detect_quorum_queues=detect)  # fmt: skip
    try:
        with broker_connection(url) as conn:
            assert uses_quorum(app, conn, [app.default_queue()]) is expected
    finally:
        app.close()
