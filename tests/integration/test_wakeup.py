"""The transports' wake-up: another thread ends the worker's wait for the broker at once."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from typing import Any

import pytest
from kombu import Consumer, Exchange, Producer, Queue

from taskq.broker import broker_connection
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(params=["redis", "amqp"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.mark.timeout(60)
def test_wake_ends_a_wait_for_the_broker_that_has_no_end(url: str) -> None:
    # drain_events(timeout=None) waits for a message for ever; a wake from another thread
    # (the worker's pool reporting a finished task) must end it with a TimeoutError.
    name = f"wake-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, "direct"), name, auto_delete=True)
    got: list[Any] = []
    with broker_connection(url) as conn:
        channel = conn.default_channel
        with Consumer(channel, [queue], callbacks=[lambda body, message: got.append(body)]):
            wake = conn.transport.enable_wakeup()
            waker = threading.Timer(0.5, wake)
            waker.start()
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=None)
            waker.join()
            assert got == []
            wake()  # a pending wake-up does not keep a message from being delivered
            _publish_and_drain(url, conn, queue, got, {"n": 1})
    assert got == [{"n": 1}]


@pytest.mark.timeout(60)
def test_input_on_a_watched_file_ends_a_wait_for_the_broker(url: str) -> None:
    # The worker's prefork pool reports finished tasks on a pipe that the consumer's own
    # wait watches: input there must end a wait that has no end, and once read, leave
    # the wait to the broker again.
    name = f"watch-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, "direct"), name, auto_delete=True)
    got: list[Any] = []
    read_end, write_end = os.pipe()
    try:
        with broker_connection(url) as conn:
            channel = conn.default_channel
            with Consumer(channel, [queue], callbacks=[lambda body, message: got.append(body)]):
                conn.transport.enable_wakeup([read_end])
                writer = threading.Timer(0.5, os.write, (write_end, b"!"))
                writer.start()
                with pytest.raises(TimeoutError):
                    conn.drain_events(timeout=None)
                writer.join()
                assert os.read(read_end, 16) == b"!" and got == []
                _publish_and_drain(url, conn, queue, got, {"n": 2})
    finally:
        os.close(read_end)
        os.close(write_end)
    assert got == [{"n": 2}]


def _publish_and_drain(url: str, conn: Any, queue: Queue, got: list[Any], body: Any) -> None:
    """Publish ``body`` from another connection; drain ``conn`` until it is delivered."""
    with broker_connection(url) as sender:
        Producer(sender.default_channel).publish(
            body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue]
        )

    def delivered() -> bool:
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=0.2)
        return bool(got)

    wait_for(delivered, 10, f"the message {body} to be delivered")
