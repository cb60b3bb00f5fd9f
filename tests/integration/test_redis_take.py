"""The Redis transport's atomic take, on a real Redis: what is in Redis after each step."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Consumer, Exchange, Producer, Queue

from taskq.broker import broker_connection
from taskq.transports.redis import RESTORE_BATCH
from taskq.transports.redis_script import UNREADABLE_KEY
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

QUEUE = "take-q"


@pytest.fixture
def url(redis_url: str) -> Iterator[str]:
    """A database of its own (db 7), emptied first: the unacked keys are per database."""
    url = redis_url.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(url).flushdb()
    yield url


def publish(url: str, count: int, queue: str = QUEUE, **options: Any) -> None:
    target = Queue(queue, Exchange(queue, "direct"), queue)
    with broker_connection(url) as conn:
        producer = Producer(conn.default_channel)
        for n in range(count):
            producer.publish(
                {"n": n},
                exchange=target.exchange,
                routing_key=queue,
                declare=[target],
                serializer="json",
                **options,
            )


def consume(
    url: str, limit: int, prefetch: int, ack: bool = True, no_ack: bool = False, **options: Any
) -> list[Any]:
    """Drain up to ``limit`` messages; returns them (acked if ``ack``); ``options``: the
    transport's."""
    got: list[Any] = []
    with broker_connection(url, options) as conn:
        channel = conn.default_channel
        channel.basic_qos(0, prefetch, False)

        def on_message(body: Any, message: Any) -> None:
            got.append(message)
            if ack:
                message.ack()

        with Consumer(
            channel,
            [Queue(QUEUE, Exchange(QUEUE, "direct"), QUEUE)],
            callbacks=[on_message],
            accept=["json"],
            no_ack=no_ack,
        ):
            for _ in range(limit * 4 + 20):
                if len(got) >= limit:
                    break
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.2)
        if not ack:
            channel.do_restore = False  # as if it crashed: nothing is handed back
    return got


def taken_back(url: str, count: int, queue: str = QUEUE) -> list[Any]:
    """Sweep as another consumer would (1 s leases, sweeping every 0.1 s) and take what
    comes back to ``queue``, acking it, until ``count`` messages came back."""
    again: list[Any] = []
    with broker_connection(url, {"visibility_timeout": 1, "unacked_sweep_interval": 0.1}) as conn:
        channel = conn.default_channel

        def take_back() -> bool:
            channel.qos.restore_visible()
            message = channel.basic_get(queue)
            if message is not None:
                again.append(message)
                message.ack()
            return len(again) >= count

        wait_for(take_back, 30, f"{count} message(s) to come back")
        channel.flush_acks()
    return again


def test_taken_messages_are_recorded_in_kombus_unacked_layout(url: str) -> None:
    publish(url, 3)
    client = redis.Redis.from_url(url)
    with broker_connection(url) as conn:
        channel = conn.default_channel
        message = channel.basic_get(QUEUE)
        tag = message.delivery_tag
        # Taken and recorded in one step: the queue lost it, the unacked hash has it.
        assert client.llen(QUEUE) == 2
        payload, exchange, routing_key = json.loads(client.hget("unacked", tag))
        assert (payload, exchange, routing_key) == (message._raw, QUEUE, QUEUE)
        assert client.zscore("unacked_index", tag) is not None
        message.ack()
        channel.flush_acks()
        assert client.hget("unacked", tag) is None
        assert client.zscore("unacked_index", tag) is None


def test_a_consumer_that_dies_holding_messages_gets_them_restored(url: str) -> None:
    publish(url, 5)
    held = consume(url, 5, prefetch=5, ack=False, visibility_timeout=2)
    assert len(held) == 5
    client = redis.Redis.from_url(url)
    assert client.llen(QUEUE) == 0 and client.hlen("unacked") == 5
    # Another consumer's sweep puts them back once the timeout has passed, marked redelivered.
    again = taken_back(url, 5)
    assert sorted(m.payload["n"] for m in again) == [0, 1, 2, 3, 4]
    assert all(m.delivery_info["redelivered"] for m in again)
    assert client.hlen("unacked") == 0


def test_a_busy_consumer_takes_a_batch_per_round_trip_and_pipelines_acks(url: str) -> None:
    publish(url, 200)
    client = redis.Redis.from_url(url)
    client.config_resetstat()
    got = consume(url, 200, prefetch=50)
    assert sorted(m.payload["n"] for m in got) == list(range(200))
    stats = client.info("commandstats")
    takes = stats["cmdstat_evalsha"]["calls"]
    assert takes <= 200 // 50 + 4, stats["cmdstat_evalsha"]  # about one per 50, not per message
    assert "cmdstat_brpop" not in stats  # nothing is ever popped outside the script
    assert stats.get("cmdstat_zrem", {}).get("calls", 0) < 200  # acks go in batches
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0


def test_entries_that_are_not_kombu_messages_are_set_aside_not_lost(url: str) -> None:
    client = redis.Redis.from_url(url)
    publish(url, 1)
    client.lpush(QUEUE, b"not json at all", b'{"properties": 3}')
    publish(url, 1)
    got = consume(url, 2, prefetch=10)
    assert sorted(m.payload["n"] for m in got) == [0, 0]
    kept = set(client.lrange(UNREADABLE_KEY, 0, -1))
    assert kept == {b'{"properties": 3}', b"not json at all"}
    assert client.hlen("unacked") == 0


def test_a_message_kombu_cannot_decode_is_set_aside_with_its_bytes(url: str) -> None:
    client = redis.Redis.from_url(url)
    publish(url, 2)
    # A kombu envelope whose base64 body is broken: the Message cannot even be built.
    raw = json.loads(client.lindex(QUEUE, 0))
    raw["body"] = "@@@not base64@@@"
    raw["properties"]["delivery_tag"] = "broken-tag"
    client.lset(QUEUE, 0, json.dumps(raw))
    got = consume(url, 1, prefetch=10)
    assert [m.payload["n"] for m in got] == [0]
    kept = client.lrange(UNREADABLE_KEY, 0, -1)
    assert [json.loads(k)["properties"]["delivery_tag"] for k in kept] == ["broken-tag"]
    assert client.hlen("unacked") == 0


def test_priority_messages_and_a_flushed_script_cache_are_taken(url: str) -> None:
    client = redis.Redis.from_url(url)
    publish(url, 3, priority=9)  # lands on a priority list, not the plain one
    client.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
    got = consume(url, 3, prefetch=10, peek_timeout=0.2)
    assert sorted(m.payload["n"] for m in got) == [0, 1, 2]


def test_no_ack_consumers_take_without_recording(url: str) -> None:
    publish(url, 3)
    client = redis.Redis.from_url(url)
    got = consume(url, 3, prefetch=10, ack=False, no_ack=True)
    assert sorted(m.payload["n"] for m in got) == [0, 1, 2]
    # Nothing for a sweep to put back: a no-ack consumer takes the loss on itself.
    assert client.llen(QUEUE) == 0 and client.hlen("unacked") == 0


def test_closing_a_channel_sends_the_acks_it_still_holds(url: str) -> None:
    publish(url, 4)
    client = redis.Redis.from_url(url)
    with broker_connection(url) as conn:
        channel = conn.default_channel
        for message in [channel.basic_get(QUEUE) for _ in range(4)]:
            message.ack()
        assert client.hlen("unacked") == 4  # the acks wait for a round trip
    assert client.hlen("unacked") == 0 and client.llen(QUEUE) == 0


def test_an_idle_consumer_takes_behind_its_wait_and_never_records_a_past_time(
    url: str,
) -> None:
    client = redis.Redis.from_url(url)
    got: list[Any] = []
    with broker_connection(url, {"peek_timeout": 2.0}) as conn:
        channel = conn.default_channel
        channel.basic_qos(0, 10, False)
        queue = Queue(QUEUE, Exchange(QUEUE, "direct"), QUEUE)
        with Consumer(channel, [queue], callbacks=[lambda _b, m: got.append(m)], accept=["json"]):
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.3)  # the wait (and the take behind it) is out
            published = time.time()
            publish(url, 1)
            conn.drain_events(timeout=5)
        assert [m.payload["n"] for m in got] == [0]
        # The take ran when the message came, up to 2 s after it was sent: its unacked
        # time leans ahead, so no sweep can restore the message while it is held.
        score = client.zscore("unacked_index", got[0].delivery_tag)
        assert score is not None and score >= published
        got[0].ack()
        channel.flush_acks()
    assert client.hlen("unacked") == 0


def test_acks_sent_after_the_script_cache_was_emptied_still_settle(url: str) -> None:
    publish(url, 2)
    client = redis.Redis.from_url(url)
    with broker_connection(url) as conn:
        channel = conn.default_channel
        first, second = channel.basic_get(QUEUE), channel.basic_get(QUEUE)
        first.ack()
        client.script_flush()  # as after a Redis restart: the ack's EVALSHA answers NOSCRIPT
        channel.flush_acks()
        assert client.hkeys("unacked") == [second.delivery_tag.encode()]
        assert client.zrange("unacked_index", 0, -1) == [second.delivery_tag.encode()]
        second.ack()
        channel.flush_acks()
        assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0


def test_one_sweep_per_interval_serves_every_consumer_unless_it_had_more_to_do(
    url: str,
) -> None:
    client = redis.Redis.from_url(url)

    def hold_until_due(count: int) -> None:
        publish(url, count)
        consume(url, count, prefetch=count, ack=False)  # a consumer that died holding them

        def all_due() -> bool:
            now = float(client.time()[0]) - 1.5
            return all(
                score < now for _, score in client.zrange("unacked_index", 0, -1, withscores=True)
            )

        wait_for(all_due, 30, "the dead consumer's leases to run out")

    def sweep(lease: float = 1) -> str:
        options = {"visibility_timeout": lease, "unacked_sweep_interval": 60}
        with broker_connection(url, options) as conn:
            conn.default_channel.qos.restore_visible()
            gate: str = conn.default_channel.sweep_gate
            return gate

    hold_until_due(RESTORE_BATCH + 50)
    gate = sweep()  # a full batch: the gate comes down, so the next sweep goes on
    assert client.llen(QUEUE) == RESTORE_BATCH and not client.exists(gate)
    sweep()
    assert client.llen(QUEUE) == RESTORE_BATCH + 50 and client.exists(gate)
    client.delete(QUEUE)
    hold_until_due(1)
    sweep()  # another consumer within the interval: skipped
    assert client.llen(QUEUE) == 0 and client.hlen("unacked") == 1
    # One whose leases last an hour sweeps too (its gate is its own), and leaves it;
    # it must not keep the 1 s sweepers from sweeping.
    long_gate = sweep(lease=3600)
    assert client.llen(QUEUE) == 0 and client.hlen("unacked") == 1
    assert long_gate != gate and client.exists(long_gate)
    client.delete(gate)  # as when the interval is over
    sweep()
    assert client.llen(QUEUE) == 1 and client.hlen("unacked") == 0
