"""The client side: registration without I/O, calling, signatures, and clear errors."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import taskq
from taskq import (
    BrokerUnavailable,
    ConfigurationError,
    NoBackendConfigured,
    NotRegistered,
    Signature,
    Taskq,
    states,
)


def test_decorator_registers_without_io() -> None:
    # An unreachable broker and backend: registering and calling locally must not touch them.
    app = Taskq("proj", broker="redis://127.0.0.1:1/0", backend="redis://127.0.0.1:1/1")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="custom.name", bind=True, max_retries=7, queue="math")
    def bound(self: Any, x: int) -> int:
        return x * 2

    assert add.name.endswith("test_app.add") and app.tasks[add.name] is add
    assert app.tasks["custom.name"] is bound
    assert add(2, 3) == 5
    assert bound(4) == 8 and bound.max_retries == 7
    assert app._amqp is None and app._backend is None


def test_unknown_task_option_and_unknown_task_name() -> None:
    app = Taskq("proj", broker="memory://")
    with pytest.raises(ConfigurationError, match="max_retires"):
        app.task(max_retires=3)(lambda: None)
    with pytest.raises(ConfigurationError, match="expected one of json, msgpack, pickle"):
        app.task(serializer="yaml")(lambda: None)
    with pytest.raises(NotRegistered, match="nope"):
        app.tasks["nope"]


def test_apply_runs_in_process_with_retries() -> None:
    app = Taskq("proj", broker="memory://")

    @app.task(bind=True, max_retries=3)
    def flaky(self: Any) -> int:
        if self.request.retries < 2:
            raise self.retry(exc=OSError("x"), countdown=60)
        return self.request.retries

    @app.task
    def fail() -> None:
        raise KeyError("k")

    result = flaky.apply()
    assert result.get() == 2 and result.state == states.SUCCESS
    failed = fail.apply()
    assert failed.failed() and isinstance(failed.result, KeyError)
    with pytest.raises(KeyError):
        failed.get()


def test_wrong_arguments_fail_at_the_call_site() -> None:
    app = Taskq("proj", broker="memory://")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match="missing a required argument: 'y'"):
        add.delay(1)
    with pytest.raises(TypeError, match="unknown option 'countdwon'; did you mean 'countdown'"):
        add.apply_async((1, 2), countdwon=3)
    with pytest.raises(TypeError, match="expected one of json, msgpack, pickle"):
        add.apply_async((1, 2), serializer="yaml")
    with pytest.raises(TypeError, match="countdown or eta"):
        import datetime as dt

        add.apply_async((1, 2), countdown=1, eta=dt.datetime.now(dt.UTC))


def test_signatures_change_in_place_and_clone_copies() -> None:
    app = Taskq("proj", broker="memory://")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    sig = add.s(2)
    # As Celery's: set() changes the signature itself; clone() copies it.
    copy = sig.clone()
    assert sig.set(queue="q") is sig and sig.options == {"queue": "q"}
    assert copy.options == {} and copy == add.s(2)
    assert sig.clone((1,)).args == (1, 2)
    assert add.si(1, 1).clone((5,)).args == (1, 1)
    assert sig(3) == 5
    data = add.s(1, y=2).set(countdown=3).as_dict()
    assert Signature.from_dict(data, app) == add.s(1, y=2).set(countdown=3)
    with pytest.raises(TypeError, match="not bound to an app"):
        Signature("x").delay()


def test_unreachable_broker_raises_a_clear_error() -> None:
    app = Taskq(
        "proj",
        broker="redis://:secret@127.0.0.1:1/0",
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.01,
            "interval_max": 0.01,
        },
    )

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(BrokerUnavailable) as info:
        add.delay(1, 2)
    message = str(info.value)
    assert "127.0.0.1:1" in message and "secret" not in message
    assert "broker is running" in message


def test_no_backend_configured() -> None:
    app = Taskq("proj", broker="memory://")
    with pytest.raises(NoBackendConfigured, match="result_backend"):
        app.AsyncResult("some-id").get(timeout=1)


def test_unknown_result_id_is_pending() -> None:
    app = Taskq("proj", broker="memory://", backend="memory://")
    result = app.AsyncResult("never-sent")
    assert result.state == states.PENDING and not result.ready() and result.result is None
    with pytest.raises(taskq.TimeoutError):
        result.get(timeout=0.05)


def test_routing_follows_task_routes_then_task_queue_then_default() -> None:
    app = Taskq("proj", broker="memory://", task_routes={"proj.math.*": {"queue": "math"}})
    router = app.amqp.router
    assert router.route("proj.math.add", None, {}).routing_key == "math"
    assert router.route("proj.other", "images", {}).queue.name == "images"  # type: ignore[union-attr]
    assert router.route("proj.other", None, {}).routing_key == "taskq"
    explicit = router.route("proj.math.add", None, {"queue": "urgent"})
    assert (explicit.exchange, explicit.routing_key) == ("", "urgent")
    custom = router.route("x", None, {"exchange": "ex", "routing_key": "rk"})
    assert (custom.exchange, custom.routing_key) == ("ex", "rk")


def test_public_api_is_complete() -> None:
    public = {n for n in dir(taskq) if not n.startswith("_") and n not in {"annotations"}}
    modules = {n for n in public if type(getattr(taskq, n)).__name__ == "module"}
    assert set(taskq.__all__) - {"__version__"} == public - modules | {"states"}
    exceptions = {
        n
        for n in dir(taskq.exceptions)
        if isinstance(getattr(taskq.exceptions, n), type)
        and issubclass(getattr(taskq.exceptions, n), taskq.TaskqError)
    }
    assert exceptions <= set(taskq.__all__)


def test_client_import_does_not_load_worker_billiard_or_click() -> None:
    # kombu itself imports billiard.util when billiard is installed: compare with kombu alone.
    code = (
        "import sys; import kombu.connection, kombu.pools; base = set(sys.modules);"
        "import taskq; from taskq import Taskq; Taskq('x', broker='memory://').amqp;"
        "bad = [m for m in set(sys.modules) - base if m.split('.')[0] in ('billiard', 'click')"
        " or m in ('taskq.worker', 'taskq.cli') or m.startswith(('taskq.worker.', 'taskq.cli_'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_client_modules_never_import_the_worker_side() -> None:
    root = Path(taskq.__file__).parent
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).as_posix()
        # The command line (cli.py and its cli_*.py parts) starts the worker, and so do the
        # testing tools (contrib/: start_worker, the pytest plugin): not client side.
        if relative.startswith(("worker/", "cli", "contrib/")) or relative == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert name.split(".")[0] not in ("billiard", "click"), f"{relative} imports {name}"
                assert "worker" not in name.split(".") and name != "cli", (
                    f"{relative} imports {name}"
                )


def test_every_error_derives_from_taskq_error() -> None:
    errors = [
        getattr(taskq, n)
        for n in taskq.__all__
        if isinstance(getattr(taskq, n), type) and issubclass(getattr(taskq, n), BaseException)
    ]
    assert errors and all(issubclass(e, taskq.TaskqError) for e in errors)


def test_a_task_called_directly_inside_another_has_no_request_of_its_own() -> None:
    app = Taskq("proj", broker="memory://")
    seen: dict[str, Any] = {}

    @app.task(bind=True)
    def inner(self: Any) -> None:
        seen["inner"] = (self.request.id, self.request.called_directly)

    @app.task(bind=True)
    def outer(self: Any) -> None:
        seen["outer"] = (self.request.id, self.request.called_directly)
        inner()

    outer.apply(task_id="outer-id")
    assert seen == {"outer": ("outer-id", False), "inner": (None, True)}
