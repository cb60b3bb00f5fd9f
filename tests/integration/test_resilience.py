"""A worker survives its broker going away, and its signals do what they say."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import WorkerProcess, wait_for
from tests.integration.worker_tasks import itest_env, make_app
from tests.servers import RedisServer, serve

pytestmark = pytest.mark.integration
APP = "tests.integration.worker_tasks"


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    # Its own server: restarting the shared one would disturb other tests' workers.
    yield from serve(RedisServer, "redis-server")


def test_worker_reconnects_after_the_broker_restarts(private_redis: RedisServer) -> None:
    url = private_redis.url
    backend = url.rsplit("/", 1)[0] + "/1"  # on the server that restarts: results survive
    app = make_app(url, backend, None)
    add = app.tasks["itest.add"]
    env = itest_env(url, backend)
    with WorkerProcess(APP, "-P", "prefork", "-c", "2", env=env) as worker:
        assert add.delay(1, 1).get(timeout=20) == 2
        private_redis.restart()
        app.close()  # the client's pooled connections died with the server
        wait_for(lambda: "Connection to broker lost" in worker.log(), 30, "the worker to notice")
        assert add.delay(2, 2).get(timeout=30) == 4
        assert worker.log().count("Connected to") >= 2
    app.close()


@pytest.mark.parametrize("how", ["sigquit", "second-sigterm"])
def test_cold_shutdown_returns_running_late_ack_tasks(
    how: str, redis_url: str, redis_backend_url: str, tmp_path: Path
) -> None:
    # With one delivery allowed, a cold stop that counted the task it interrupted would
    # dead-letter it instead of letting the next worker run it.
    app = make_app(redis_url, redis_backend_url, None, task_max_deliveries=1)
    record = app.tasks["itest.record"]
    queue = f"cold-{how}"
    env = itest_env(redis_url, redis_backend_url, task_max_deliveries=1)
    runs = tmp_path / "runs"
    runs.mkdir()
    worker = WorkerProcess(APP, "-P", "prefork", "-c", "1", "-Q", queue, env=env).start()
    long_task = record.apply_async((str(runs), "long", 30.0), queue=queue)
    wait_for(lambda: list(runs.glob("long.started.*")), 20, "the long task to start")
    if how == "sigquit":
        worker.signal(signal.SIGQUIT)
    else:
        worker.signal(signal.SIGTERM)
        wait_for(lambda: "warm shutdown" in worker.log(), 10, "the warm shutdown to begin")
        worker.signal(signal.SIGTERM)
    worker.wait(30)
    assert "cold shutdown" in worker.log()
    assert not list(runs.glob("long.done.*"))
    # The running task was returned to the broker and runs on the next worker.
    second = WorkerProcess(APP, "-P", "prefork", "-c", "1", "-Q", queue, env=env).start()
    try:
        wait_for(lambda: list(runs.glob("long.started.*"))[1:], 30, "the task to run again")
        assert long_task.state == "PENDING"
    finally:
        second.signal(signal.SIGQUIT)  # cold again: the 30 s task is not waited for
        second.wait(30)
    app.close()


@pytest.mark.parametrize(
    "option", [("--max-tasks-per-child", "1"), ("--max-memory-per-child", "1")]
)
def test_children_are_recycled_between_tasks(
    option: tuple[str, str], redis_url: str, redis_backend_url: str, tmp_path: Path
) -> None:
    # One task per child, by count or because every child is over 1 KiB of memory: each
    # task runs in a process of its own, and none is lost or run twice on the way.
    app = make_app(redis_url, redis_backend_url, None)
    env = itest_env(redis_url, redis_backend_url)
    queue = f"recycle-{option[0]}"
    record = app.tasks["itest.record"]
    with WorkerProcess(APP, "-P", "prefork", "-c", "1", "-Q", queue, *option, env=env):
        results = [record.apply_async((str(tmp_path), f"r{i}"), queue=queue) for i in range(6)]
        assert [r.get(timeout=30) for r in results] == [f"r{i}" for i in range(6)]
    pids = [path.name.split(".")[2] for path in tmp_path.glob("r*.done.*")]
    assert len(pids) == 6 and len(set(pids)) == 6, pids
    app.close()


def test_sigterm_to_the_whole_process_group_is_a_clean_warm_shutdown(
    redis_url: str, redis_backend_url: str
) -> None:
    # What `kill -TERM -<pgid>` or a supervisor does: every process of the group gets it.
    app = make_app(redis_url, redis_backend_url, None)
    env = itest_env(redis_url, redis_backend_url)
    for attempt in range(6):
        worker = WorkerProcess(APP, "-P", "prefork", "-c", "2", "-Q", "pgroup", env=env).start()
        try:
            results = [
                app.tasks["itest.add"].apply_async((i, attempt), queue="pgroup") for i in range(5)
            ]
            assert [r.get(timeout=20) for r in results] == [i + attempt for i in range(5)]
            os.killpg(worker.pid, signal.SIGTERM)
            assert worker.wait(30) == 0, worker.log()
        finally:
            worker.kill()
    app.close()
