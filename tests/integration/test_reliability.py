"""Redelivery limits, dead letters, Redis leases and ETA parking, with real workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from taskq import DeadLettered
from taskq.deadletter import DeadLetters
from taskq.transports.redis import PARKED_KEY
from tests.integration.helpers import ROOT, WorkerProcess, wait_for
from tests.integration.worker_tasks import make_app

pytestmark = pytest.mark.integration
APP = "tests.integration.worker_tasks"


def urls(broker_url: str, redis_url: str) -> tuple[str, str]:
    return broker_url, redis_url.rsplit("/", 1)[0] + "/1"


@pytest.fixture(params=["redis", "amqp"])
def endpoints(request: pytest.FixtureRequest, redis_url: str) -> tuple[str, str, str]:
    """(broker kind, broker URL, Redis result backend URL) for each broker."""
    url = redis_url if request.param == "redis" else request.getfixturevalue("amqp_url")
    return request.param, *urls(url, redis_url)


def env_for(broker: str, backend: str, vt: float = 3600, **settings: Any) -> dict[str, str]:
    return {
        "ITEST_BROKER": broker,
        "ITEST_BACKEND": backend,
        "ITEST_VT": str(vt),
        "ITEST_SETTINGS": json.dumps(settings),
    }


def runs(folder: Path, name: str, stage: str = "started") -> int:
    return len(list(folder.glob(f"{name}.{stage}.*")))


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskq", "-A", APP, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_a_task_that_kills_its_worker_is_dead_lettered_after_max_deliveries(
    endpoints: tuple[str, str, str], tmp_path: Path
) -> None:
    broker, broker_url, backend = endpoints
    queue = f"killer-{broker}-{tmp_path.name}"
    settings: dict[str, Any] = {
        "task_max_deliveries": 3,
        "task_dead_letter_queue": f"{queue}.dead",
        # The worker may die while it holds kombu's sweep lock: let that expire soon.
        "broker_transport_options": {"unacked_sweep_interval": 0.5, "unacked_mutex_expire": 2},
    }
    app = make_app(broker_url, backend, None, 2.0, **settings)
    env = env_for(broker_url, backend, 2.0, **settings)
    result = app.tasks["itest.kill_worker"].apply_async((str(tmp_path), "k"), queue=queue)
    # Each worker dies with the task; the next one gets it back (RabbitMQ at once, Redis
    # after the 2 s visibility timeout) marked redelivered, writes the count into a copy
    # and runs that. The fourth receipt finds 3 deliveries used up and buries it.
    for attempt in range(1, 5):
        worker = WorkerProcess(APP, "-c", "1", "-Q", queue, env=env).start(wait_ready=False)
        if attempt < 4:
            assert worker.wait(60) != 0
            assert runs(tmp_path, "k") == attempt
        else:
            with pytest.raises(DeadLettered, match="delivered 3 times"):
                result.get(timeout=60)
            worker.stop()
            assert "Dead-lettered a message from" in worker.log()
    assert runs(tmp_path, "k") == 3
    (letter,) = DeadLetters(app).list()
    assert (letter.id, letter.deliveries, letter.queue) == (result.id, 3, queue)
    app.close()


def test_dead_cli_lists_shows_requeues_and_purges(
    endpoints: tuple[str, str, str], tmp_path: Path
) -> None:
    broker, broker_url, backend = endpoints
    queue = f"cli-dead-{broker}-{tmp_path.name}"
    settings = {"task_dead_letter_queue": f"{queue}.dead", "task_default_queue": queue}
    app = make_app(broker_url, backend, None, **settings)
    env = env_for(broker_url, backend, **settings)
    unknown = [app.send_task("itest.not_yet", args=(i,)) for i in range(2)]
    with WorkerProcess(APP, "-c", "1", env=env):
        for result in unknown:
            with pytest.raises(Exception, match=r"itest\.not_yet"):
                result.get(timeout=30)
    listed = cli(env, "dead", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(r["id"] for r in rows) == sorted(r.id for r in unknown)
    assert {r["reason"] for r in rows} == {"NotRegistered: itest.not_yet"}
    assert {r["queue"] for r in rows} == {queue}
    shown = cli(env, "dead", "show", unknown[0].id)
    assert shown.returncode == 0 and '"task": "itest.not_yet"' in shown.stdout
    missing = cli(env, "dead", "show", "no-such-id")
    assert missing.returncode == 1 and "No dead letter with id 'no-such-id'" in missing.stderr
    usage = cli(env, "dead", "requeue")
    assert usage.returncode == 2 and "--all" in usage.stderr
    requeued = cli(env, "dead", "requeue", unknown[0].id)
    assert requeued.returncode == 0 and "Requeued 1 message(s)." in requeued.stdout
    assert [r.id for r in DeadLetters(app).list()] == [unknown[1].id]
    with app.connection() as conn:
        bound = app.default_queue()(conn.default_channel)
        assert bound.queue_declare(passive=True).message_count == 1
    purged = cli(env, "dead", "purge", "-f")
    assert purged.returncode == 0 and "Purged 1 dead letter(s)." in purged.stdout
    assert DeadLetters(app).list() == []
    app.close()


def test_redis_lease_keeps_a_long_task_from_running_twice(redis_url: str, tmp_path: Path) -> None:
    # The task runs 4x the visibility timeout while a second worker sweeps for expired
    # messages every 0.5 s; only the renewed lease keeps it from running again.
    broker_url, backend = urls(redis_url, redis_url)
    queue = f"lease-{tmp_path.name}"
    options = {"visibility_timeout": 1.5, "unacked_sweep_interval": 0.5}
    settings = {"broker_transport_options": options}
    app = make_app(broker_url, backend, None, **settings)
    env = env_for(broker_url, backend, **settings)
    with (
        WorkerProcess(APP, "-c", "1", "-Q", queue, env=env),
        WorkerProcess(APP, "-c", "1", "-Q", queue, env=env),
    ):
        result = app.tasks["itest.record"].apply_async((str(tmp_path), "long", 6.0), queue=queue)
        assert result.get(timeout=60) == "long"
    assert (runs(tmp_path, "long"), runs(tmp_path, "long", "done")) == (1, 1)
    # Results expire: the key has result_expires (one day) as its TTL.
    ttl = redis.Redis.from_url(backend).ttl(f"celery-task-meta-{result.id}")
    assert 86400 - 120 < ttl <= 86400
    app.close()


def test_redis_far_eta_is_parked_on_the_broker_and_runs_once(
    redis_url: str, tmp_path: Path
) -> None:
    broker_url, backend = urls(redis_url, redis_url)
    queue = f"park-{tmp_path.name}"
    settings = {"worker_eta_horizon": 1.0}
    app = make_app(broker_url, backend, None, **settings)
    env = env_for(broker_url, backend, **settings)
    client = redis.Redis.from_url(redis_url)
    record = app.tasks["itest.record"]
    with WorkerProcess(APP, "-c", "1", "-Q", queue, env=env) as first:
        results = [
            record.apply_async((str(tmp_path), f"eta{i}"), queue=queue, countdown=4)
            for i in range(5)
        ]
        wait_for(lambda: client.zcard(PARKED_KEY) >= 5, 10, "the ETA tasks to be parked")
        first.signal(signal.SIGTERM)  # parked tasks need no worker to hold them
        assert first.wait(30) == 0
    assert runs(tmp_path, "eta*") == 0
    with WorkerProcess(APP, "-c", "1", "-Q", queue, env=env):
        assert [r.get(timeout=30) for r in results] == [f"eta{i}" for i in range(5)]
    assert [runs(tmp_path, f"eta{i}") for i in range(5)] == [1] * 5
    assert client.zcard(PARKED_KEY) == 0
    app.close()
