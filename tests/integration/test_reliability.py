"""Redelivery limits, dead letters, Redis leases and ETA parking, with real workers."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import redis

from taskq import DeadLettered, NotRegistered
from taskq.broker import broker_connection
from taskq.deadletter import DeadLetters
from taskq.transports.redis_park import PARKED_KEY
from tests.integration.helpers import WorkerProcess, run_cli, wait_for
from tests.integration.worker_tasks import itest_env, make_app

pytestmark = pytest.mark.integration
APP = "tests.integration.worker_tasks"


@pytest.fixture(params=["redis", "amqp"])
def endpoints(
    request: pytest.FixtureRequest, redis_url: str, redis_backend_url: str
) -> tuple[str, str, str]:
    """(broker kind, broker URL, Redis result backend URL) for each broker."""
    url = redis_url if request.param == "redis" else request.getfixturevalue("amqp_url")
    return request.param, url, redis_backend_url


def runs(folder: Path, name: str, stage: str = "started") -> int:
    return len(list(folder.glob(f"{name}.{stage}.*")))


def dead(env: dict[str, str], *args: str, input: str | None = None) -> Any:
    return run_cli("-A", APP, "dead", *args, env=env, input=input)


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
    env = itest_env(broker_url, backend, None, 2.0, **settings)
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
    env = itest_env(broker_url, backend, **settings)

    def bury_unknown(results: list[Any]) -> None:
        with WorkerProcess(APP, "-c", "1", env=env):
            for result in results:
                with pytest.raises(NotRegistered, match=r"itest\.not_yet"):
                    app.AsyncResult(result.id).get(timeout=30)
            # The second time round the results are FAILURE already: wait for the letters.
            wanted = sorted(result.id for result in results)
            wait_for(
                lambda: sorted(r.id for r in DeadLetters(app).list()) == wanted,
                30,
                "the unknown tasks' dead letters",
            )

    def queued() -> int:
        with app.connection() as conn:
            bound = app.default_queue()(conn.default_channel)
            return int(bound.queue_declare(passive=True).message_count)

    unknown = [app.send_task("itest.not_yet", args=(i,)) for i in range(3)]
    ids = [r.id for r in unknown]
    bury_unknown(unknown)
    listed = dead(env, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == ids  # oldest first ...
    assert [r["id"] for r in json.loads(dead(env, "list", "--json").stdout)] == ids  # ... again
    assert {r["reason"] for r in rows} == {"NotRegistered: itest.not_yet"}
    assert {r["queue"] for r in rows} == {queue}
    first = dead(env, "list", "--limit", "1").stdout.splitlines()
    assert len(first) == 2 and first[0].startswith(f"{ids[0]}  itest.not_yet  deliveries=0")
    assert first[1] == f"1 dead letter(s) shown from '{queue}.dead' (--limit 1)."
    shown = dead(env, "show", ids[0])
    assert shown.returncode == 0 and '"task": "itest.not_yet"' in shown.stdout
    missing = dead(env, "show", "no-such-id")
    assert missing.returncode == 1 and "No dead letter with id 'no-such-id'" in missing.stderr
    for usage in (dead(env, "requeue"), dead(env, "requeue", ids[0], "--all")):
        assert usage.returncode == 2 and "--all" in usage.stderr
    partly = dead(env, "requeue", ids[0], "no-such-id")
    assert partly.returncode == 1 and "Requeued 1 message(s)." in partly.stdout
    assert "1 id(s) were not found" in partly.stderr
    assert [r.id for r in DeadLetters(app).list()] == ids[1:]
    assert queued() == 1
    kept = dead(env, "purge", input="n\n")
    assert kept.returncode == 1 and "Aborted" in kept.stderr
    everything = dead(env, "requeue", "--all")
    assert everything.returncode == 0 and "Requeued 2 message(s)." in everything.stdout
    assert DeadLetters(app).list() == [] and queued() == 3
    bury_unknown(unknown)
    purged = dead(env, "purge", "-f")
    assert purged.returncode == 0 and "Purged 3 dead letter(s)." in purged.stdout
    assert DeadLetters(app).list() == []
    app.close()


def test_redis_lease_keeps_a_long_task_from_running_twice(
    redis_url: str, redis_backend_url: str, tmp_path: Path
) -> None:
    # The task runs 4x the visibility timeout while a second worker sweeps for expired
    # messages every 0.5 s; only the renewed lease keeps it from running again.
    broker_url, backend = redis_url, redis_backend_url
    queue = f"lease-{tmp_path.name}"
    options = {"visibility_timeout": 1.5, "unacked_sweep_interval": 0.5}
    settings = {"broker_transport_options": options}
    app = make_app(broker_url, backend, None, **settings)
    env = itest_env(broker_url, backend, **settings)
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
    redis_url: str, redis_backend_url: str, tmp_path: Path
) -> None:
    broker_url, backend = redis_url, redis_backend_url
    queue = f"park-{tmp_path.name}"
    settings = {"worker_eta_horizon": 1.0}
    app = make_app(broker_url, backend, None, **settings)
    env = itest_env(broker_url, backend, **settings)
    client = redis.Redis.from_url(redis_url)
    record = app.tasks["itest.record"]

    def parked() -> int:
        # The parked set is shared by every queue on this Redis: count this test's only.
        return sum(json.loads(e)["queue"] == queue for e in client.zrange(PARKED_KEY, 0, -1))

    with WorkerProcess(APP, "-c", "1", "-Q", queue, env=env) as first:
        results = [
            record.apply_async((str(tmp_path), f"eta{i}"), queue=queue, countdown=10)
            for i in range(5)
        ]
        wait_for(lambda: parked() == 5, 8, "the ETA tasks to be parked")
        first.signal(signal.SIGTERM)  # parked tasks need no worker to hold them
        assert first.wait(30) == 0
    assert runs(tmp_path, "eta*") == 0
    with WorkerProcess(APP, "-c", "1", "-Q", queue, env=env):
        assert [r.get(timeout=30) for r in results] == [f"eta{i}" for i in range(5)]
    assert [runs(tmp_path, f"eta{i}") for i in range(5)] == [1] * 5
    assert parked() == 0
    app.close()


def test_redis_transport_defaults_and_options(redis_url: str) -> None:
    # The figures docs/reliability.md promises, as the worker's channel sees them.
    with broker_connection(redis_url) as conn:
        channel = conn.default_channel
        timings = (
            channel.visibility_timeout,
            channel.unacked_sweep_interval,
            channel.unacked_mutex_expire,
            channel.renew_every,
        )
        assert timings == (60.0, 5.0, 10, 15.0)
        sockets = channel.pool.connection_kwargs
        assert (sockets["socket_timeout"], sockets["socket_connect_timeout"]) == (10.0, 4.0)
        assert sockets["socket_keepalive"] is True
        assert sockets["health_check_interval"] == 25
    options = {"visibility_timeout": 4, "lease_renew_interval": 1, "unacked_mutex_expire": 2}
    with broker_connection(redis_url, options) as conn:
        channel = conn.default_channel
        assert (channel.visibility_timeout, channel.renew_every) == (4, 1.0)
        assert channel.unacked_mutex_expire == 2
    bad = {"visibility_timeout": 2, "lease_renew_interval": 3}
    with broker_connection(redis_url, bad) as conn, pytest.raises(ValueError, match="renew"):
        conn.default_channel  # noqa: B018 - the channel is made on first access
    with (
        broker_connection(redis_url, {"fetch_batch": 0}) as conn,
        pytest.raises(ValueError, match="fetch_batch"),
    ):
        conn.default_channel  # noqa: B018
    with (
        broker_connection(redis_url, {"reply_spin": -1}) as conn,
        pytest.raises(ValueError, match="reply_spin"),
    ):
        conn.default_channel  # noqa: B018
    with broker_connection(redis_url, {"reply_spin": 0}) as conn:
        assert conn.default_channel.reply_spin == 0
        assert conn.default_channel._direct()[2].limit == 0  # the publish's wait has it
