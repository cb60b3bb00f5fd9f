"""The direct publish: what it writes, how it lends channels, and what it does on errors."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from kombu import Connection, Producer
from kombu.exceptions import OperationalError

from taskq import BrokerUnavailable, Taskq
from taskq.amqp import Amqp, PublishDefaults, Router, make_queue
from taskq.message import TaskMessage
from taskq.publisher import Publisher


def _take(queue_name: str) -> dict[str, Any]:
    with Connection("memory://") as conn:
        message = conn.default_channel.basic_get(queue_name, no_ack=True)
        assert message is not None
        return dict(message._raw)


def _comparable(raw: dict[str, Any]) -> dict[str, Any]:
    properties = dict(raw["properties"])
    properties.pop("delivery_tag")  # a fresh uuid per message
    return {**raw, "properties": properties}


def test_the_direct_publish_writes_what_kombus_producer_writes() -> None:
    queue = make_queue(f"q-{uuid.uuid4().hex[:8]}")
    body, headers = b"[[1, 2], {}, {}]", {"task": "t.add", "id": "abc"}
    options: dict[str, Any] = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "priority": 3,
    }
    properties = {"correlation_id": "abc", "reply_to": "me"}
    with Connection("memory://") as conn:
        Producer(conn.default_channel).publish(
            body,
            exchange="",
            routing_key=queue.name,
            headers=dict(headers),
            declare=[queue],
            delivery_mode=2,
            expiration=1.5,
            **options,
            **properties,
        )
    kombus = _take(queue.name)

    publisher = Publisher(lambda: Connection("memory://"))
    publisher.publish(
        body,
        exchange="",
        routing_key=queue.name,
        declare=[queue],
        headers=dict(headers),
        properties={**properties, "delivery_mode": 2, "expiration": "1500"},
        **options,
    )
    publisher.close()
    ours = _take(queue.name)
    assert _comparable(ours) == _comparable(kombus)
    assert ours["properties"]["expiration"] == "1500" and ours["properties"]["priority"] == 3


def _counting(made: list[Connection], url: str = "memory://") -> Any:
    def connect() -> Connection:
        # One quick attempt: kombu's own connect retries are not under test.
        made.append(Connection(url, connect_timeout=0.5, transport_options={"max_retries": 0}))
        return made[-1]

    return connect


def _publish(publisher: Publisher, queue_name: str) -> None:
    publisher.publish(
        b"{}",
        exchange="",
        routing_key=queue_name,
        declare=[make_queue(queue_name)],
        priority=None,
        content_type="application/json",
        content_encoding="utf-8",
        headers={},
        properties={"delivery_mode": 2},
    )


def test_sequential_publishes_share_one_connection_and_threads_borrow_their_own() -> None:
    queue_name = f"q-{uuid.uuid4().hex[:8]}"
    made: list[Connection] = []
    publisher = Publisher(_counting(made), keep=2)
    for _ in range(50):
        _publish(publisher, queue_name)
    assert len(made) == 1

    start = threading.Barrier(6)

    def send() -> None:
        start.wait()
        for _ in range(200):
            _publish(publisher, queue_name)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # At most one connection per thread at once; only `keep` of them stay open after.
    assert len(made) <= 1 + 6
    assert len(publisher._idle) <= 2
    with Connection("memory://") as conn:
        count = make_queue(queue_name)(conn.default_channel).queue_declare(passive=True)
        assert count.message_count == 50 + 6 * 200
    publisher.close()


def test_a_failed_publish_closes_its_connection_and_the_next_opens_another() -> None:
    made: list[Connection] = []
    publisher = Publisher(_counting(made, "amqp://guest:guest@127.0.0.1:1//"))
    for attempt in (1, 2):
        with pytest.raises(OperationalError, match="refused"):
            _publish(publisher, "nowhere")
        assert len(made) == attempt
    assert publisher._idle == []


def test_a_failed_direct_publish_without_retry_is_a_clear_error() -> None:
    app = Taskq("proj", broker="amqp://guest:guest@127.0.0.1:1//", broker_connection_timeout=0.5)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(BrokerUnavailable, match="broker is running"):
        add.apply_async((1, 2), retry=False)
    app.close()


def test_the_quick_argument_check_agrees_with_binding() -> None:
    app = Taskq("proj", broker="memory://")

    @app.task
    def plain(x: int, y: int = 0) -> int:
        return x + y

    @app.task(bind=True)
    def bound(self: Any, x: int) -> int:
        return x

    @app.task
    def star(*args: int, scale: int = 1) -> int:
        return sum(args) * scale

    for args in ((1,), (1, 2)):
        plain.check_arguments(args, {})
    for args in ((), (1, 2, 3)):
        with pytest.raises(TypeError, match=r"plain\(x: .int., y: .int. = 0\)"):
            plain.check_arguments(args, {})
    plain.check_arguments((), {"x": 1})
    with pytest.raises(TypeError, match="multiple values"):
        plain.check_arguments((1,), {"x": 1})
    bound.check_arguments((1,), {})
    for args in ((), (1, 2)):
        with pytest.raises(TypeError):
            bound.check_arguments(args, {})
    star.check_arguments((1, 2, 3, 4), {"scale": 2})
    with pytest.raises(TypeError, match="unexpected keyword"):
        star.check_arguments((), {"size": 2})


def test_a_failed_direct_publish_goes_the_long_way_with_kombus_producer_and_retry() -> None:
    # The first connection (the borrowed channel's) is refused; every later one, which
    # kombu's producer pool and its retry get, reaches the broker.
    made: list[Connection] = []

    def connect() -> Connection:
        url = "amqp://guest:guest@127.0.0.1:1//" if not made else "memory://"
        made.append(Connection(url, connect_timeout=0.5, transport_options={"max_retries": 0}))
        return made[-1]

    queue = make_queue(f"q-{uuid.uuid4().hex[:8]}")
    amqp = Amqp("memory://", connect, Router(None, queue), PublishDefaults())
    message = TaskMessage(id="fallback-1", task="t.add", args=(1, 2), kwargs={})
    amqp.publish(message, amqp.router.route("t.add", None, {}))
    assert made[0].transport_cls != made[1].transport_cls  # the refused one, then memory
    raw = _take(queue.name)
    assert raw["headers"]["id"] == "fallback-1"
    assert raw["properties"]["correlation_id"] == "fallback-1"
    with Connection("memory://") as conn:
        left = queue(conn.default_channel).queue_declare(passive=True).message_count
    assert left == 0  # sent once
    amqp.close()
