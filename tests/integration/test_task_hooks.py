"""Handlers of a base task class and Celery's signals, with a real prefork worker on Redis.

Every handler and receiver in tests/integration/hook_tasks.py writes a ledger entry (what,
which process, which arguments): the tests read the ledger, never a sleep.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from taskq import Taskq, signals
from tests.integration.helpers import WorkerProcess, wait_for
from tests.integration.hook_tasks import LEDGER

pytestmark = pytest.mark.integration
APP = "tests.integration.hook_tasks"


@pytest.fixture(scope="module")
def queue() -> str:
    return f"hooks-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def ledger(redis_backend_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_backend_url)
    client.delete(LEDGER)
    yield client
    client.delete(LEDGER)


def entries(ledger: redis.Redis, **match: Any) -> list[dict[str, Any]]:
    found = [json.loads(raw) for raw in ledger.lrange(LEDGER, 0, -1)]
    return [e for e in found if all(e.get(k) == v for k, v in match.items())]


@pytest.fixture(scope="module")
def worker(
    redis_url: str, redis_backend_url: str, queue: str, ledger: redis.Redis
) -> Iterator[WorkerProcess]:
    env = {"HOOKS_BROKER": redis_url, "HOOKS_BACKEND": redis_backend_url,
           "HOOKS_LEDGER": redis_backend_url, "HOOKS_QUEUE": queue}  # fmt: skip
    with WorkerProcess(APP, "-P", "prefork", "-c", "2", env=env) as process:
        wait_for(lambda: entries(ledger, what="worker_ready"), 30, "worker_ready")
        yield process


@pytest.fixture(scope="module")
def client(redis_url: str, redis_backend_url: str, queue: str) -> Iterator[Taskq]:
    app = Taskq("client", broker=redis_url, backend=redis_backend_url, set_as_current=False)
    app.conf.task_default_queue = queue
    yield app
    app.close()


def trail(ledger: redis.Redis, task_id: str, last: str) -> list[dict[str, Any]]:
    wait_for(lambda: entries(ledger, what=last, id=task_id), 60, f"{last} of {task_id}")
    return entries(ledger, id=task_id)


def test_worker_start_signals_in_order(worker: WorkerProcess, ledger: redis.Redis) -> None:
    wait_for(lambda: len(entries(ledger, what="worker_process_init")) >= 2, 60, "children")
    names = [e["what"] for e in entries(ledger) if e["pid"] == worker.pid]
    start = [n for n in names if n in {"celeryd_init", "on_after_configure", "worker_init",
                                       "celeryd_after_setup", "worker_ready"}]  # fmt: skip
    assert start == ["celeryd_init", "on_after_configure", "worker_init",
                     "celeryd_after_setup", "worker_ready"]  # fmt: skip
    init = entries(ledger, what="celeryd_init")[0]
    assert init["hostname"].endswith(tuple("0123456789abcdefghijklmnopqrstuvwxyz")) and init[
        "queue"
    ].startswith("hooks-")
    children = {e["pid"] for e in entries(ledger, what="worker_process_init")}
    assert worker.pid not in children and len(children) >= 2


def test_a_success_calls_handlers_and_signals_in_celerys_order(
    worker: WorkerProcess, client: Taskq, ledger: redis.Redis
) -> None:
    result = client.send_task("hooks.divide", (6, 3))
    assert result.get(timeout=60) == 2.0
    got = trail(ledger, result.id, "task_postrun")
    assert [e["what"] for e in got] == ["task_received", "task_prerun", "before_start",
                                        "on_success", "after_return", "task_postrun"]  # fmt: skip
    assert got[0]["pid"] == worker.pid  # received in the worker, the rest in its child
    assert len({e["pid"] for e in got[1:]}) == 1 and got[1]["pid"] != worker.pid
    assert got[1]["task"] == "hooks.divide" and got[1]["args"] == [6, 3]
    assert got[2]["request_id"] == result.id and got[3]["retval"] == 2.0
    assert (got[4]["status"], got[5]["state"]) == ("SUCCESS", "SUCCESS")
    # task_success was connected with sender="hooks.divide": the task, by its name
    assert {"what": "task_success", "task": "hooks.divide", "result": 2.0} in [
        {k: e[k] for k in ("what", "task", "result")} for e in entries(ledger, what="task_success")
    ]


def test_a_failure_calls_on_failure_with_einfo(client: Taskq, ledger: redis.Redis) -> None:
    result = client.send_task("hooks.divide", (1, 0))
    got = trail(ledger, result.id, "task_postrun")
    names = [e["what"] for e in got]
    assert names == ["task_received", "task_prerun", "before_start", "on_failure",
                     "task_failure", "after_return", "task_postrun"]  # fmt: skip
    assert got[3]["exc"].startswith("ZeroDivisionError") and got[3]["traceback"] is True
    assert (got[5]["status"], got[6]["state"]) == ("FAILURE", "FAILURE")
    assert result.state == "FAILURE"


def test_a_retry_calls_on_retry_and_not_after_return(client: Taskq, ledger: redis.Redis) -> None:
    result = client.send_task("hooks.flaky")
    assert result.get(timeout=60) == "ok"
    wait_for(lambda: len(entries(ledger, what="task_postrun", id=result.id)) == 2, 60, "postrun")
    got = entries(ledger, id=result.id)
    # The retry is sent before the first run's handlers: the runs may overlap in two
    # children. Within each run, Celery's order; after_return only for the one that ended.
    runs = {e["pid"]: e["state"] for e in got if e["what"] == "task_postrun"}
    assert sorted(runs.values()) == ["RETRY", "SUCCESS"] or len(runs) == 1
    first = [e["what"] for e in got if e["pid"] == _pid_of(got, "on_retry")]
    assert _in_order(
        first, ["task_prerun", "before_start", "on_retry", "task_retry", "task_postrun"]
    )
    last = [e["what"] for e in got if e["pid"] == _pid_of(got, "on_success")]
    assert _in_order(last, ["task_prerun", "before_start", "on_success", "after_return",
                            "task_postrun"])  # fmt: skip
    assert [e["status"] for e in got if e["what"] == "after_return"] == ["SUCCESS"]
    retry = entries(ledger, what="on_retry", id=result.id)[0]
    assert retry["exc"].startswith("ConnectionError") and retry["einfo"] == "ExceptionInfo"


def _pid_of(got: list[dict[str, Any]], what: str) -> int:
    return int(next(e["pid"] for e in got if e["what"] == what))


def _in_order(seen: list[str], wanted: list[str]) -> bool:
    """Whether ``wanted`` appears in ``seen`` in this order (other entries between)."""
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


def test_before_task_publish_headers_reach_the_task(client: Taskq) -> None:
    def add_trace(headers: dict[str, Any], **kw: Any) -> None:
        headers["x-trace-id"] = "trace-42"

    seen: list[Any] = []

    def published(sender: str, headers: dict[str, Any], **kw: Any) -> None:
        seen.append((sender, headers["id"]))

    signals.before_task_publish.connect(add_trace)
    signals.after_task_publish.connect(published)
    try:
        result = client.send_task("hooks.traced")
    finally:
        signals.before_task_publish.disconnect(add_trace)
        signals.after_task_publish.disconnect(published)
    assert result.get(timeout=60) == "trace-42"
    assert seen == [("hooks.traced", result.id)]


def test_unknown_and_revoked_tasks(client: Taskq, ledger: redis.Redis) -> None:
    unknown = client.send_task("hooks.nowhere")
    wait_for(lambda: entries(ledger, what="task_unknown", id=unknown.id), 60, "task_unknown")
    assert entries(ledger, what="task_unknown", id=unknown.id)[0]["name"] == "hooks.nowhere"
    later = client.send_task("hooks.sleepy", (0,), countdown=600)
    wait_for(lambda: entries(ledger, what="task_received", id=later.id), 60, "received")
    client.control.revoke(later.id)
    wait_for(lambda: entries(ledger, what="task_revoked", id=later.id), 60, "task_revoked")
    revoked = entries(ledger, what="task_revoked", id=later.id)[0]
    assert (revoked["terminated"], revoked["expired"]) == (False, False)


def test_unreadable_messages_and_heartbeats(
    worker: WorkerProcess, redis_url: str, queue: str, ledger: redis.Redis
) -> None:
    # A message the worker does not accept (pickle, against its JSON-only accept_content).
    sender = Taskq(
        "pickler", broker=redis_url, task_default_queue=queue, task_serializer="pickle",
        accept_content=["pickle"], set_as_current=False,
    )  # fmt: skip
    sender.send_task("hooks.divide", (1, 1))
    sender.close()
    wait_for(lambda: entries(ledger, what="task_rejected"), 60, "task_rejected")
    assert "not accepted" in entries(ledger, what="task_rejected")[0]["exc"]
    wait_for(lambda: entries(ledger, what="heartbeat_sent"), 60, "heartbeat_sent")
    assert entries(ledger, what="heartbeat_sent")[0]["pid"] == worker.pid


def test_task_logger_lines_name_their_task(worker: WorkerProcess, client: Taskq) -> None:
    result = client.send_task("hooks.logs", ("hello",))
    result.get(timeout=60)
    line = f"hooks.logs[{result.id}]: said hello"
    wait_for(lambda: line in worker.log(), 30, "the task's log line")
    found = next(text for text in worker.log().splitlines() if line in text)
    assert "WARNING/ForkPoolWorker" in found  # worker_task_log_format, in the pool process


def test_stop_signals(worker: WorkerProcess, ledger: redis.Redis) -> None:
    # Last in this module: the worker stops here.
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    down = entries(ledger, what="worker_shutting_down")
    assert [(e["sig"], e["how"], e["exitcode"]) for e in down] == [("SIGTERM", "Warm", 0)]
    assert entries(ledger, what="worker_shutdown")[0]["pid"] == worker.pid
    children = {e["pid"] for e in entries(ledger, what="worker_process_init")}
    left = {e["child"] for e in entries(ledger, what="worker_process_shutdown")}
    assert children <= left, (children, left)
