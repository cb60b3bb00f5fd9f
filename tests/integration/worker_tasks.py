"""Tasks for the integration tests. The worker builds ``app`` from ITEST_* variables; the
tests build their own client with ``make_app`` and the same values."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from taskq import SoftTimeLimitExceeded, Taskq, group


def make_app(
    broker: str | None,
    backend: str | None,
    data_dir: str | None,
    visibility_timeout: float = 3600.0,
    **settings: Any,
) -> Taskq:
    app = Taskq(
        "itest",
        broker=broker or None,
        backend=backend or None,
        embedded_data_dir=data_dir,
        task_routes={"itest.square": {"queue": "math"}},
        broker_transport_options={
            "visibility_timeout": visibility_timeout,
            **settings.pop("broker_transport_options", {}),
        },
        **settings,
    )
    register(app)
    return app


def itest_env(
    broker: str | None,
    backend: str | None,
    data_dir: str | None = None,
    visibility_timeout: float = 3600.0,
    **settings: Any,
) -> dict[str, str]:
    """The ITEST_* variables that make a worker build the same app as ``make_app``."""
    return {
        "ITEST_BROKER": broker or "",
        "ITEST_BACKEND": backend or "",
        "ITEST_DATA": data_dir or "",
        "ITEST_VT": str(visibility_timeout),
        "ITEST_SETTINGS": json.dumps(settings),
    }


def register(app: Taskq) -> None:
    @app.task(name="itest.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="itest.square")
    def square(x: int) -> int:
        return x * x

    @app.task(name="itest.fail")
    def fail(message: str) -> None:
        raise ValueError(message, 42)

    @app.task(name="itest.flaky", bind=True, max_retries=3, default_retry_delay=0.05)
    def flaky(self: Any) -> int:
        if self.request.retries < 2:
            raise self.retry(exc=OSError("try again"))
        return self.request.retries

    @app.task(name="itest.hard_limited", time_limit=1)
    def hard_limited(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @app.task(name="itest.soft_limited", soft_time_limit=0.5)
    def soft_limited(seconds: float) -> str:
        try:
            time.sleep(seconds)
        except SoftTimeLimitExceeded:
            return "caught soft limit"
        return "finished"

    @app.task(name="itest.die_once")
    def die_once(marker: str) -> str:
        # The first delivery kills its own process; the requeued one finds the marker.
        path = Path(marker)
        if not path.exists():
            path.write_text("died")
            os._exit(1)
        return "survived"

    @app.task(name="itest.die_early_ack", acks_late=False)
    def die_early_ack() -> None:
        os._exit(1)

    @app.task(name="itest.kill_worker")
    def kill_worker(folder: str, name: str) -> None:
        # A poison task of the worst kind: it takes its whole worker down with it.
        Path(folder, f"{name}.started.{os.getpid()}.{time.monotonic_ns()}").write_text("")
        os.kill(os.getppid(), signal.SIGKILL)
        os._exit(1)

    @app.task(name="itest.record")
    def record(folder: str, name: str, seconds: float = 0.0) -> str:
        # Leaves a file per run, so tests can count runs and see that a task started.
        Path(folder, f"{name}.started.{os.getpid()}.{time.monotonic_ns()}").write_text("")
        time.sleep(seconds)
        Path(folder, f"{name}.done.{os.getpid()}.{time.monotonic_ns()}").write_text("")
        return name

    register_canvas(app)


def register_canvas(app: Taskq) -> None:
    """Tasks the canvas tests compose."""

    @app.task(name="itest.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="itest.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="itest.collect")
    def collect(values: Any) -> Any:
        return values

    @app.task(name="itest.replaced", bind=True)
    def replaced(self: Any, how: str, n: int) -> None:
        add, mul = app.tasks["itest.add"], app.tasks["itest.mul"]
        if how == "chain":
            self.replace(add.s(n, 1) | mul.s(10))
        elif how == "group":
            self.replace(group(add.s(n, i) for i in range(3)))
        self.replace(add.s(n, 100))

    @app.task(name="itest.errback_with_request")
    def errback_with_request(request: Any, exc: BaseException, tb: str, folder: str) -> None:
        # Celery's three-argument errback, called in the worker with the failed request.
        Path(folder, f"errback.{request.id}").write_text(f"{type(exc).__name__}: {exc}")

    @app.task(name="itest.errback_by_id")
    def errback_by_id(task_id: str, *, folder: str) -> None:
        Path(folder, f"errback-id.{task_id}").write_text(task_id)


# Settings a test passes to its workers as ITEST_SETTINGS (JSON).
app = make_app(
    os.environ.get("ITEST_BROKER"),
    os.environ.get("ITEST_BACKEND"),
    os.environ.get("ITEST_DATA"),
    float(os.environ.get("ITEST_VT", "3600")),
    **json.loads(os.environ.get("ITEST_SETTINGS", "{}")),
)
