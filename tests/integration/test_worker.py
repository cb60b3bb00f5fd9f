"""Real `taskq worker` processes (CLI, prefork pool) on Redis, RabbitMQ and the embedded
default, driven by a real client."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from kombu import Producer

from taskq import NotRegistered, Taskq, TimeLimitExceeded, WorkerLostError, states
from taskq.exceptions import MalformedMessage
from tests.integration.helpers import WorkerProcess, children, wait_for
from tests.integration.worker_tasks import itest_env, make_app

pytestmark = pytest.mark.integration
BROKERS = ["redis", "amqp", "embedded"]


@dataclass
class Setup:
    kind: str
    broker: str | None
    backend: str | None
    data_dir: str | None
    visibility_timeout: float = 3600.0

    def env(self) -> dict[str, str]:
        return itest_env(self.broker, self.backend, self.data_dir, self.visibility_timeout)

    def client(self) -> Taskq:
        return make_app(self.broker, self.backend, self.data_dir, self.visibility_timeout)

    def worker(self, *args: str) -> WorkerProcess:
        return WorkerProcess(
            "tests.integration.worker_tasks", "-P", "prefork", *args, env=self.env()
        )


def make_setup(kind: str, request: pytest.FixtureRequest, tmp: Path, vt: float = 3600.0) -> Setup:
    if kind == "embedded":
        return Setup(kind, None, None, str(tmp), vt)
    backend = request.getfixturevalue("redis_backend_url")
    broker = request.getfixturevalue("redis_url" if kind == "redis" else "amqp_url")
    return Setup(kind, broker, backend, None, vt)


@pytest.fixture(scope="module", params=BROKERS)
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Setup, Taskq, WorkerProcess]]:
    setup = make_setup(request.param, request, tmp_path_factory.mktemp(request.param))
    worker = setup.worker("-c", "2", "-Q", "taskq,math").start()
    client = setup.client()
    try:
        yield setup, client, worker
    finally:
        client.close()
        code = worker.stop()
        assert code == 0, worker.log()


def test_round_trip_routing_retry_and_failure(running: tuple[Setup, Taskq, WorkerProcess]) -> None:
    _, app, _ = running
    assert app.tasks["itest.add"].delay(2, 2).get(timeout=20) == 4
    assert app.tasks["itest.square"].delay(7).get(timeout=20) == 49  # via the math queue
    assert app.tasks["itest.flaky"].delay().get(timeout=20) == 2
    failed = app.tasks["itest.fail"].delay("boom")
    with pytest.raises(ValueError) as info:
        failed.get(timeout=20)
    assert info.value.args == ("boom", 42)
    assert failed.state == states.FAILURE and "ValueError" in (failed.traceback or "")
    results = [app.tasks["itest.add"].delay(i, i) for i in range(200)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(200)]


def test_time_limits_and_pool_recovery(running: tuple[Setup, Taskq, WorkerProcess]) -> None:
    _, app, worker = running
    with pytest.raises(TimeLimitExceeded):
        app.tasks["itest.hard_limited"].delay(30).get(timeout=20)
    wait_for(lambda: len(children(worker.pid)) == 2, 20, "the killed child to be replaced")
    assert app.tasks["itest.soft_limited"].delay(30).get(timeout=20) == "caught soft limit"
    # The killed child was replaced: both slots still run tasks.
    assert (
        sum(r.get(timeout=20) for r in [app.tasks["itest.add"].delay(1, 1) for _ in range(10)])
        == 20
    )


def test_lost_child_is_requeued_under_late_ack(
    running: tuple[Setup, Taskq, WorkerProcess], tmp_path: Path
) -> None:
    _, app, worker = running
    result = app.tasks["itest.die_once"].delay(str(tmp_path / f"marker-{uuid.uuid4()}"))
    try:
        value = result.get(timeout=60)
    except TimeoutError:
        log = worker.log()[-6000:]
        raise AssertionError(f"no result in 60 s; the worker's log:\n{log}") from None
    assert value == "survived"
    assert f"[{result.id}]: its process exited" in worker.log()
    assert "returned for delivery 2" in worker.log()


def test_lost_child_with_early_ack_fails(running: tuple[Setup, Taskq, WorkerProcess]) -> None:
    _, app, _ = running
    with pytest.raises(WorkerLostError):
        app.tasks["itest.die_early_ack"].delay().get(timeout=30)


def test_bad_input_is_failed_and_skipped(running: tuple[Setup, Taskq, WorkerProcess]) -> None:
    setup, app, worker = running
    bad = [
        ("{not json", "application/json", {"task": "itest.add", "id": f"bad-{uuid.uuid4()}"}),
        (
            "gAN9cQAu",
            "application/x-python-serialize",
            {"task": "itest.add", "id": f"pk-{uuid.uuid4()}"},
        ),
        ("[[1, 2], {}]", "application/json", {"task": "itest.add", "id": f"shape-{uuid.uuid4()}"}),
        ("[[1, 2], {}, {}]", "application/json", {"id": f"noname-{uuid.uuid4()}"}),
        ("[[], {}, {}]", "application/json", {}),
    ]
    with app.connection() as conn:
        producer = Producer(conn.default_channel)
        for body, content_type, headers in bad:
            producer.publish(
                body,
                routing_key="taskq",
                content_type=content_type,
                content_encoding="utf-8",
                headers=headers,
                declare=[app.default_queue()],
            )
    unknown = app.send_task("itest.nope", (1,))
    with pytest.raises(NotRegistered):
        unknown.get(timeout=20)
    for _, _, headers in bad:
        if "id" in headers:
            with pytest.raises(MalformedMessage):
                app.AsyncResult(headers["id"]).get(timeout=20)
    assert app.tasks["itest.add"].delay(1, 2).get(timeout=20) == 3
    assert worker.proc is not None and worker.proc.poll() is None
    if setup.kind == "redis":
        # An envelope that is not even JSON, pushed straight onto the list.
        client = redis.Redis.from_url(setup.broker or "")
        client.lpush("taskq", b"\xff garbage")
        assert app.tasks["itest.add"].delay(2, 3).get(timeout=20) == 5
        assert "not kombu messages" in worker.log()
        assert b"\xff garbage" in client.lrange("taskq.unreadable", 0, -1)  # kept


@pytest.mark.parametrize("kind", BROKERS)
def test_warm_shutdown_finishes_running_and_returns_reserved(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    setup = make_setup(kind, request, tmp_path / "data")
    runs = tmp_path / "runs"
    runs.mkdir()
    app = setup.client()
    record = app.tasks["itest.record"]
    worker = setup.worker("-c", "2", "-Q", f"warm-{kind}")
    worker.start()
    running = record.apply_async((str(runs), "slow", 2.0), queue=f"warm-{kind}")
    later = [
        record.apply_async((str(runs), f"eta{i}"), countdown=4, queue=f"warm-{kind}")
        for i in range(10)
    ]
    wait_for(lambda: list(runs.glob("slow.started.*")), 20, "the slow task to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()
    assert running.get(timeout=5) == "slow"  # it finished during the warm shutdown
    assert not list(runs.glob("eta*"))  # ETA tasks were not run by the stopping worker
    second = setup.worker("-c", "2", "-Q", f"warm-{kind}").start()
    try:
        assert [r.get(timeout=30) for r in later] == [f"eta{i}" for i in range(10)]
    finally:
        assert second.stop() == 0
    for i in range(10):
        assert len(list(runs.glob(f"eta{i}.done.*"))) == 1  # each ran exactly once
    app.close()


@pytest.mark.parametrize("kind", BROKERS)
def test_sigkilled_worker_loses_nothing(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    setup = make_setup(kind, request, tmp_path / "data", vt=2.0)
    runs = tmp_path / "runs"
    runs.mkdir()
    app = setup.client()
    record = app.tasks["itest.record"]
    queue = f"kill-{kind}"
    worker = setup.worker("-c", "2", "-Q", queue).start()
    results = [record.apply_async((str(runs), f"t{i}", 3.0), queue=queue) for i in range(4)]
    wait_for(lambda: len(list(runs.glob("*.started.*"))) >= 2, 20, "two tasks to start")
    worker.kill()  # SIGKILL to the worker and its pool at once: no shutdown, no ack
    assert not list(runs.glob("*.done.*"))  # the crash cut the running ones short
    second = setup.worker("-c", "2", "-Q", queue).start()
    try:
        assert sorted(r.get(timeout=60) for r in results) == [f"t{i}" for i in range(4)]
    finally:
        second.stop()
    app.close()


def test_a_batch_whose_process_dies_charges_only_the_task_that_killed_it(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Redis: its take delivers everything queued at once. Short tasks share batches once
    # the worker has seen them run, so die_once runs that survive and a few records go
    # first; the die_once that kills its process then shares a batch with the records
    # after it (one process, two batches in flight), which had not started. How many
    # share its batch depends on measured run times, so a round where it happened to end
    # its batch is run again (each round checks that nothing was lost or run twice).
    setup = make_setup("redis", request, tmp_path)
    app = setup.client()
    reruns, logs = 0, []
    for round_ in range(4):
        reruns, log = _batch_death_round(setup, app, tmp_path / f"round{round_}")
        logs.append(log)
        if reruns:
            break
    assert reruns, "the dying task never had batch-mates waiting behind it"
    # Short tasks deepened the window from -c 1 x 16 to two full batches of 16 (a DEBUG line).
    assert any("Prefetch window 16 -> 32" in log for log in logs), logs[-1]
    app.close()


def _batch_death_round(setup: Setup, app: Taskq, folder: Path) -> tuple[int, str]:
    folder.mkdir()
    record, die = app.tasks["itest.record"], app.tasks["itest.die_once"]
    (folder / "warm").write_text("")
    # A task's first run in a fresh process is slow: a few runs teach the real average.
    warm = [die.delay(str(folder / "warm")) for _ in range(8)]
    warm += [record.delay(str(folder), f"w{i}") for i in range(4)]
    names = [f"r{i}" for i in range(7)]
    results = [record.delay(str(folder), names[0])]
    results.append(die.delay(str(folder / "marker")))
    results += [record.delay(str(folder), name) for name in names[1:]]
    worker = setup.worker("-c", "1", "--prefetch-multiplier", "16", "-l", "debug").start()
    try:
        assert [r.get(timeout=30) for r in warm] == ["survived"] * 8 + ["w0", "w1", "w2", "w3"]
        assert [r.get(timeout=30) for r in results] == [names[0], "survived", *names[1:]]
    finally:
        code = worker.stop()
    log = worker.log()
    assert code == 0, log
    for name in names:  # every other task ran exactly once: none was charged or lost
        assert len(list(folder.glob(f"{name}.started.*"))) == 1, name
        assert len(list(folder.glob(f"{name}.done.*"))) == 1, name
    assert f"[{results[1].id}]: its process exited" in log
    assert "returned for delivery 2" in log
    rerun = [r for r in results[2:] if f"[{r.id}] had not started when its process" in log]
    assert log.count("had not started when its process exited") == len(rerun), log
    return len(rerun), log
