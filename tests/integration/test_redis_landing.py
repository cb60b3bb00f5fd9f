"""Landing lists on a real Redis: one message wakes one waiting consumer, and a message a
consumer moved to its landing list is never lost, whether the take behind the wait fails
or the consumer dies before it."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from kombu import Consumer, Exchange, Queue

from taskq.broker import broker_connection
from taskq.transports.redis_script import LANDINGS_KEY
from tests.integration import test_redis_take as take
from tests.integration.helpers import wait_for

url = take.url  # the fixture: a database of its own, emptied first
QUEUE, publish = take.QUEUE, take.publish

pytestmark = pytest.mark.integration

TARGET = Queue(QUEUE, Exchange(QUEUE, "direct"), QUEUE)

# A consumer in a process of its own, to be stopped and killed mid-wait.
CHILD = """
import sys
from kombu import Consumer, Exchange, Queue
from taskq.broker import broker_connection

url, queue = sys.argv[1], sys.argv[2]
options = {"visibility_timeout": 2, "peek_timeout": 10}
with broker_connection(url, options) as conn:
    channel = conn.default_channel
    channel.basic_qos(0, 1, False)
    target = Queue(queue, Exchange(queue, "direct"), queue)
    with Consumer(channel, [target], callbacks=[lambda b, m: None], accept=["json"]):
        while True:
            try:
                conn.drain_events(timeout=60)
            except TimeoutError:
                pass
"""


def waiting_on_blmove(client: redis.Redis) -> int:
    return sum(1 for c in client.client_list() if c.get("cmd") == "blmove" and "b" in c["flags"])


def blmove_returns(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_blmove", {})
    return int(stats.get("calls", 0))


def landed(client: redis.Redis) -> dict[bytes, int]:
    return {key: client.llen(key) for key in client.scan_iter("taskq.landing.*")}


@contextlib.contextmanager
def consumers(
    url: str, count: int, got: list[tuple[int, Any]], queues: Sequence[Queue] = (TARGET,)
) -> Iterator[None]:
    """``count`` consumers of ``queues`` on threads of their own, each appending (its
    number, payload)."""
    stop = threading.Event()
    lock = threading.Lock()

    def run(number: int) -> None:
        with broker_connection(url, {"peek_timeout": 10}) as conn:
            channel = conn.default_channel
            channel.basic_qos(0, 1, False)

            def on_message(body: Any, message: Any) -> None:
                with lock:
                    got.append((number, body))
                message.ack()

            with Consumer(channel, list(queues), callbacks=[on_message], accept=["json"]):
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=0.2)

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def test_a_message_wakes_one_of_the_consumers_waiting_for_it(url: str) -> None:
    client = redis.Redis.from_url(url)
    got: list[tuple[int, Any]] = []
    with consumers(url, 4, got):
        returns = []
        for n in range(6):
            # Each step begins with all four waiting again, and so with every wait that
            # the last message ended counted (Redis counts a served wait a little later).
            wait_for(lambda: waiting_on_blmove(client) == 4, 30, "four consumers waiting")
            returns.append(blmove_returns(client))
            if n < 5:
                publish(url, 1)
                wait_for(lambda n=n: len(got) == n + 1, 30, f"message {n} to be received")
        # A wait that left the message in place woke all four for each message.
        assert [b - a for a, b in itertools.pairwise(returns)] == [1] * 5
    assert sorted(body["n"] for _, body in got) == [0, 0, 0, 0, 0]
    assert client.llen(QUEUE) == 0 and client.hlen("unacked") == 0
    assert landed(client) == {}
    # Each consumer ended its landing list's lease when it closed.
    assert client.zcard(LANDINGS_KEY) == 0


def test_a_take_that_failed_behind_a_wait_leaves_the_message_to_the_next_take(
    url: str,
) -> None:
    client = redis.Redis.from_url(url)
    got: list[Any] = []
    with broker_connection(url, {"peek_timeout": 10}) as conn:
        channel = conn.default_channel
        channel.basic_qos(0, 10, False)
        with Consumer(channel, [TARGET], callbacks=[lambda _b, m: got.append(m)], accept=["json"]):
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.3)  # the wait (and the take behind it) is out
            wait_for(lambda: waiting_on_blmove(client) == 1, 30, "the consumer to wait")
            client.script_flush()  # the take behind the wait answers NOSCRIPT
            publish(url, 1)
            # The wait moved the message to the landing list; the take failed.
            wait_for(lambda: list(landed(client).values()) == [1], 30, "the message to land")
            for _ in range(20):
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.5)
                if got:
                    break
        assert [m.payload["n"] for m in got] == [0]
        assert client.hkeys("unacked") == [got[0].delivery_tag.encode()]
        got[0].ack()
        channel.flush_acks()
    assert landed(client) == {} and client.llen(QUEUE) == 0 and client.hlen("unacked") == 0


def test_a_landed_message_of_a_consumer_that_died_goes_back_to_its_queue(url: str) -> None:
    client = redis.Redis.from_url(url)
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, QUEUE])
    try:
        wait_for(lambda: waiting_on_blmove(client) == 1, 60, "the child to wait")
        (member,) = client.zrange(LANDINGS_KEY, 0, -1)
        landing_key, home = json.loads(member)
        assert home == QUEUE
        client.script_flush()  # the take behind the child's wait will fail...
        os.kill(child.pid, signal.SIGSTOP)  # ...and the child never gets to take again
        publish(url, 1)
        wait_for(lambda: client.llen(landing_key) == 1, 30, "the message to land")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    # The message is neither queued nor recorded as unacked: only the landing list's
    # lease, which nobody renews any more, says where it is.
    assert client.llen(QUEUE) == 0 and client.hlen("unacked") == 0
    again = take.taken_back(url, 1)
    assert [m.payload["n"] for m in again] == [0]
    assert landed(client) == {} and client.zcard(LANDINGS_KEY) == 0
    assert client.llen(QUEUE) == 0 and client.hlen("unacked") == 0
