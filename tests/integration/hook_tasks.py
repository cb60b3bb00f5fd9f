"""Tasks with a base class whose handlers, and signal receivers, write to a Redis ledger.

Imported by a real worker (`taskq -A tests.integration.hook_tasks worker`) and by the test;
every entry says what was called, in which process, with which arguments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import redis

from taskq import Task, Taskq, get_task_logger, signals

app = Taskq(
    "hooks",
    broker=os.environ.get("HOOKS_BROKER") or "memory://",
    backend=os.environ.get("HOOKS_BACKEND") or None,
)
app.conf.task_default_queue = os.environ.get("HOOKS_QUEUE", "hooks")
# Only a worker started by the test has a ledger; a test process importing this module
# for its names records nothing (its receivers are process-wide).
_url = os.environ.get("HOOKS_LEDGER")
ledger = redis.Redis.from_url(_url) if _url else None
LEDGER = "hooks:ledger"


def note(what: str, **fields: Any) -> None:
    if ledger is None:
        return
    ledger.rpush(LEDGER, json.dumps({"what": what, "pid": os.getpid(), **fields}, default=repr))


class Audited(Task[Any, Any]):
    max_retries = 2
    default_retry_delay = 0.0

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        note("before_start", id=task_id, args=list(args), request_id=self.request.id)

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        note("on_success", id=task_id, retval=retval)

    def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        note("on_retry", id=task_id, exc=repr(exc), einfo=type(einfo).__name__)

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        note("on_failure", id=task_id, exc=repr(exc), traceback="ZeroDivisionError" in str(einfo))

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        note("after_return", id=task_id, status=status)


@app.task(base=Audited, name="hooks.divide")
def divide(x: int, y: int) -> float:
    return x / y


@app.task(base=Audited, name="hooks.flaky", bind=True)
def flaky(self: Task[..., str]) -> str:
    if self.request.retries < 1:
        raise self.retry(exc=ConnectionError("try again"))
    return "ok"


@app.task(name="hooks.traced", bind=True)
def traced(self: Task[..., Any]) -> Any:
    return self.request.headers.get("x-trace-id")


task_logger = get_task_logger(__name__)


@app.task(name="hooks.logs")
def logs(word: str) -> None:
    task_logger.warning("said %s", word)


@app.task(name="hooks.sleepy")
def sleepy(seconds: float) -> None:
    import time

    time.sleep(seconds)


# -- signal receivers (module level: held weakly, as in Celery)
@signals.worker_process_init.connect
def on_process_init(**kw: Any) -> None:
    note("worker_process_init")


@signals.worker_process_shutdown.connect
def on_process_shutdown(pid: int, exitcode: int, **kw: Any) -> None:
    note("worker_process_shutdown", child=pid, exitcode=exitcode)


@signals.celeryd_init.connect
def on_celeryd_init(sender: str, instance: Any, conf: Any, **kw: Any) -> None:
    note("celeryd_init", hostname=sender, queue=conf.task_default_queue)


@app.on_after_configure.connect
def on_configured(sender: Taskq, **kw: Any) -> None:
    note("on_after_configure", app=sender.main)


@signals.worker_init.connect
def on_worker_init(**kw: Any) -> None:
    note("worker_init")


@signals.celeryd_after_setup.connect
def on_after_setup(sender: str, **kw: Any) -> None:
    note("celeryd_after_setup", hostname=sender)


@signals.worker_ready.connect
def on_ready(**kw: Any) -> None:
    note("worker_ready")


@signals.worker_shutting_down.connect
def on_shutting_down(sig: str, how: str, exitcode: int, **kw: Any) -> None:
    note("worker_shutting_down", sig=sig, how=how, exitcode=exitcode)


@signals.worker_shutdown.connect
def on_shutdown(**kw: Any) -> None:
    note("worker_shutdown")


@signals.task_received.connect
def on_received(request: Any, **kw: Any) -> None:
    note("task_received", id=request.id)


@signals.task_prerun.connect
def on_prerun(task_id: str, task: Any, args: Any, **kw: Any) -> None:
    note("task_prerun", id=task_id, task=task.name, args=list(args))


@signals.task_postrun.connect
def on_postrun(task_id: str, state: str, retval: Any, **kw: Any) -> None:
    note("task_postrun", id=task_id, state=state, retval=retval)


@signals.task_success.connect(sender="hooks.divide")
def on_divide_success(sender: Any, result: Any, **kw: Any) -> None:
    note("task_success", task=sender.name, result=result)


@signals.task_failure.connect
def on_failure(task_id: str, exception: Any, einfo: Any, **kw: Any) -> None:
    note("task_failure", id=task_id, exc=repr(exception))


@signals.task_retry.connect
def on_retry(request: Any, reason: Any, **kw: Any) -> None:
    note("task_retry", id=request.id, reason=str(reason))


@signals.task_revoked.connect
def on_revoked(request: Any, terminated: bool, expired: bool, **kw: Any) -> None:
    note("task_revoked", id=request.id, terminated=terminated, expired=expired)


@signals.task_rejected.connect
def on_rejected(message: Any, exc: Any, **kw: Any) -> None:
    note("task_rejected", exc=str(exc))


@signals.heartbeat_sent.connect
def on_heartbeat(**kw: Any) -> None:
    note("heartbeat_sent")


@signals.task_unknown.connect
def on_unknown(name: str, id: str, **kw: Any) -> None:
    note("task_unknown", name=name, id=id)
