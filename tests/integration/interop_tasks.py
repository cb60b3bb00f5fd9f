"""One module, two frameworks: a Celery app and a taskq app with identically named tasks.

Both workers of the interop tests load this module:

    python -m taskq  -A tests.integration.interop_tasks worker ...
    python -m celery -A tests.integration.interop_tasks worker ...

Each finds the only app of its own kind here. They are configured from environment
variables that the tests set on the worker subprocesses:

    INTEROP_BROKER   broker URL  (redis://... or amqp://...)
    INTEROP_BACKEND  result backend URL (redis://..., or rpc:// in test_rpc_celery.py)

The tests build more pairs with ``make_apps(broker, backend)`` for their clients.

Every task has the same name in both apps. ``interop.whoami``, ``interop.tag``,
``interop.gated`` and ``interop.tally`` report which framework ran them, so a test can tell
which worker took a message. ``interop.gated`` waits for a file, so a test can choose which
header member of a chord ends last; ``interop.tally`` writes a line per run, so a test can
count how often a chord body ran.

Celery is only a test dependency: this module is the only place that imports it beside the
tests, and taskq itself never does.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery

from taskq import Taskq

#: The one setting a taskq app needs to join a Celery fleet (taskq's default queue is
#: "taskq", Celery's is "celery"). Broker and backend URLs are ordinary configuration.
TASKQ_INTEROP_SETTINGS: dict[str, Any] = {"task_default_queue": "celery"}

#: Every task of the module, registered in both apps under the same name.
NAMES = (
    "interop.add", "interop.mul", "interop.tsum", "interop.fail", "interop.whoami",
    "interop.tag", "interop.note", "interop.tally", "interop.gated", "interop.replaced",
)  # fmt: skip

#: How long ``interop.gated`` waits for its gate before it fails (a test that never opens
#: it fails; it does not hang).
GATE_TIMEOUT = 90.0


def _add(x: Any, y: Any) -> Any:
    return x + y


def _mul(x: Any, y: Any) -> Any:
    return x * y


def _tsum(values: list[Any]) -> Any:
    return sum(values)


def _fail(*args: Any) -> Any:
    raise ValueError(*args)


def _register(task: Any, runner: str) -> None:
    """Register the task set with ``task(name=..., [bind=True])``, the decorator of one app."""

    def whoami() -> str:
        return runner

    def tag(value: Any) -> list[Any]:
        # Link callbacks land here with the parent's result prepended.
        return [value, runner]

    def note(path: str) -> str:
        # One line per run, for tests that count runs across both kinds of worker.
        with open(path, "a") as out:
            out.write(f"{runner}\n")
        return runner

    def tally(value: Any, path: str) -> list[Any]:
        # A chord body that counts its runs: one line per run, by either kind of worker.
        with open(path, "a") as out:
            out.write(f"{runner}\n")
        return [value, runner]

    def gated(value: Any, gate: str) -> list[Any]:
        # Ends once the file ``gate`` exists, so a test decides when this chord member ends.
        deadline = time.monotonic() + GATE_TIMEOUT
        while not os.path.exists(gate):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gate {gate} was not opened in {GATE_TIMEOUT}s")
            time.sleep(0.02)
        return [value, runner]

    def replaced(self: Any, value: Any, queue: str) -> Any:
        # Replaced by ``interop.tag`` on ``queue``: with the interop queues, a task that one
        # kind of worker replaces with a task the other kind runs, in a chain or a chord.
        return self.replace(self.app.tasks["interop.tag"].s(value).set(queue=queue))

    task(name="interop.note")(note)
    task(name="interop.replaced", bind=True)(replaced)
    task(name="interop.tally")(tally)
    task(name="interop.gated")(gated)
    task(name="interop.add")(_add)
    task(name="interop.mul")(_mul)
    task(name="interop.tsum")(_tsum)
    task(name="interop.fail")(_fail)
    task(name="interop.whoami")(whoami)
    task(name="interop.tag")(tag)


def make_celery(broker: str | None, backend: str | None) -> Celery:
    app = Celery("interop", broker=broker, backend=backend, set_as_current=False)
    # Not an interop setting: it only silences Celery 5.x's warning about start-up retries.
    app.conf.broker_connection_retry_on_startup = True
    # shared=False: by default Celery also registers a decorated task in every other
    # Celery app of the process, and the tests make several.
    _register(lambda **options: app.task(shared=False, **options), "celery")
    return app


def make_taskq(broker: str | None, backend: str | None) -> Taskq:
    # INTEROP_TASKQ_TRANSPORT (JSON): broker_transport_options for the taskq side, for a
    # test that needs them; the interop tests themselves set nothing beyond the one setting.
    extra: dict[str, Any] = {}
    if os.environ.get("INTEROP_TASKQ_TRANSPORT"):
        extra["broker_transport_options"] = json.loads(os.environ["INTEROP_TASKQ_TRANSPORT"])
    app = Taskq("interop", broker=broker, backend=backend, **TASKQ_INTEROP_SETTINGS, **extra)
    _register(app.task, "taskq")
    return app


def make_apps(broker: str | None, backend: str | None) -> tuple[Celery, Taskq]:
    return make_celery(broker, backend), make_taskq(broker, backend)


celery_app, taskq_app = make_apps(
    os.environ.get("INTEROP_BROKER"), os.environ.get("INTEROP_BACKEND")
)
