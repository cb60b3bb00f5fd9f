"""rpc:// results across frameworks on RabbitMQ: a Celery 5.7 worker answers a taskq client,
and a taskq worker answers a Celery client, each on the other's reply queue.

Each test has its own queue, consumed by one worker of the other framework, so the result
can only have come from that worker (``interop.whoami`` says which ran it as well).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import WorkerProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import celery  # noqa: E402  (a test-only dependency)

import taskq  # noqa: E402
from tests.integration.interop_tasks import make_apps  # noqa: E402
from tests.integration.test_celery_interop import CeleryWorkerProcess  # noqa: E402

pytestmark = pytest.mark.integration
APP_MODULE = "tests.integration.interop_tasks"


def _worker(kind: str, url: str, queue: str) -> WorkerProcess:
    env = {"INTEROP_BROKER": url, "INTEROP_BACKEND": "rpc://",
           "TASKQ_BROKER_URL": "", "TASKQ_RESULT_BACKEND": ""}  # fmt: skip
    process = WorkerProcess if kind == "taskq" else CeleryWorkerProcess
    return process(APP_MODULE, "-P", "prefork", "-c", "2", "-Q", queue, env=env, cwd=ROOT,
                   ready_timeout=60)  # fmt: skip


@pytest.fixture
def clients(amqp_url: str) -> Iterator[tuple[celery.Celery, taskq.Taskq]]:
    celery_client, taskq_client = make_apps(amqp_url, "rpc://")
    try:
        yield celery_client, taskq_client
    finally:
        taskq_client.close()
        celery_client.close()


def _check(client: celery.Celery | taskq.Taskq, queue: str, runner: str) -> None:
    sent = [client.tasks["interop.add"].apply_async((i, i), queue=queue) for i in range(20)]
    who = client.tasks["interop.whoami"].apply_async(queue=queue)
    failed = client.tasks["interop.fail"].apply_async(("no",), queue=queue)
    assert sent[-1].get(timeout=30) == 38  # the others arrive meanwhile and wait their turn
    assert [r.get(timeout=30) for r in sent] == [2 * i for i in range(20)]
    assert who.get(timeout=30) == runner
    with pytest.raises(ValueError):
        failed.get(timeout=30)


@pytest.mark.parametrize("worker_kind", ["celery", "taskq"])
def test_a_worker_of_one_answers_a_client_of_the_other(
    worker_kind: str, amqp_url: str, clients: tuple[celery.Celery, taskq.Taskq]
) -> None:
    celery_client, taskq_client = clients
    queue = f"rpc-interop-{uuid.uuid4().hex[:8]}"
    worker = _worker(worker_kind, amqp_url, queue)
    # The helper waits for taskq's ready line; Celery logs "<node> ready." once it consumes.
    worker.start(wait_ready=worker_kind == "taskq")
    try:
        if worker_kind == "celery":
            wait_for(lambda: " ready." in worker.log(), 60, "the Celery worker to be ready")
            _check(taskq_client, queue, "celery")
        else:
            _check(celery_client, queue, "taskq")
    except BaseException:
        print(worker.log()[-6000:])  # shown with the failure
        raise
    finally:
        code = worker.stop()
    assert code == 0, worker.log()[-4000:]
