"""sentinel:// on real servers: a master, its replica and one sentinel on loopback.

The broker gets taskq's channel (its atomic take records what it hands out in taskq's held
set), results and the beat store work through the sentinels, and a kept connection follows
the master when the sentinel names another one. The master's death, with three sentinels,
a worker and a client, is F20 (tests/faults/test_sentinel_failover.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from kombu import Consumer, Exchange, Producer, Queue

from taskq import BrokerUnavailable, Taskq
from taskq.beat import open_store
from taskq.broker import broker_connection
from taskq.redis_sentinel import master_client
from taskq.transports.redis_script import HELD_KEY
from taskq.transports.redis_sentinel import SentinelChannel
from tests.integration.helpers import wait_for
from tests.servers import RedisServer, SentinelServer, replica_pair

pytestmark = pytest.mark.integration

MASTER_NAME = "mymaster"
OPTIONS = {"master_name": MASTER_NAME}


@dataclass
class Pair:
    first: RedisServer  # the master at the start
    second: RedisServer  # its replica
    sentinel: SentinelServer

    def url(self, db: int) -> str:
        return f"{self.sentinel.url}/{db}"

    def client(self, server: RedisServer) -> redis.Redis:
        return redis.Redis("127.0.0.1", server.port, socket_timeout=5)


@pytest.fixture
def pair() -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        try:
            first, second = replica_pair(stack)
            sentinel = stack.enter_context(SentinelServer(first.port, MASTER_NAME, quorum=1))
            wait_for(lambda: sentinel.promotable_replicas() == 1, 60, "a promotable replica")
        except Exception as exc:
            pytest.fail(f"cannot start the Sentinel servers: {exc}", pytrace=False)
        yield Pair(first, second, sentinel)


def test_the_broker_channel_is_taskqs_and_takes_atomically(pair: Pair) -> None:
    queue = Queue("sq", Exchange("sq", "direct"), "sq")
    with broker_connection(pair.url(0), OPTIONS) as conn:
        channel = conn.default_channel
        assert isinstance(channel, SentinelChannel)
        Producer(channel).publish({"n": 1}, exchange=queue.exchange, routing_key="sq",
                                  declare=[queue], serializer="json")  # fmt: skip
        message = channel.basic_get("sq")
        assert message is not None and message.payload == {"n": 1}
        master = pair.client(pair.first)
        # taskq's take script recorded it as held by a taskq worker (kombu's BRPOP would not)
        assert master.smembers(HELD_KEY) == {message.delivery_tag.encode()}
        message.ack()
        channel.flush_acks()
        assert master.scard(HELD_KEY) == 0


def test_results_and_the_beat_store_go_through_the_sentinel(pair: Pair) -> None:
    app = Taskq("proj", broker=pair.url(0), backend=pair.url(1))
    app.conf.update(broker_transport_options=OPTIONS, result_backend_transport_options=OPTIONS)
    try:
        app.backend.store_result("t1", 42, "SUCCESS")
        assert app.AsyncResult("t1").get(timeout=10) == 42
        assert pair.client(pair.first).execute_command("SELECT", 1)
        store = open_store(app)
        try:
            assert store.claim("entry", 100.0, "beat-1", 30.0)
            assert not store.claim("entry", 100.0, "beat-2", 30.0)
        finally:
            store.close()
    finally:
        app.close()


def test_a_kept_connection_follows_the_master_the_sentinel_names(pair: Pair) -> None:
    # redis-py reconnects a dropped connection from send_command without asking the
    # sentinels; taskq's MasterConnection asks them whichever way it connects.
    client = master_client(pair.url(0), OPTIONS, "broker_transport_options")
    try:
        connection = client.connection_pool.get_connection()
        connection.send_command("SET", "k", "before")
        assert connection.read_response() == b"OK"
        assert connection.port == pair.first.port
        pair.sentinel.client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        wait_for(lambda: pair.sentinel.master_address() == ("127.0.0.1", pair.second.port),
                 30, "the sentinel to name the replica")  # fmt: skip
        wait_for(lambda: pair.client(pair.second).info("replication")["role"] == "master",
                 30, "the replica to take over")  # fmt: skip
        connection.disconnect()  # as after a lost connection
        connection.send_command("SET", "k", "after")
        assert connection.read_response() == b"OK"
        assert connection.port == pair.second.port
        assert pair.client(pair.second).get("k") == b"after"
        client.connection_pool.release(connection)
    finally:
        client.close()


def test_min_replicas_publishes_once_a_replica_has_it_or_raises(pair: Pair) -> None:
    master = pair.client(pair.first)
    for replicas, timeout in ((1, 5.0), (2, 0.2)):  # one replica exists, not two
        app = Taskq("proj", broker=pair.first.url, backend=None, task_default_queue="mr")
        app.conf.broker_transport_options = {
            "min_replicas": replicas,
            "min_replicas_timeout": timeout,
        }
        waits = master.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
        try:
            if replicas == 1:
                app.send_task("t", (1,))
                assert pair.client(pair.second).llen("mr") == 1  # the replica has it
            else:
                with pytest.raises(BrokerUnavailable, match="1 of the 2 replicas"):
                    app.send_task("t", (2,))
                # Raised, not retried: the message is on the master once, no copy.
                assert master.llen("mr") == 2
        finally:
            app.close()
        assert master.info("commandstats")["cmdstat_wait"]["calls"] == waits + 1


def test_a_consumer_of_two_queues_watches_both_on_the_master(pair: Pair) -> None:
    # Its watchers' connections come from the sentinel pool's connection class: they go to
    # the master the sentinels name, like every other connection of the channel.
    names = ("sw-a", "sw-b")
    queues = [Queue(name, Exchange(name, "direct"), name) for name in names]
    got: list[Any] = []
    master = pair.client(pair.first)

    def blocked(cmd: str) -> int:
        return sum(1 for c in master.client_list() if c.get("cmd") == cmd and "b" in c["flags"])

    with broker_connection(pair.url(0), OPTIONS) as conn:
        channel = conn.default_channel
        on_message = lambda body, m: (got.append(body), m.ack())  # noqa: E731

        def drain() -> None:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)

        with Consumer(channel, queues, callbacks=[on_message], accept=["json"]):
            drain()
            wait_for(lambda: blocked("blmove") == 2 and blocked("blpop") == 1, 30, "watchers")
            producer = Producer(channel)
            for n, queue in enumerate(queues):
                producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.name,
                                 declare=[queue], serializer="json")  # fmt: skip
            wait_for(lambda: (drain(), len(got) == 2)[1], 30, "a message from each queue")
    assert sorted(body["n"] for body in got) == [0, 1]
