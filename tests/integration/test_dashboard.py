"""``taskq dashboard`` against a real prefork worker on Redis: its JSON reports the worker,
the tasks, the queues and a dead letter; its actions reach the workers; its /metrics match
the tasks sent; auth holds off loopback; no page shows a credential."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskq.deadletter import DeadLetters
from tests.integration.dashboard_tasks import app as dash_app
from tests.integration.helpers import DashboardProcess, WorkerProcess, run_cli, wait_for

pytestmark = pytest.mark.integration

APP = "tests.integration.dashboard_tasks"
SECRET = "s3cret-broker-pw"  # in the broker URL: Redis's default user takes any password


@dataclass
class Fleet:
    worker: WorkerProcess
    board: DashboardProcess
    broker: str
    backend: str

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return json.loads(fetch(self.board.url + path.lstrip("/"), headers=headers))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        page = fetch(self.board.url + "workers")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert token, page
        request = urllib.request.Request(
            self.board.url + path.lstrip("/"), data=json.dumps(body).encode(), method="POST",
            headers={"content-type": "application/json", "x-csrf-token": token.group(1)},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())


def fetch(url: str, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return str(answer.read().decode())


@pytest.fixture(scope="module")
def fleet(redis_server: Any) -> Iterator[Fleet]:
    port = redis_server.port
    broker = f"redis://default:{SECRET}@127.0.0.1:{port}/6"
    backend = f"redis://default:{SECRET}@127.0.0.1:{port}/7"
    env = {"DASH_BROKER": broker, "DASH_BACKEND": backend}
    dash_app.conf.broker_url, dash_app.conf.result_backend = broker, backend
    with redis_server_client(port) as client:
        client.flushdb()
    worker = WorkerProcess(APP, "-E", "-c", "2", "-Q", "dashq", "-n", "dashw@%h", env=env)
    board = DashboardProcess(APP, env=env)
    with worker, board:
        yield Fleet(worker, board, broker, backend)
    dash_app.close()


def redis_server_client(port: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, db=6)


def test_it_reports_the_worker_with_its_pool_and_queues(fleet: Fleet) -> None:
    def worker() -> Any:
        found = [
            w for w in fleet.get("/api/workers")["workers"] if w["hostname"].startswith("dashw@")
        ]
        return found[0] if found and found[0]["pool_size"] is not None else None

    row = wait_for(worker, 60, "the worker with its pool size on /api/workers")
    assert row["online"] and row["pool_size"] == 2 and row["queues"] == ["dashq"]  # type: ignore[index]
    assert row["sw_ident"] == "py-taskq"  # type: ignore[index]


def test_it_reports_tasks_their_outcome_and_a_traceback(fleet: Fleet) -> None:
    ok = dash_app.tasks["dash.add"].delay(2, 3)
    bad = dash_app.tasks["dash.fail"].delay("dash-test")
    assert ok.get(timeout=60) == 5
    with pytest.raises(ValueError):
        bad.get(timeout=60)

    def row(task_id: str, state: str) -> Any:
        rows = fleet.get(f"/api/tasks?state={state}&limit=1000")["tasks"]
        return next((r for r in rows if r["id"] == task_id), None)

    done = wait_for(lambda: row(ok.id, "SUCCESS"), 60, "the task's SUCCESS on /api/tasks")
    assert done["name"] == "dash.add" and done["args"] == "(2, 3)"  # type: ignore[index]
    assert done["worker"].startswith("dashw@") and done["runtime"] >= 0  # type: ignore[index]
    wait_for(lambda: row(bad.id, "FAILURE"), 60, "the failed task on /api/tasks")
    detail = fleet.get(f"/api/tasks/{bad.id}")["task"]
    assert "failed on purpose: dash-test" in detail["exception"]
    assert "Traceback" in detail["traceback"] and "ValueError" in detail["traceback"]


def test_a_task_it_never_saw_is_read_from_the_result_backend(fleet: Fleet) -> None:
    dash_app.backend.store_result("made-up-id", 42, "SUCCESS")
    detail = fleet.get("/api/tasks/made-up-id")["task"]
    assert (detail["state"], detail["result"], detail["source"]) == ("SUCCESS", "42", "backend")


def test_it_reports_the_depth_of_a_queue_nobody_consumes(fleet: Fleet) -> None:
    for _ in range(3):
        dash_app.tasks["dash.parked"].delay()

    def depth() -> Any:
        queues = {q["name"]: q for q in fleet.get("/api/queues")["queues"]}
        return queues["parked"]["depth"] == 3 and queues

    queues = wait_for(depth, 60, "the parked queue's depth of 3 on /api/queues")
    assert queues["parked"]["consumers"] == 0 and queues["dashq"]["consumers"] == 1  # type: ignore[index]
    assert queues["dashq.dead"]["dead_letter"]  # type: ignore[index]


def test_it_lists_shows_and_requeues_a_dead_letter(fleet: Fleet) -> None:
    sent = dash_app.send_task("dash.not_registered", args=("lost",))
    wait_for(lambda: DeadLetters(dash_app).get(sent.id), 60, "the unknown task's dead letter")
    listed = wait_for(
        lambda: [d for d in fleet.get("/api/dead")["dead_letters"] if d["id"] == sent.id],
        60, "the dead letter on /api/dead",
    )  # fmt: skip
    assert listed[0]["task"] == "dash.not_registered"  # type: ignore[index]
    shown = fleet.get(f"/api/dead/{sent.id}")["dead_letter"]
    assert "lost" in shown["args"] and "not_registered" in shown["reason"] + shown["task"]
    answer = fleet.post("/api/dead/requeue", {"ids": [sent.id]})
    assert answer["ok"] and answer["message"].startswith("1 dead letter")
    # Requeued, the worker meets the unknown task again and buries it again.
    wait_for(lambda: DeadLetters(dash_app).get(sent.id), 60, "the letter buried again")


def test_a_revoke_from_the_dashboard_revokes(fleet: Fleet, tmp_path: Path) -> None:
    wait_for(lambda: fleet.get("/api/overview")["workers"]["online"], 60, "a worker online")
    gate = tmp_path / "open"
    running = dash_app.tasks["dash.gate"].delay(str(gate))
    rows = lambda: {r["id"]: r for r in fleet.get("/api/tasks?limit=1000")["tasks"]}  # noqa: E731
    wait_for(lambda: rows().get(running.id, {}).get("state") == "STARTED", 60, "STARTED")
    answer = fleet.post(f"/api/tasks/{running.id}/revoke", {"terminate": True, "signal": "SIGTERM"})
    assert answer["ok"] and any(running.id in str(r) for r in answer["replies"]), answer
    wait_for(lambda: running.state == "REVOKED", 60, "the task REVOKED in the backend")
    wait_for(lambda: rows()[running.id]["state"] == "REVOKED", 60, "REVOKED on /api/tasks")


def test_the_fleet_metrics_count_the_tasks_sent(fleet: Fleet) -> None:
    results = [dash_app.tasks["dash.add"].delay(i, 1) for i in range(4)]
    assert [r.get(timeout=60) for r in results] == [1, 2, 3, 4]
    ids = {r.id for r in results}

    def all_seen() -> bool:
        rows = fleet.get("/api/tasks?state=SUCCESS&limit=1000")["tasks"]
        return ids <= {r["id"] for r in rows}

    wait_for(all_seen, 60, "the four tasks on /api/tasks")
    succeeded = {
        r["id"] for r in fleet.get("/api/tasks?name=dash.add&state=SUCCESS&limit=1000")["tasks"]
    }
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(fetch(fleet.board.url + "metrics"))
        for s in family.samples
    }
    task = (("task", "dash.add"),)
    assert samples[("taskq_tasks_succeeded_total", task)] == len(succeeded)
    assert samples[("taskq_task_runtime_seconds_count", task)] == len(succeeded)
    worker = next(k for k in samples if k[0] == "taskq_worker_up")
    assert samples[worker] == 1.0 and dict(worker[1])["worker"].startswith("dashw@")
    assert samples[("taskq_queue_depth", (("queue", "dashq"),))] >= 0
    assert ("taskq_dead_letters", (("queue", "dashq.dead"),)) in samples


def test_no_page_shows_a_credential(fleet: Fleet) -> None:
    wait_for(lambda: fleet.get("/api/overview")["events"]["connected"], 60, "events connected")
    pages = ["workers", "tasks", "queues", "dead", "chart", "api/overview", "api/workers",
             "api/queues", "api/tasks", "api/dead", "api/chart", "metrics"]  # fmt: skip
    for page in pages:
        assert SECRET not in fetch(fleet.board.url + page), page
    assert fleet.get("/api/overview")["broker"].startswith("redis://default:**@")
    assert SECRET not in fleet.board.log() and SECRET not in fleet.worker.log()


def test_off_loopback_it_wants_auth_or_an_explicit_no_auth(redis_url: str) -> None:
    env = {"DASH_BROKER": redis_url}
    refused = run_cli("-A", APP, "dashboard", "--address", "0.0.0.0", "--port", "0", env=env)
    assert refused.returncode == 2 and "--auth user:password" in refused.stderr
    with DashboardProcess(APP, "--address", "0.0.0.0", "--auth", "admin:pw-1234", env=env) as board:
        url = board.url.replace("0.0.0.0", "127.0.0.1") + "api/overview"
        with pytest.raises(urllib.error.HTTPError) as denied:
            fetch(url)
        assert denied.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as wrong:
            fetch(url, {"authorization": "Basic " + base64.b64encode(b"admin:nope").decode()})
        assert wrong.value.code == 401
        good = base64.b64encode(b"admin:pw-1234").decode()
        assert json.loads(fetch(url, {"authorization": f"Basic {good}"}))["app"] == "dashtest"
        assert "pw-1234" not in board.log()
    with DashboardProcess(APP, "--address", "0.0.0.0", "--no-auth", env=env) as open_board:
        assert "WITHOUT authentication" in open_board.log()
        url = open_board.url.replace("0.0.0.0", "127.0.0.1") + "api/overview"
        assert json.loads(fetch(url))["app"] == "dashtest"
