"""The test servers themselves: a kombu round trip through each, and restart()."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

pytestmark = pytest.mark.integration


def round_trip(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """Publish one persistent message to a fresh durable queue, get it back, ack it."""
    name = f"taskq-test-{uuid.uuid4().hex}"
    exchange = Exchange(name, type="direct", durable=True)
    queue = Queue(name, exchange, routing_key=name, durable=True)
    with Connection(url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=3)
        with conn.Producer() as producer:
            producer.publish(
                body,
                exchange=exchange,
                routing_key=name,
                declare=[queue],
                serializer="json",
                delivery_mode=2,
            )
        bound = queue(conn.default_channel)
        message = None
        for _ in range(50):  # redis delivers at once; allow a moment anyway
            message = bound.get(no_ack=False)
            if message is not None:
                break
        assert message is not None, f"nothing came back from {url}"
        message.ack()
        payload: dict[str, Any] = message.decode()
        bound.delete()
        return payload


def test_redis_round_trip(redis_url: str) -> None:
    assert redis_url.startswith("redis://127.0.0.1:")
    assert round_trip(redis_url, {"hello": "redis"}) == {"hello": "redis"}


def test_rabbitmq_round_trip(amqp_url: str) -> None:
    assert amqp_url.startswith("amqp://guest:guest@127.0.0.1:")
    assert round_trip(amqp_url, {"hello": "rabbit"}) == {"hello": "rabbit"}


def test_redis_restart_keeps_url_and_data(redis_server: Any) -> None:
    import redis

    url, old_pid = redis_server.url, redis_server.pid
    key = f"taskq-test-{uuid.uuid4().hex}"
    redis.Redis.from_url(url).set(key, b"kept")
    redis_server.restart()
    assert redis_server.url == url
    assert redis_server.pid != old_pid
    client = redis.Redis.from_url(url)
    assert client.get(key) == b"kept"
    client.delete(key)
    assert round_trip(url, {"after": "restart"}) == {"after": "restart"}


def test_rabbitmq_restart_keeps_url_and_durable_messages(rabbit_server: Any) -> None:
    url, old_pid = rabbit_server.url, rabbit_server.pid
    name = f"taskq-test-{uuid.uuid4().hex}"
    queue = Queue(name, Exchange(name, type="direct", durable=True), routing_key=name)
    with Connection(url) as conn:
        conn.Producer().publish(
            {"survives": True}, exchange=queue.exchange, routing_key=name,
            declare=[queue], delivery_mode=2,
        )  # fmt: skip
    rabbit_server.restart()
    assert rabbit_server.url == url
    assert rabbit_server.pid != old_pid
    with Connection(url) as conn:
        bound = queue(conn.default_channel)
        message = bound.get(no_ack=True)
        assert message is not None, "durable message lost across restart()"
        assert message.decode() == {"survives": True}
        bound.delete()
    assert round_trip(url, {"after": "restart"}) == {"after": "restart"}
