"""taskq's py-amqp transport against a real RabbitMQ: messages of every size arrive whole."""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any

import pytest
from kombu import Consumer, Exchange, Producer, Queue

from taskq.amqp import broker_connection
from taskq.transports.amqp import READ_SIZE, BufferedTCPTransport
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


@pytest.mark.timeout(60)
def test_messages_of_every_size_arrive_whole_and_in_order(amqp_url: str) -> None:
    # Bodies from empty to several frames (RabbitMQ's frame_max is 128 KB) and several
    # reads long, sent back to back so that reads end in the middle of frames.
    sizes = [0, 1, 100, READ_SIZE - 50, READ_SIZE * 2 + 3, 1_000_000, 10, 300_000]
    bodies = [os.urandom(size) for size in sizes]
    name = f"frames-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, "direct"), name, auto_delete=True)
    got: list[Any] = []
    with broker_connection(amqp_url) as conn:
        assert isinstance(conn.connection.transport, BufferedTCPTransport)
        with Consumer(
            conn.default_channel,
            [queue],
            callbacks=[lambda body, message: (got.append(body), message.ack())],
            accept=["application/data"],
        ):
            with broker_connection(amqp_url) as sender:
                producer = Producer(sender.default_channel)
                for body in bodies:
                    producer.publish(
                        body,
                        exchange=queue.exchange,
                        routing_key=name,
                        declare=[queue],
                        content_type="application/data",
                        content_encoding="binary",
                    )

            def all_in() -> bool:
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.5)
                return len(got) == len(bodies)

            wait_for(all_in, 30, f"{len(bodies)} messages")
    assert [len(body) for body in got] == sizes
    assert [body or b"" for body in got] == bodies  # kombu hands an empty body over as ""
