"""The Redis result backend against a real server: Celery's keys, the store script, and
waits (subscribe and read in one round trip, on a connection each thread keeps)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from taskq import Taskq, TimeoutError, states
from taskq.backends import Backend, RetryPolicy
from taskq.backends.redis import RedisBackend
from taskq.exceptions import BackendError
from taskq.message import TaskMessage
from taskq.worker.pool import FINISHED, QUEUED, Crash, run_batch
from taskq.worker.tracer import Job
from tests.faults.proxy import Proxy
from tests.integration.helpers import connections_received, wait_for
from tests.integration.worker_tasks import make_app
from tests.servers import RedisServer

pytestmark = pytest.mark.integration


QUICK = RetryPolicy(max_retries=1, base_sleep=0.001, max_sleep=0.001)


@pytest.fixture
def app(redis_url: str, redis_backend_url: str) -> Iterator[Taskq]:
    app = make_app(redis_url, redis_backend_url, None)
    yield app
    app.close()


@pytest.fixture
def client(redis_backend_url: str) -> Iterator[redis.Redis]:
    """A plain client of the backend's Redis, to look at what the backend did."""
    client = redis.Redis.from_url(redis_backend_url)
    yield client
    client.close()


def subscribers(client: Any, channel: str) -> int:
    return int(client.pubsub_numsub(channel)[0][1])


def storer(client: Any, backend: Backend, task_id: str, value: Any) -> Callable[[], None]:
    """A function that stores ``value`` as soon as a wait is subscribed to ``task_id``."""

    def store() -> None:
        channel = f"celery-task-meta-{task_id}"
        wait_for(lambda: subscribers(client, channel) == 1, 10, "the wait's subscription")
        backend.store_result(task_id, value, states.SUCCESS)

    return store


def test_redis_results_wait_with_pubsub(app: Taskq, client: redis.Redis) -> None:
    result = app.AsyncResult(f"pubsub-{uuid.uuid4()}")
    waiter = threading.Thread(target=lambda: result.get(timeout=20), daemon=True)
    waiter.start()
    channel = f"celery-task-meta-{result.id}"
    wait_for(lambda: subscribers(client, channel) == 1, 10, "the client to subscribe")
    app.backend.store_result(result.id, 5, states.SUCCESS)
    waiter.join(10)
    assert not waiter.is_alive() and result.get(timeout=1) == 5
    raw = client.get(channel)
    assert raw is not None and client.ttl(channel) > 0  # Celery's key, with an expiry
    # Unsubscribed once it had the result (sent, not waited for: it lands just after).
    wait_for(lambda: subscribers(client, channel) == 0, 10, "the unsubscribe")


def test_redis_keeps_a_stored_success_and_announces_each_write(
    app: Taskq, client: redis.Redis
) -> None:
    task_id = f"keep-{uuid.uuid4()}"
    key = f"celery-task-meta-{task_id}"
    client.set(key, b"\xff not json")  # unreadable: overwritten, as Celery would
    listener = client.pubsub()
    listener.subscribe(key)
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    app.backend.store_result(task_id, {"n": 1}, states.RETRY)
    app.backend.store_result(task_id, {"n": 2}, states.SUCCESS)
    # A duplicate run's later outcome never replaces the success.
    app.backend.store_result(task_id, {"n": 3}, states.FAILURE)
    meta = json.loads(client.get(key))
    assert (meta["status"], meta["result"]) == ("SUCCESS", {"n": 2})
    assert 0 < client.ttl(key) <= 86400
    announced = []
    while (message := listener.get_message(timeout=0.5)) is not None:
        announced.append(json.loads(message["data"])["status"])
    assert announced == ["RETRY", "SUCCESS"]  # the kept success is not announced again
    listener.close()


def test_a_result_store_survives_a_dropped_connection_and_a_lost_script_cache(
    app: Taskq, client: redis.Redis
) -> None:
    app.backend.store_result("drop-a", 1, states.SUCCESS)  # this thread's connection is open
    client.client_kill_filter(_type="normal", skipme=True)  # as an idle timeout would
    app.backend.store_result("drop-b", 2, states.SUCCESS)
    client.script_flush()  # as after a Redis restart: the store's EVALSHA answers NOSCRIPT
    app.backend.store_result("drop-c", 3, states.SUCCESS)
    assert [app.AsyncResult(t).get(timeout=5) for t in ("drop-a", "drop-b", "drop-c")] == [1, 2, 3]


def test_a_store_in_flight_is_read_back_before_its_connection_is_used_again(
    app: Taskq, client: redis.Redis
) -> None:
    backend = app.backend
    with backend.stores_in_flight() as failed:
        backend.store_result("flight-a", 1, states.SUCCESS)
        # The read must take the store's reply first, or it would be taken for the GET's.
        assert backend.get_task_meta("flight-a")["result"] == 1
        client.script_flush()  # the next store's reply, read later, is NOSCRIPT
        backend.store_result("flight-b", 2, states.SUCCESS)
        assert backend.get_task_meta("flight-b")["result"] == 2
        client.client_kill_filter(_type="normal", skipme=True)  # the next send goes nowhere
        backend.store_result("flight-c", 3, states.SUCCESS)
        backend.store_result("flight-d", 4, states.SUCCESS)
        backend.store_result("flight-e", 5, states.SUCCESS)
        app.AsyncResult("flight-e").forget()
    assert failed == {}
    stored = [json.loads(client.get(f"celery-task-meta-flight-{t}") or "null") for t in "abcde"]
    assert [meta and meta["result"] for meta in stored] == [1, 2, 3, 4, None]


def test_a_store_in_flight_is_left_to_the_process_that_sent_it(
    redis_backend_url: str, client: redis.Redis
) -> None:
    # A short timeout: had the child read the parent's reply, the parent's read would wait
    # for it that long, then store again on a new connection.
    backend = RedisBackend(redis_backend_url, options={"socket_timeout": 2})
    with backend.stores_in_flight() as failed:
        backend.store_result("forked-a", 1, states.SUCCESS)
        before = connections_received(client)
        backend.store_result("forked-b", 2, states.SUCCESS)  # its reply not read yet
        pid = os.fork()
        if pid == 0:  # the child reads on its own connection, not on the parent's
            try:
                os._exit(0 if backend.get_task_meta("forked-a")["result"] == 1 else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert failed == {}
    assert connections_received(client) == before + 1  # the child's; the parent kept its own
    assert backend.get_task_meta("forked-b")["result"] == 2
    backend.close()


@pytest.fixture
def full_redis(app: Taskq, client: redis.Redis) -> Iterator[None]:
    """A Redis refusing writes (out of memory), with the backend connected beforehand.

    Out of memory may pass, so stores are tried again; once only here, and quickly.
    """
    app.backend.retry = QUICK
    app.backend.store_result("before-full", 0, states.SUCCESS)
    client.config_set("maxmemory", 1)
    try:
        yield
    finally:
        client.config_set("maxmemory", 0)


def test_a_store_that_fails_in_flight_is_reported_when_the_block_ends(
    app: Taskq, full_redis: None
) -> None:
    with app.backend.stores_in_flight() as failed:
        app.backend.store_result("full-a", 1, states.SUCCESS)  # raises nothing: not read yet
        app.backend.store_result("full-b", 2, states.SUCCESS)
    assert sorted(failed) == ["full-a", "full-b"]
    assert all("maxmemory" in str(error) for error in failed.values())
    with pytest.raises(BackendError, match="maxmemory"):  # outside a block a store raises
        app.backend.store_result("full-c", 3, states.SUCCESS)


def test_a_store_that_could_not_be_sent_is_reported_like_one_that_failed() -> None:
    with RedisServer() as server:
        backend = RedisBackend(server.url, retry=QUICK)
        backend.store_result("down-a", 1, states.SUCCESS)  # connected
        server.kill()
        with backend.stores_in_flight() as failed:
            backend.store_result("down-b", 2, states.SUCCESS)  # sent into the dead socket
            # Reading down-b's reply drops the connection; down-c's send finds no server.
            backend.store_result("down-c", 3, states.SUCCESS)
        assert sorted(failed) == ["down-b", "down-c"]
        assert all(f":{server.port}/0 failed" in str(error) for error in failed.values())
        with pytest.raises(BackendError, match=f":{server.port}/0 failed"):
            backend.store_result("down-d", 4, states.SUCCESS)  # outside the block it raises
        backend.close()


def test_a_batch_member_whose_store_failed_in_flight_crashed(app: Taskq, full_redis: None) -> None:
    jobs = [Job(TaskMessage(f"batch-{uuid.uuid4()}", "itest.add", (i, i))) for i in range(2)]
    marks = [QUEUED, QUEUED]
    fates = run_batch(app, jobs, marks.__setitem__)
    assert [type(fate) for fate in fates] == [Crash, Crash]
    assert all("maxmemory" in str(fate.error) for fate in fates if isinstance(fate, Crash))
    # Had the process died with them, their marks would not claim a stored success.
    assert marks == [FINISHED, FINISHED]


def test_redis_result_waits_share_one_subscriber_connection(
    app: Taskq, client: redis.Redis
) -> None:
    # A wait used to open (and close) a connection of its own; now each thread keeps one.

    def wait_for_one(value: int) -> None:
        task_id = f"shared-{uuid.uuid4()}"
        writer = threading.Thread(target=storer(client, app.backend, task_id, value), daemon=True)
        writer.start()
        assert app.AsyncResult(task_id).get(timeout=20) == value
        writer.join(10)

    wait_for_one(0)
    wait_for_one(1)  # by now every connection this test needs is open
    before = connections_received(client)
    for value in range(2, 6):
        wait_for_one(value)
    # A result already stored is read on the same connections.
    app.backend.store_result("stored-already", 7, states.SUCCESS)
    assert app.AsyncResult("stored-already").get(timeout=5) == 7
    assert connections_received(client) == before


def test_a_forked_child_reads_results_on_its_own_connection(
    app: Taskq, client: redis.Redis
) -> None:
    for task_id, value in (("fork-a", 1), ("fork-b", 2), ("fork-c", 3)):
        app.backend.store_result(task_id, value, states.SUCCESS)
    assert app.AsyncResult("fork-a").get(timeout=5) == 1  # this thread now has its client
    before_fork = connections_received(client)
    pid = os.fork()
    if pid == 0:  # the child: its reads must not share the parent's socket
        try:
            os._exit(0 if app.AsyncResult("fork-b").get(timeout=5) == 2 else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert connections_received(client) > before_fork
    assert app.AsyncResult("fork-c").get(timeout=5) == 3


def test_redis_result_waits_start_the_way_the_last_one_turned_out(
    app: Taskq, client: redis.Redis
) -> None:

    def subscribes() -> int:
        return int(client.info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0))

    def stored(value: int) -> str:
        task_id = f"stored-{uuid.uuid4()}"
        app.backend.store_result(task_id, value, states.SUCCESS)
        return task_id

    # Ready when asked for: read first, no subscription.
    start = subscribes()
    assert app.AsyncResult(stored(1)).get(timeout=5) == 1
    assert subscribes() == start
    # Not ready: it subscribes and waits; so the next wait subscribes before reading...
    later = f"later-{uuid.uuid4()}"
    writer = threading.Thread(target=storer(client, app.backend, later, 2), daemon=True)
    writer.start()
    assert app.AsyncResult(later).get(timeout=20) == 2
    writer.join(10)
    assert subscribes() == start + 1
    # ...and still finds a result stored before it, by the read after subscribing...
    assert app.AsyncResult(stored(3)).get(timeout=5) == 3
    assert subscribes() == start + 2
    # ...which found it ready, so the one after reads first again.
    assert app.AsyncResult(stored(4)).get(timeout=5) == 4
    assert subscribes() == start + 2


def test_a_timed_out_wait_unsubscribes_and_keeps_its_connection(
    app: Taskq, client: redis.Redis
) -> None:
    never = f"never-{uuid.uuid4()}"
    with pytest.raises(TimeoutError):
        app.AsyncResult(never).get(timeout=0.3)
    wait_for(lambda: subscribers(client, f"celery-task-meta-{never}") == 0, 10, "unsubscribed")
    later = f"later-{uuid.uuid4()}"
    with ThreadPoolExecutor(max_workers=1) as writer:  # one thread: its connection opens now
        writer.submit(app.backend.store_result, "warm", 0, states.SUCCESS).result()
        before = connections_received(client)
        stored = writer.submit(storer(client, app.backend, later, 8))
        assert app.AsyncResult(later).get(timeout=20) == 8
        stored.result()
    assert connections_received(client) == before  # the same connection waited again


def _subscribed(client: Any) -> set[int]:
    """The ids of the clients subscribed to some channel."""
    return {int(entry["id"]) for entry in client.client_list() if int(entry.get("sub", 0)) > 0}


def test_a_wait_outlives_its_connection_being_killed(app: Taskq, client: redis.Redis) -> None:
    task_id = f"killed-{uuid.uuid4()}"
    channel = f"celery-task-meta-{task_id}"

    def kill_twice_then_store() -> None:
        # Each kill ends the wait's connection: it subscribes again on a new one (at once:
        # the count alone may already be back to one when looked at after the kill).
        for _ in range(2):
            wait_for(lambda: subscribers(client, channel) == 1, 10, "the wait's subscription")
            killed = _subscribed(client)
            for client_id in killed:
                client.client_kill_filter(_id=client_id)
            wait_for(
                lambda killed=killed: (
                    subscribers(client, channel) == 1 and not _subscribed(client) & killed
                ),
                10,
                "the wait to subscribe again on a new connection",
            )
        app.backend.store_result(task_id, 9, states.SUCCESS)

    writer = threading.Thread(target=kill_twice_then_store, daemon=True)
    writer.start()
    assert app.AsyncResult(task_id).get(timeout=30) == 9
    writer.join(10)
    # Between waits too: the kept connection is dead when the next wait starts.
    client.client_kill_filter(_type="normal", skipme=True)
    app.backend.store_result("after-kill", 10, states.SUCCESS)
    assert app.AsyncResult("after-kill").get(timeout=5) == 10


def test_waits_pass_the_connections_health_check(
    redis_backend_url: str, client: redis.Redis
) -> None:
    # After a quiet interval redis-py pings before it sends; the last wait's unsubscribe
    # confirmation is still unread then, and must not be taken for the ping's reply (a
    # failed health check reconnects, which the count of connections would show).
    backend = RedisBackend(redis_backend_url, options={"health_check_interval": 1})

    def wait_for_one(writer: ThreadPoolExecutor, value: int) -> None:
        task_id = f"health-{uuid.uuid4()}"
        stored = writer.submit(storer(client, backend, task_id, value))
        assert backend.wait_for(task_id, timeout=20)["result"] == value
        stored.result()

    with ThreadPoolExecutor(max_workers=1) as writer:
        wait_for_one(writer, 0)  # every connection the test needs is open now
        before = connections_received(client)
        for value in (1, 2):
            time.sleep(1.2)  # past the interval: the next send pings first
            wait_for_one(writer, value)
        assert connections_received(client) == before
    backend.close()


def test_get_keeps_its_timeout_while_the_backend_is_partitioned(redis_server: Any) -> None:
    # A proxy that stops forwarding: every read would block until the socket's timeout
    # (30 s for results), long past what the caller asked for.
    with Proxy(redis_server.port) as proxy:
        backend = RedisBackend(proxy.url(path="/1"))
        backend.store_result("before-partition", 1, states.SUCCESS)  # connected, warm
        for first_read in (False, True):  # either way a wait starts
            backend._local.subscribe_first = first_read
            proxy.blackhole()
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                backend.wait_for(f"never-{first_read}", timeout=2)
            waited = time.monotonic() - started
            proxy.heal()
            assert waited < 6, waited  # the promise is 2 s; this bound allows a slow machine
        backend.close()


@pytest.mark.parametrize("stored", ["before the wait", "during the wait"])
def test_a_result_over_the_subscriber_output_limit_is_read(
    stored: str, app: Taskq, client: redis.Redis
) -> None:
    # Redis cuts a subscribed connection whose replies pass 32 MB (its pub/sub output
    # limit): the GET's reply when the result is there already, the announcement when it
    # comes during the wait. The waiter then reads it as a plain client.
    task_id = f"big-{uuid.uuid4()}"
    value = "x" * (50 * 1024 * 1024)
    backend = app.backend
    if stored == "before the wait":
        backend.store_result(task_id, value, states.SUCCESS)
        backend._local.subscribe_first = True  # the subscribed read, not a plain GET first
        assert backend.wait_for(task_id, timeout=60)["result"] == value
    else:
        helper = RedisBackend(backend.url)  # the worker's side, on its own connection
        backend._local.subscribe_first = True
        thread = threading.Thread(target=storer(client, helper, task_id, value), daemon=True)
        thread.start()
        assert backend.wait_for(task_id, timeout=60)["result"] == value
        thread.join(60)
        helper.close()
