"""The rpc:// result backend with real prefork workers: results come back as messages.

Each client reads its own reply queue; results of other tasks met on the way are kept for
their turn, threads of one client share the queue, and another client sees nothing.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from kombu import Connection

from taskq import Taskq, group, states
from taskq.backends.rpc import NotKeptHere, RpcBackend
from taskq.exceptions import ConfigurationError
from tests.integration.helpers import WorkerProcess, wait_for
from tests.integration.worker_tasks import itest_env, make_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["amqp", "redis"])
def rpc_fleet(request: pytest.FixtureRequest) -> Iterator[tuple[str, WorkerProcess]]:
    broker = request.getfixturevalue("amqp_url" if request.param == "amqp" else "redis_url")
    env = itest_env(broker, "rpc://", None, task_track_started=True)
    worker = WorkerProcess(
        "tests.integration.worker_tasks", "-P", "prefork", "-c", "2", "-Q", "taskq,math", env=env
    ).start()
    try:
        yield broker, worker
    finally:
        code = worker.stop()
        assert code == 0, worker.log()


@pytest.fixture
def client(rpc_fleet: tuple[str, WorkerProcess]) -> Iterator[Taskq]:
    app = make_app(rpc_fleet[0], "rpc://", None)
    try:
        yield app
    finally:
        app.close()


def test_values_errors_and_retries_come_back(client: Taskq) -> None:
    assert isinstance(client.backend, RpcBackend)
    assert client.tasks["itest.add"].delay(2, 2).get(timeout=30) == 4
    assert client.tasks["itest.square"].delay(7).get(timeout=30) == 49
    assert client.tasks["itest.flaky"].delay().get(timeout=30) == 2  # RETRY states, then SUCCESS
    failed = client.tasks["itest.fail"].delay("boom")
    with pytest.raises(ValueError) as info:
        failed.get(timeout=30)
    assert info.value.args == ("boom", 42)
    assert failed.state == states.FAILURE and "ValueError" in (failed.traceback or "")


def test_results_read_in_any_order(client: Taskq) -> None:
    sent = [client.tasks["itest.add"].delay(i, i) for i in range(100)]
    # The last first: the 99 others arrive on the way and wait in memory for their turn.
    assert sent[-1].get(timeout=60) == 198
    assert [r.get(timeout=60) for r in sent] == [2 * i for i in range(100)]
    assert client.backend.get_many([r.id for r in sent[:3]])[2]["result"] == 4


def test_threads_of_one_client_share_its_queue(client: Taskq) -> None:
    add = client.tasks["itest.add"]
    found: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            sent = [add.delay(n, i) for i in range(30)]
            found[n] = [r.get(timeout=60) for r in sent]
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert found == {n * 1000: [n * 1000 + i for i in range(30)] for n in range(4)}


def test_only_the_sender_reads_a_result(
    client: Taskq, rpc_fleet: tuple[str, WorkerProcess]
) -> None:
    result = client.tasks["itest.add"].delay(20, 22)
    assert result.get(timeout=30) == 42
    other = make_app(rpc_fleet[0], "rpc://", None)
    try:
        assert other.AsyncResult(result.id).state == states.PENDING
    finally:
        other.close()
    assert result.state == states.SUCCESS  # still there for the sender


def test_what_needs_stored_results_says_so(client: Taskq) -> None:
    add = client.tasks["itest.add"]
    joined = group(add.s(i, i) for i in range(3)).apply_async()
    assert joined.get(timeout=30) == [0, 2, 4]  # a group joins in the client
    with pytest.raises(NotKeptHere, match="rpc://"):
        joined.save()
    with pytest.raises(ConfigurationError, match="chords need"):
        (group(add.s(1, 1), add.s(2, 2)) | add.s(0)).apply_async()


def test_results_sent_while_the_client_is_cut_off_wait_for_it(
    client: Taskq, rpc_fleet: tuple[str, WorkerProcess]
) -> None:
    """The reply queue outlives the client's connection (on RabbitMQ Celery's is deleted
    with it, and the results sent meanwhile with it); the client reads it again."""
    add = client.tasks["itest.add"]
    assert add.delay(1, 1).get(timeout=30) == 2  # now reading its queue
    backend = client.backend
    assert isinstance(backend, RpcBackend)
    if rpc_fleet[0].startswith("amqp"):
        backend._connection.connection.transport.sock.shutdown(socket.SHUT_RDWR)
    else:
        backend._consumer.channel.client.connection_pool.disconnect()
    sent = [add.delay(i, 1) for i in range(10)]
    with Connection(rpc_fleet[0]) as conn:

        def waiting() -> int:
            try:
                declared = conn.default_channel.queue_declare(client.oid, passive=True)
            except conn.channel_errors:  # Redis: an empty list is no key, "no queue"
                return 0
            return int(declared.message_count)

        # Two states of each: STARTED (the worker tracks it here), then SUCCESS.
        wait_for(lambda: waiting() == 20, 60, "the 20 states to wait in the reply queue")
    assert [r.get(timeout=30) for r in sent] == [i + 1 for i in range(10)]
