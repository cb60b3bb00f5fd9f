"""A consumer of several queues on a real Redis: watchers wait on every queue at once, so
an idle worker polls none of them, one message still wakes one consumer, and a message a
watcher moved is never lost, whether its queue is cancelled or its consumer dies."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import redis
from kombu import Consumer, Exchange, Queue

from taskq.broker import broker_connection
from taskq.transports.redis_script import LANDINGS_KEY
from tests.integration import test_redis_take as take
from tests.integration.helpers import wait_for
from tests.integration.test_redis_landing import (
    blmove_returns,
    consumers,
    landed,
    waiting_on_blmove,
)

url = take.url  # the fixture: a database of its own, emptied first
publish = take.publish

pytestmark = pytest.mark.integration

NAMES = ("watch-a", "watch-b", "watch-c")
QUEUES = [Queue(name, Exchange(name, "direct"), name) for name in NAMES]

# A consumer of the three queues in a process of its own, to be stopped and killed.
CHILD = """
import sys
from kombu import Consumer, Exchange, Queue
from taskq.broker import broker_connection

url, names = sys.argv[1], sys.argv[2:]
with broker_connection(url, {"visibility_timeout": 2}) as conn:
    channel = conn.default_channel
    channel.basic_qos(0, 1, False)
    queues = [Queue(name, Exchange(name, "direct"), name) for name in names]
    with Consumer(channel, queues, callbacks=[lambda b, m: None], accept=["json"]):
        while True:
            try:
                conn.drain_events(timeout=60)
            except TimeoutError:
                pass
"""


def waiting_on_bell(client: redis.Redis) -> int:
    return sum(1 for c in client.client_list() if c.get("cmd") == "blpop" and "b" in c["flags"])


def idle(client: redis.Redis, consumers: int) -> bool:
    """Every consumer waits on its bell, and its watchers on each of the three queues."""
    return waiting_on_blmove(client) == 3 * consumers and waiting_on_bell(client) == consumers


def test_idle_consumers_wait_on_every_queue_and_a_message_wakes_one(url: str) -> None:
    client = redis.Redis.from_url(url)
    got: list[tuple[int, Any]] = []
    with consumers(url, 2, got, QUEUES):
        returns = []
        for n, name in enumerate([*NAMES, *NAMES, None]):
            # Each step begins with both consumers idle: nothing polls, every queue has
            # a wait on it from each consumer, and every wait the last message ended is
            # counted (Redis counts a served wait a little later).
            wait_for(lambda: idle(client, 2), 30, "both consumers waiting on every queue")
            returns.append(blmove_returns(client))
            if name is not None:
                publish(url, 1, queue=name)
                wait_for(lambda n=n: len(got) == n + 1, 30, f"message {n} to be received")
        # One watcher of one consumer moved each message; the other consumer slept on.
        assert [b - a for a, b in itertools.pairwise(returns)] == [1] * 6
    assert sorted(body["n"] for _, body in got) == [0] * 6
    assert all(client.llen(name) == 0 for name in NAMES) and client.hlen("unacked") == 0
    # Closed: the watchers stopped, the landing lists' leases ended, no bell left forever.
    assert waiting_on_blmove(client) == 0 and waiting_on_bell(client) == 0
    assert landed(client) == {} and client.zcard(LANDINGS_KEY) == 0
    assert all(client.pttl(key) > 0 for key in client.scan_iter("taskq.bell.*"))


def test_a_cancelled_queue_gets_back_what_its_watcher_moved(url: str) -> None:
    client = redis.Redis.from_url(url)
    got: list[Any] = []
    with broker_connection(url) as conn:
        channel = conn.default_channel
        channel.basic_qos(0, 10, False)
        on_message = lambda _b, m: got.append(m)  # noqa: E731
        with Consumer(channel, QUEUES, callbacks=[on_message], accept=["json"]) as consumer:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.3)  # the watchers and the wait are out
            wait_for(lambda: idle(client, 1), 30, "the consumer to wait on every queue")
            client.script_flush()  # the take behind the wait answers NOSCRIPT
            publish(url, 1, queue=NAMES[2])
            wait_for(lambda: list(landed(client).values()) == [1], 30, "the message to land")
            # The consumer has not read that its take failed; meanwhile it stops
            # consuming the queue, so the message must go back there, not to it.
            consumer.cancel_by_queue(NAMES[2])
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.5)
            wait_for(lambda: waiting_on_blmove(client) == 2, 30, "two watchers left")
            assert got == [] and client.llen(NAMES[2]) == 1 and landed(client) == {}
            homes = {json.loads(m)[1] for m in client.zrange(LANDINGS_KEY, 0, -1)}
            assert homes == set(NAMES[:2])
    assert client.zcard(LANDINGS_KEY) == 0


def test_a_message_a_dead_consumers_watcher_moved_goes_back_to_its_queue(url: str) -> None:
    client = redis.Redis.from_url(url)
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, *NAMES])
    try:
        wait_for(lambda: idle(client, 1), 60, "the child to wait on every queue")
        client.script_flush()  # the take behind the child's wait will fail...
        os.kill(child.pid, signal.SIGSTOP)  # ...and the child never gets to take again
        publish(url, 1, queue=NAMES[1])
        wait_for(lambda: list(landed(client).values()) == [1], 30, "the message to land")
        (landing_key,) = landed(client)
        homes = {json.loads(m)[0]: json.loads(m)[1] for m in client.zrange(LANDINGS_KEY, 0, -1)}
        assert homes[landing_key.decode()] == NAMES[1]
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    # Neither queued nor recorded as unacked: only the lease nobody renews says where it is.
    assert client.llen(NAMES[1]) == 0 and client.hlen("unacked") == 0
    again = take.taken_back(url, 1, queue=NAMES[1])
    assert [m.payload["n"] for m in again] == [0]
    assert landed(client) == {} and client.zcard(LANDINGS_KEY) == 0
    assert client.hlen("unacked") == 0


def test_a_consumer_out_of_credit_leaves_new_messages_to_others(url: str) -> None:
    client = redis.Redis.from_url(url)
    got: list[Any] = []
    with broker_connection(url) as conn:
        channel = conn.default_channel
        channel.basic_qos(0, 1, False)
        on_message = lambda _b, m: got.append(m)  # noqa: E731
        with Consumer(channel, QUEUES, callbacks=[on_message], accept=["json"]):

            def drain() -> None:
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.2)

            drain()
            wait_for(lambda: idle(client, 1), 30, "the consumer to wait on every queue")
            publish(url, 1, queue=NAMES[0])
            wait_for(lambda: (drain(), len(got) == 1)[1], 30, "the first message")
            # Its one message in hand (prefetch 1), the consumer stands its watchers down
            # before it waits again...
            drain()
            assert waiting_on_blmove(client) == 0 and waiting_on_bell(client) == 0
            # ...so a message for it stays in its queue for any worker with room, rather
            # than land in this one's list until its task is done.
            publish(url, 1, queue=NAMES[1])
            drain()
            assert client.llen(NAMES[1]) == 1 and landed(client) == {}
            got[0].ack()
            wait_for(lambda: (drain(), len(got) == 2)[1], 30, "the second message")
            assert got[1].payload == {"n": 0} and got[1].delivery_info["routing_key"] == NAMES[1]
            got[1].ack()
            channel.flush_acks()
    assert client.hlen("unacked") == 0 and all(client.llen(name) == 0 for name in NAMES)


def test_what_landed_while_credit_ran_out_goes_back_to_its_queue(url: str) -> None:
    client = redis.Redis.from_url(url)
    got: list[Any] = []
    with broker_connection(url) as conn:
        channel = conn.default_channel
        channel.basic_qos(0, 1, False)
        on_message = lambda _b, m: got.append(m)  # noqa: E731
        with Consumer(channel, QUEUES, callbacks=[on_message], accept=["json"]):
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)
            wait_for(lambda: idle(client, 1), 30, "the consumer to wait on every queue")
            # Two at once: both land, and the take behind the wait (for one) gets one.
            for name in NAMES[:2]:
                publish(url, 1, queue=name)
            for _ in range(100):
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.2)
                if got:
                    break
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)  # out of credit: the watchers stand down
            assert len(got) == 1 and landed(client) == {} and waiting_on_blmove(client) == 0
            other = NAMES[1] if got[0].delivery_info["routing_key"] == NAMES[0] else NAMES[0]
            assert client.llen(other) == 1  # given back, for a worker with room
            assert not list(client.scan_iter("taskq.bell.*"))  # no ring left to wake it
            got[0].ack()
            channel.flush_acks()


def test_without_client_commands_a_consumer_of_several_queues_polls_them(url: str) -> None:
    # An ACL (or a managed Redis) that refuses CLIENT: no watchers, and nothing breaks.
    client = redis.Redis.from_url(url)
    client.acl_setuser(
        "noclient", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
        commands=["+@all", "-client"],
    )  # fmt: skip
    host, db = url.split("://", 1)[1].rsplit("/", 1)
    limited = f"redis://noclient:pw@{host}/{db}"
    got: list[Any] = []
    try:
        with broker_connection(limited) as conn:
            channel = conn.default_channel
            channel.basic_qos(0, 10, False)
            on_message = lambda _b, m: (got.append(m), m.ack())  # noqa: E731
            with Consumer(channel, QUEUES, callbacks=[on_message], accept=["json"]):
                for name in NAMES:
                    publish(url, 1, queue=name)

                def drained() -> bool:
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=0.2)
                    return len(got) == 3

                wait_for(drained, 30, "a message from each queue")
                assert waiting_on_bell(client) == 0 and waiting_on_blmove(client) <= 1
            channel.flush_acks()
    finally:
        client.acl_deluser("noclient")
    assert sorted(m.delivery_info["routing_key"] for m in got) == sorted(NAMES)
    assert client.hlen("unacked") == 0 and all(client.llen(name) == 0 for name in NAMES)
