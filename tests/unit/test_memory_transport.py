"""``memory://`` is taskq's subclass of kombu's transport: a queue is made once, even when a
publisher and a consumer use it first at the same moment."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest
from kombu.transport import memory as kombu_memory

from taskq.broker import broker_connection
from taskq.transports import memory


@pytest.fixture
def fast_switching() -> Iterator[None]:
    # Threads switch every microsecond, so the two first uses of a queue interleave.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_a_queue_first_used_by_two_threads_at_once_keeps_the_message(
    fast_switching: None,
) -> None:
    # kombu's channel checked and then set: here it lost 28-123 of 2,000 messages.
    channel = memory.Channel
    lost = []
    for n in range(2000):
        name = f"race-{n}-{id(lost)}"
        start = threading.Barrier(2)

        def publish(name: str = name, start: threading.Barrier = start) -> None:
            start.wait()
            channel._queue_for(channel, name).put("message")

        def poll(name: str = name, start: threading.Barrier = start) -> None:
            start.wait()
            channel._queue_for(channel, name)

        threads = [threading.Thread(target=publish), threading.Thread(target=poll)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if channel.queues.pop(name).qsize() != 1:
            lost.append(name)
    assert lost == []


def test_memory_urls_get_taskqs_transport_on_kombus_shared_queues() -> None:
    with broker_connection("memory://") as conn:
        assert isinstance(conn.transport, memory.Transport)
        channel = conn.default_channel
        channel._new_queue("shared-q")
        # The same broker as kombu's own memory:// connections in this process.
        assert memory.Channel.queues is kombu_memory.Channel.queues
        assert "shared-q" in kombu_memory.Channel.queues
        kombu_memory.Channel.queues.pop("shared-q")
