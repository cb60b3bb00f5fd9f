"""A taskq worker answers Celery 5.7's remote control: Celery's own client and CLI, on a
real prefork worker, on Redis and RabbitMQ.

Revokes: a task waiting behind busy processes, one held for its ETA and one not yet sent
never run and end REVOKED; ``terminate`` kills only the process running the task, the pool
replaces it, and the task is not delivered again; with ``--statedb`` a revoke outlives a
restart of the worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery  # type: ignore[import-untyped]
import pytest

from taskq import Taskq, states
from tests.integration.helpers import ROOT, wait_for
from tests.integration.test_worker import Setup, make_setup

pytestmark = pytest.mark.integration
NODE = "rc-{kind}@itest"
WAIT = 60


@pytest.fixture(scope="module", params=["redis", "amqp"])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Setup, Taskq, celery.Celery, str]]:
    tmp = tmp_path_factory.mktemp(f"rc-{request.param}")
    setup = make_setup(request.param, request, tmp)
    node = NODE.format(kind=request.param)
    queue = f"rc-{request.param}-{uuid.uuid4().hex[:6]}"
    worker = setup.worker("-c", "2", "-Q", queue, "-n", node).start()
    client = setup.client()
    client.conf.task_default_queue = queue
    capp = celery.Celery("ctl", broker=setup.broker, backend=setup.backend)
    try:
        yield setup, client, capp, node
    finally:
        client.close()
        code = worker.stop()
        assert code == 0, worker.log()


def replies(answer: Any, node: str) -> Any:
    assert answer and node in answer, answer
    return answer[node]


def test_celery_inspect_and_status_see_the_worker(
    fleet: tuple[Setup, Taskq, celery.Celery, str],
) -> None:
    setup, _, capp, node = fleet
    inspect = capp.control.inspect(destination=[node], timeout=5)
    assert replies(inspect.ping(), node) == {"ok": "pong"}
    assert "itest.add" in replies(inspect.registered(), node)
    stats = replies(inspect.stats(), node)
    assert stats["pool"]["max-concurrency"] == 2 and len(stats["pool"]["processes"]) == 2
    assert stats["broker"]["password"] in (None, "**")
    queues = replies(inspect.active_queues(), node)
    assert [q["name"] for q in queues] == [fleet[1].conf.task_default_queue]
    # Celery's own command line, as an operator types it.
    out = celery_cli(setup.broker, "inspect", "ping", "-d", node, "--json")
    assert json.loads(out)[node] == {"ok": "pong"}
    assert node in celery_cli(setup.broker, "status")


def celery_cli(broker: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-b", broker, *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_revoked_tasks_never_run(
    fleet: tuple[Setup, Taskq, celery.Celery, str], tmp_path: Path
) -> None:
    _, app, capp, node = fleet
    record = app.tasks["itest.record"]
    folder = str(tmp_path)
    # Both processes busy; one task waiting behind them, one held for its ETA.
    busy = [record.delay(folder, f"busy{i}", 6.0) for i in range(2)]
    wait_for(lambda: len(list(tmp_path.glob("busy*.started.*"))) == 2, WAIT, "both busy")
    queued = record.delay(folder, "queued")
    held = record.apply_async((folder, "held"), countdown=30)
    wait_for(lambda: {queued.id, held.id} <= ids_held(capp, node), WAIT, "the worker to hold both")
    unsent = str(uuid.uuid4())
    answer = capp.control.revoke([queued.id, held.id, unsent], reply=True, timeout=5)
    assert any(node in a for a in answer), answer
    assert queued.get(timeout=WAIT, propagate=False) is not None
    assert queued.state == held.state == states.REVOKED
    held.get(timeout=WAIT, propagate=False)
    assert held.state == states.REVOKED
    # A task revoked before it was even sent is revoked when it comes.
    late = record.apply_async((folder, "late"), task_id=unsent)
    late.get(timeout=WAIT, propagate=False)
    assert late.state == states.REVOKED
    assert [b.get(timeout=WAIT) for b in busy] == ["busy0", "busy1"]
    assert not list(tmp_path.glob("queued.*")) and not list(tmp_path.glob("held.*"))
    assert not list(tmp_path.glob("late.*"))
    assert {queued.id, held.id, unsent} <= set(replies(capp.control.inspect(
        destination=[node], timeout=5).revoked(), node))  # fmt: skip


def ids_held(capp: celery.Celery, node: str) -> set[str]:
    inspect = capp.control.inspect(destination=[node], timeout=5)
    ids = {t["id"] for t in replies(inspect.active(), node)}
    ids |= {t["id"] for t in replies(inspect.reserved(), node)}
    ids |= {t["request"]["id"] for t in replies(inspect.scheduled(), node)}
    return ids


def test_terminate_kills_only_that_task(
    fleet: tuple[Setup, Taskq, celery.Celery, str], tmp_path: Path
) -> None:
    _, app, capp, node = fleet
    record = app.tasks["itest.record"]
    folder = str(tmp_path)
    doomed = record.delay(folder, "doomed", 60.0)
    other = record.delay(folder, "other", 3.0)
    wait_for(lambda: len(list(tmp_path.glob("*.started.*"))) == 2, WAIT, "both to start")
    before = replies(capp.control.inspect(destination=[node], timeout=5).stats(), node)
    answer = capp.control.revoke(doomed.id, terminate=True, signal="SIGKILL", reply=True)
    assert replies(answer[0], node) == {"ok": f"terminate: {doomed.id}"}
    doomed.get(timeout=WAIT, propagate=False)
    assert doomed.state == states.REVOKED
    assert other.get(timeout=WAIT) == "other"  # its neighbour ran on
    # The pool replaced the process; the task was acked, not delivered again.
    after = replies(capp.control.inspect(destination=[node], timeout=5).stats(), node)
    assert len(after["pool"]["processes"]) == 2
    assert set(after["pool"]["processes"]) != set(before["pool"]["processes"])
    assert len(list(tmp_path.glob("doomed.started.*"))) == 1
    assert not list(tmp_path.glob("doomed.done.*"))


def test_a_revoke_outlives_a_restart_with_statedb(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    setup = make_setup("redis", request, tmp_path)
    statedb = str(tmp_path / "worker.state")
    queue = f"rc-state-{uuid.uuid4().hex[:6]}"
    node = f"rc-state-{uuid.uuid4().hex[:6]}@itest"
    capp = celery.Celery("ctl", broker=setup.broker, backend=setup.backend)
    first = setup.worker("-c", "1", "-Q", queue, "-n", node, "--statedb", statedb).start()
    doomed = str(uuid.uuid4())
    # Until the worker answers: on Redis a broadcast reaches only a worker that has already
    # subscribed to the mailbox, which may come just after its "Connected" line (a revoke
    # sent before it was lost once). A second revoke of the same id changes nothing.
    wait_for(
        lambda: capp.control.revoke(doomed, destination=[node], reply=True, timeout=2),
        WAIT,
        "the worker's reply to the revoke",
    )
    assert first.stop() == 0, first.log()
    assert doomed in Path(statedb).read_text()
    second = setup.worker("-c", "1", "-Q", queue, "-n", node, "--statedb", statedb).start()
    app = setup.client()
    try:
        result = app.tasks["itest.record"].apply_async(
            (str(tmp_path), "doomed"), task_id=doomed, queue=queue
        )
        result.get(timeout=WAIT, propagate=False)
        assert result.state == states.REVOKED
        assert not list(tmp_path.glob("doomed.*"))
    finally:
        app.close()
        assert second.stop() == 0, second.log()


def test_taskq_client_and_cli_on_a_taskq_worker(
    fleet: tuple[Setup, Taskq, celery.Celery, str], tmp_path: Path
) -> None:
    setup, app, _, node = fleet
    assert app.control.ping(destination=[node], timeout=5) == [{node: {"ok": "pong"}}]
    stats = app.control.inspect(destination=[node], timeout=5).stats()
    assert stats is not None and stats[node]["pool"]["max-concurrency"] == 2
    done = subprocess.run(
        [sys.executable, "-m", "taskq", "-A", "tests.integration.worker_tasks",
         "inspect", "registered", "-d", node, "--json"],
        capture_output=True, text=True, timeout=WAIT, cwd=ROOT, env={**os.environ, **setup.env()},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "itest.add" in json.loads(done.stdout)[node]
    record = app.tasks["itest.record"]
    doomed = record.apply_async((str(tmp_path), "doomed"), countdown=30)
    wait_for(lambda: doomed.id in ids_held_taskq(app, node), WAIT, "the worker to hold it")
    doomed.revoke()
    doomed.get(timeout=WAIT, propagate=False)
    assert doomed.state == states.REVOKED and not list(tmp_path.glob("doomed.*"))


def ids_held_taskq(app: Taskq, node: str) -> set[str]:
    scheduled = app.control.inspect(destination=[node], timeout=5).scheduled() or {}
    return {t["request"]["id"] for t in scheduled.get(node, [])}


def test_rate_limit_and_time_limit_commands(
    fleet: tuple[Setup, Taskq, celery.Celery, str], tmp_path: Path
) -> None:
    _, app, capp, node = fleet
    dest = {"destination": [node], "reply": True, "timeout": WAIT}
    add = app.tasks["itest.add"]
    try:
        answer = capp.control.rate_limit("itest.add", "1/h", **dest)
        assert replies(answer[0], node) == {"ok": "new rate limit set successfully"}
        inspect = capp.control.inspect(destination=[node], timeout=5)
        assert "itest.add [rate_limit=1/h]" in replies(inspect.registered("rate_limit"), node)
        first, second = add.delay(3, 3), add.delay(4, 4)
        assert first.get(timeout=WAIT) == 6
        # One an hour: the second waits in the worker for its turn.
        wait_for(lambda: second.id in ids_held(capp, node), WAIT, "the second to be held")
        app.control.revoke(second.id, destination=[node])
        second.get(timeout=WAIT, propagate=False)
        assert second.state == states.REVOKED
    finally:
        answer = capp.control.rate_limit("itest.add", None, **dest)
    assert replies(answer[0], node) == {"ok": "rate limit disabled successfully"}
    assert add.delay(5, 5).get(timeout=WAIT) == 10
    answer = capp.control.rate_limit("itest.add", "fast", **dest)
    assert replies(answer[0], node)["error"].startswith("Invalid rate limit string")
    answer = capp.control.rate_limit("no.such.task", "1/s", **dest)
    assert replies(answer[0], node) == {"error": "unknown task"}

    record = app.tasks["itest.record"]
    try:
        answer = capp.control.time_limit("itest.record", soft=None, hard=1, **dest)
        assert replies(answer[0], node) == {"ok": "time limits set successfully"}
        limited = record.delay(str(tmp_path), "limited", 60.0)
        limited.get(timeout=WAIT, propagate=False)
        assert limited.state == states.FAILURE
        assert type(limited.result).__name__ == "TimeLimitExceeded"
    finally:
        capp.control.time_limit("itest.record", soft=None, hard=None, **dest)
    assert record.delay(str(tmp_path), "free", 1.5).get(timeout=WAIT) == "free"


def test_add_and_cancel_consumer(fleet: tuple[Setup, Taskq, celery.Celery, str]) -> None:
    _, app, capp, node = fleet
    queue = f"rc-extra-{uuid.uuid4().hex[:6]}"
    waiting = app.tasks["itest.add"].apply_async((20, 22), queue=queue)
    added = app.control.add_consumer(queue, destination=[node], reply=True, timeout=WAIT)
    assert added == [{node: {"ok": f"add consumer {queue}"}}]
    assert waiting.get(timeout=WAIT) == 42
    again = app.control.add_consumer(queue, destination=[node], reply=True, timeout=WAIT)
    assert again == [{node: {"ok": f"already consuming from {queue!r}"}}]

    def consumed() -> set[str]:
        inspect = capp.control.inspect(destination=[node], timeout=5)
        return {q["name"] for q in replies(inspect.active_queues(), node)}

    assert queue in consumed()
    gone = capp.control.cancel_consumer(queue, destination=[node], reply=True, timeout=WAIT)
    assert replies(gone[0], node) == {"ok": f"no longer consuming from {queue}"}
    assert consumed() == {app.conf.task_default_queue}
    assert app.tasks["itest.add"].delay(1, 2).get(timeout=WAIT) == 3  # its own queue still


def test_pool_grow_and_shrink(fleet: tuple[Setup, Taskq, celery.Celery, str]) -> None:
    _, app, capp, node = fleet

    def stats() -> Any:
        return replies(capp.control.inspect(destination=[node], timeout=5).stats(), node)

    before = stats()
    assert before["pool"]["max-concurrency"] == 2
    grown = capp.control.pool_grow(1, destination=[node], reply=True, timeout=WAIT)
    assert replies(grown[0], node) == {"ok": "pool will grow"}
    wait_for(lambda: len(stats()["pool"]["processes"]) == 3, WAIT, "a third process")
    assert stats()["prefetch_count"] >= before["prefetch_count"] + 4  # one process's share
    assert app.tasks["itest.add"].delay(1, 1).get(timeout=WAIT) == 2
    shrunk = capp.control.pool_shrink(1, destination=[node], reply=True, timeout=WAIT)
    assert replies(shrunk[0], node) == {"ok": "pool will shrink"}
    wait_for(lambda: len(stats()["pool"]["processes"]) == 2, WAIT, "back to two processes")
    assert stats()["pool"]["max-concurrency"] == 2
    too_many = capp.control.pool_grow(100, destination=[node], reply=True, timeout=WAIT)
    assert "can grow to 8 processes at most" in replies(too_many[0], node)["error"]
    scaled = capp.control.autoscale(4, 2, destination=[node], reply=True, timeout=WAIT)
    assert replies(scaled[0], node)["error"].startswith("Autoscale not enabled")
    assert app.tasks["itest.add"].delay(2, 2).get(timeout=WAIT) == 4


def test_revoke_by_stamped_headers(
    fleet: tuple[Setup, Taskq, celery.Celery, str], tmp_path: Path
) -> None:
    # Stamps come from Celery's client (taskq's does not stamp): a task held for its ETA
    # is revoked by its stamp, and a running one is terminated by its own.
    _, app, capp, node = fleet
    queue, folder = app.conf.task_default_queue, str(tmp_path)
    first, second = (f"b{i}-{uuid.uuid4().hex[:6]}" for i in (1, 2))

    def stamped(name: str, seconds: float, countdown: float | None, batch: str) -> Any:
        sig = capp.signature("itest.record", args=(folder, name, seconds), queue=queue)
        sig.stamp(batch=batch)
        return sig.apply_async(countdown=countdown)

    held = stamped("held", 0.0, 30, first)
    wait_for(lambda: held.id in ids_held(capp, node), WAIT, "the worker to hold it")
    dest = {"destination": [node], "reply": True, "timeout": WAIT}
    answer = capp.control.revoke_by_stamped_headers({"batch": first}, **dest)
    assert replies(answer[0], node) == {
        "ok": f"headers {{'batch': '{first}'}} flagged as revoked, but not terminated"
    }
    assert app.AsyncResult(held.id).get(timeout=WAIT, propagate=False) is not None
    assert app.AsyncResult(held.id).state == states.REVOKED

    running = stamped("running", 60.0, None, second)
    wait_for(lambda: list(tmp_path.glob("running.started.*")), WAIT, "it to start")
    answer = capp.control.revoke_by_stamped_headers(
        {"batch": [second]}, terminate=True, signal="SIGKILL", **dest
    )
    assert replies(answer[0], node) == {
        "ok": f"headers defaultdict(<class 'set'>, {{'batch': {{'{second}'}}}}) revoked"
    }
    app.AsyncResult(running.id).get(timeout=WAIT, propagate=False)
    assert app.AsyncResult(running.id).state == states.REVOKED
    assert not list(tmp_path.glob("held.*")) and not list(tmp_path.glob("running.done.*"))
