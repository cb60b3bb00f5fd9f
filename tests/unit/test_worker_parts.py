"""Small worker-side pieces: node names, rate limits, publisher pools, the reconnect wait."""

from __future__ import annotations

import socket
import threading

import billiard
import pytest

from taskq import BrokerUnavailable, ConfigurationError, Taskq
from taskq.broker import broker_connection
from taskq.message import TaskMessage
from taskq.worker.consumer import Consumer, ConsumerOptions
from taskq.worker.pool import BatchCallbacks, PoolOptions
from taskq.worker.prefork import PreforkPool
from taskq.worker.strategy import parse_rate
from taskq.worker.tracer import Job
from taskq.worker.worker import Worker, WorkerOptions, node_name


def test_node_names_follow_celery_conventions() -> None:
    host = socket.gethostname()
    assert node_name(None) == f"taskq@{host}"
    assert node_name("w1") == f"w1@{host}"
    assert node_name("w1@%h") == f"w1@{host}"
    assert node_name("w1@box") == "w1@box"


@pytest.mark.parametrize(
    ("rate", "per_second"),
    [
        ("10/s", 10.0),
        ("120/m", 2.0),
        ("36/h", 0.01),
        ("5", 5.0),
        (7, 7.0),
        (None, None),
        ("0", None),
    ],
)
def test_rate_limits_parse(rate: object, per_second: float | None) -> None:
    assert parse_rate(rate) == per_second  # type: ignore[arg-type]


def test_bad_rate_limit_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="10/s"):
        parse_rate("ten per second")


def test_a_worker_that_cannot_connect_stops_its_pool() -> None:
    app = Taskq("nobroker", broker="redis://127.0.0.1:1/0",
                broker_connection_retry_on_startup=False)  # fmt: skip
    worker = Worker(app, WorkerOptions(pool="prefork", concurrency=2))
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1"):
        worker.start()
    assert billiard.process.active_children() == []


def test_amqp_connections_use_publisher_confirms_and_heartbeats() -> None:
    amqp = broker_connection("amqp://guest:guest@127.0.0.1:1//", {}, heartbeat=30.0)
    assert amqp.transport_options["confirm_publish"] is True and amqp.heartbeat == 30.0
    redis = broker_connection("redis://127.0.0.1:1/0", {}, heartbeat=30.0)
    assert "confirm_publish" not in redis.transport_options and not redis.heartbeat


def test_publisher_pools_are_not_closed_in_forked_children() -> None:
    # kombu closes pooled connections after a fork by default; in a pool child those are
    # the parent's sockets, and closing them cut the worker's publishing connection.
    app = Taskq("t", broker="amqp://guest:guest@127.0.0.1:1//")
    producers = app.amqp.producers
    assert producers.close_after_fork is False
    assert producers.connections.close_after_fork is False
    app.close()


def test_a_worker_retrying_its_broker_still_reads_its_pools_reports() -> None:
    # billiard's time limits count from a task's "started" report, which the consumer's
    # thread reads: it keeps reading them between attempts to reach the broker.
    app = Taskq("retrying", broker="redis://127.0.0.1:1/0", broker_connection_max_retries=2)

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    pool = PreforkPool(app, PoolOptions(concurrency=1))
    pool.start()
    try:
        consumer = Consumer(app, pool, ConsumerOptions((app.default_queue(),), 4, "t@h"))
        reported = threading.Event()
        job = Job(TaskMessage(id="r1", task="t.add", args=(2, 3)))
        pool.apply([job], BatchCallbacks(lambda fates, error: reported.set()))
        # Refused attempts half a second apart or more: the task is done by the last.
        with pytest.raises(BrokerUnavailable):
            consumer._connect(first=True)
        assert reported.is_set()
    finally:
        pool.terminate()


def test_stamps_match_as_celery_compares_them() -> None:
    from taskq.worker.state import RevokedStamps, matching_stamps

    stamps = {"batch": ["b1", "b2"], "user": "ann", "other": "x"}
    stamped = ["batch", "user"]  # "other" is not a stamped header: never matched
    assert matching_stamps({"batch": "b2", "other": "x"}, stamped, stamps) == {"batch": ["b2"]}
    assert matching_stamps({"user": ["bob", "ann"]}, stamped, stamps) == {"user": ["ann"]}
    assert matching_stamps({"user": "bob"}, stamped, stamps) == {}
    assert matching_stamps({"user": "ann"}, None, stamps) == {}
    revoked = RevokedStamps()
    assert not revoked and not revoked.match(stamped, stamps)
    revoked.add({"batch": "b1"})
    assert revoked.match(stamped, stamps) and not revoked.match(["user"], stamps)
