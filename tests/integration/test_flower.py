"""Flower (2.2, on Celery 5.7) watching a real taskq worker, on Redis and RabbitMQ.

Flower learns workers from their events and remote control, and tasks from task events:
its HTTP API must list the taskq worker with its stats, and show a task the worker ran as
SUCCESS with its result, and a failed one as FAILURE.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from taskq import Taskq
from tests.integration.helpers import ROOT, wait_for
from tests.integration.test_worker import Setup, make_setup

pytestmark = pytest.mark.integration
WAIT = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        body = response.read().decode()
    return json.loads(body) if body.startswith(("{", "[")) else body


def answers(port: int) -> bool:
    try:
        return get(port, "/healthcheck") == "OK"
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@pytest.fixture(scope="module", params=["redis", "amqp"])
def watched(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Setup, Taskq, str, int]]:
    setup = make_setup(request.param, request, tmp_path_factory.mktemp(f"fl-{request.param}"))
    assert setup.broker is not None
    node = f"fl-{request.param}-{uuid.uuid4().hex[:6]}@itest"
    queue = f"fl-{request.param}-{uuid.uuid4().hex[:6]}"
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-b", setup.broker, "flower",
         "--address=127.0.0.1", f"--port={port}", "--inspect_timeout=5000"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "FLOWER_UNAUTHENTICATED_API": "true"},
    )  # fmt: skip
    worker = setup.worker("-c", "2", "-Q", queue, "-n", node, "-E").start()
    client = setup.client()
    client.conf.task_default_queue = queue
    try:
        wait_for(lambda: answers(port) or flower.poll() is not None, WAIT, "Flower to answer")
        assert flower.poll() is None, _log(log)
        yield setup, client, node, port
    finally:
        client.close()
        flower.terminate()
        try:
            flower.wait(30)
        finally:
            flower.kill()
            log.close()
        assert worker.stop() == 0, worker.log()


def _log(log: Any) -> str:
    log.seek(0)
    return str(log.read().decode(errors="replace"))[-4000:]


def test_flower_lists_the_worker(watched: tuple[Setup, Taskq, str, int]) -> None:
    _, _, node, port = watched

    def listed() -> Any:
        workers = get(port, "/api/workers?refresh=1")
        return workers.get(node) if isinstance(workers, dict) else None

    wait_for(lambda: (listed() or {}).get("stats"), WAIT, f"Flower to list {node}")
    worker = listed()
    assert worker["stats"]["pool"]["max-concurrency"] == 2
    assert "itest.add" in worker["registered"]
    assert [q["name"] for q in worker["active_queues"]] == [watched[1].conf.task_default_queue]

    # From the heartbeats: Flower's workers page shows the worker online.
    def row() -> Any:
        rows = get(port, "/workers?json=1")["data"]
        return next((r for r in rows if r["hostname"] == node and r["status"] is True), None)

    online = wait_for(row, WAIT, f"Flower to show {node} online")
    assert online["sw_ident"] == "py-taskq" and online["freq"] == 2.0  # type: ignore[index]


def test_flower_shows_task_states(watched: tuple[Setup, Taskq, str, int]) -> None:
    _, app, node, port = watched
    ok = app.tasks["itest.add"].delay(20, 22)
    bad = app.tasks["itest.fail"].delay("boom")
    assert ok.get(timeout=WAIT) == 42
    with pytest.raises(ValueError):
        bad.get(timeout=WAIT)

    def task(task_id: str, state: str) -> Any:
        tasks = get(port, "/api/tasks")
        found = tasks.get(task_id) if isinstance(tasks, dict) else None
        return found if found and found.get("state") == state else None

    done = wait_for(lambda: task(ok.id, "SUCCESS"), WAIT, f"Flower to show {ok.id} SUCCESS")
    assert done["name"] == "itest.add" and done["result"] == "42"  # type: ignore[index]
    assert done["worker"] == node and done["args"] == "(20, 22)"  # type: ignore[index]
    failed = wait_for(lambda: task(bad.id, "FAILURE"), WAIT, f"Flower to show {bad.id} FAILURE")
    assert failed["exception"] == "ValueError('boom', 42)"  # type: ignore[index]
    info = get(port, f"/api/task/info/{ok.id}")
    assert info["state"] == "SUCCESS" and info["runtime"] >= 0
