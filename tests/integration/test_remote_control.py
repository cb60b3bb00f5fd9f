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
    capp.control.revoke(doomed, destination=[node], reply=True, timeout=5)
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
