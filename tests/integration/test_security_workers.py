"""Signed task messages on a real prefork worker and Redis, and with real Celery 5.7.

The taskq worker (``python -m taskq -A tests.integration.security_tasks worker -P
prefork``) has called ``setup_security``: a signed task runs; an unsigned one, or one
signed by a key its store does not hold, is not run but dead-lettered with the reason, its
FAILURE stored. A Celery client that signs sends to it, and a taskq client that signs
sends to a Celery worker that checks signatures.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskq import Taskq
from taskq.deadletter import DeadLetters
from tests.integration.helpers import WorkerProcess, wait_for
from tests.unit.test_security import (  # the fixture: kombu's registry as it was, after
    Pair,
    kombu_registry_restored,  # noqa: F401
    make_pair,
)

pytestmark = pytest.mark.integration
APP = "tests.integration.security_tasks"
CELERY_APP = "tests.integration.security_celery_tasks"


class CeleryWorker(WorkerProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", self.app, "worker", "-l", "info", *self.args]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | Pair]:
    root = tmp_path_factory.mktemp("security")
    pairs = {name: make_pair(root / "keys", name) for name in ("taskq-side", "celery-side")}
    store = root / "store"
    store.mkdir()
    for pair in pairs.values():
        (store / pair.cert.name).write_bytes(pair.cert.read_bytes())
    stranger = make_pair(root / "stranger", "stranger")  # not in the store
    return {**pairs, "stranger": stranger, "store": store}


def env_for(pair: Pair, store: Path, broker: str, backend: str) -> dict[str, str]:
    return {
        "SEC_BROKER": broker, "SEC_BACKEND": backend, "SEC_KEY": str(pair.key),
        "SEC_CERT": str(pair.cert), "SEC_STORE": str(store),
    }  # fmt: skip


@pytest.fixture(scope="module")
def queue() -> str:
    return f"sec-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def worker(
    keys: dict[str, Path | Pair], queue: str, redis_url: str, redis_backend_url: str
) -> Iterator[WorkerProcess]:
    pair, store = keys["taskq-side"], keys["store"]
    assert isinstance(pair, Pair) and isinstance(store, Path)
    env = env_for(pair, store, redis_url, redis_backend_url)
    with WorkerProcess(APP, "-P", "prefork", "-c", "2", "-Q", queue, env=env) as proc:
        yield proc


def client(keys: dict[str, Path | Pair], name: str, broker: str, backend: str) -> Taskq:
    from tests.integration.security_tasks import make_app

    pair, store = keys[name], keys["store"]
    assert isinstance(pair, Pair) and isinstance(store, Path)
    # A stranger's client trusts its own certificate only; the worker does not know it.
    trusted = pair.cert if name == "stranger" else store
    return make_app(broker, backend, str(pair.key), str(pair.cert), str(trusted))


def test_signed_task_runs(
    worker: WorkerProcess, keys: dict[str, Path | Pair], queue: str, redis_url: str,
    redis_backend_url: str,
) -> None:  # fmt: skip
    app = client(keys, "taskq-side", redis_url, redis_backend_url)
    assert app.tasks["sec.add"].apply_async((2, 3), queue=queue).get(timeout=30) == 5
    app.close()


def test_unsigned_and_unknown_signer_are_dead_lettered(
    worker: WorkerProcess, keys: dict[str, Path | Pair], queue: str, redis_url: str,
    redis_backend_url: str,
) -> None:  # fmt: skip
    plain = Taskq("sec", broker=redis_url, backend=redis_backend_url, set_as_current=False)
    unsigned = plain.send_task("sec.add", (1, 1), queue=queue)
    stranger = client(keys, "stranger", redis_url, redis_backend_url)
    forged = stranger.tasks["sec.add"].apply_async((1, 2), queue=queue)
    letters = DeadLetters(plain)
    wait_for(
        lambda: letters.get(unsigned.id) is not None and letters.get(forged.id) is not None,
        30,
        "both messages to be dead-lettered",
    )
    unsigned_letter, forged_letter = letters.get(unsigned.id), letters.get(forged.id)
    assert unsigned_letter is not None and forged_letter is not None
    assert "'application/json' is not accepted" in unsigned_letter.reason
    assert "Unknown signer 'taskq tests stranger 1000'" in forged_letter.reason.replace("FR ", "")
    for result in (unsigned, forged):
        assert result.state == "FAILURE"  # stored by the worker, never run
    log = worker.log()
    assert f"Task sec.add[{unsigned.id}] succeeded" not in log
    assert f"Task sec.add[{forged.id}] succeeded" not in log
    plain.close()
    stranger.close()


def test_remote_control_is_signed_too(
    worker: WorkerProcess, keys: dict[str, Path | Pair], redis_url: str, redis_backend_url: str
) -> None:
    app = client(keys, "taskq-side", redis_url, redis_backend_url)
    replies = app.control.ping(timeout=5.0)
    assert replies, "no worker answered a signed ping"
    app.close()


def test_celery_client_to_taskq_worker(
    worker: WorkerProcess, keys: dict[str, Path | Pair], queue: str, redis_url: str,
    redis_backend_url: str,
) -> None:  # fmt: skip
    import celery

    pair, store = keys["celery-side"], keys["store"]
    assert isinstance(pair, Pair) and isinstance(store, Path)
    capp = celery.Celery("sender", broker=redis_url, backend=redis_backend_url)
    capp.conf.update(
        task_serializer="auth", accept_content=["auth"], result_accept_content=["json"],
        security_key=str(pair.key), security_certificate=str(pair.cert),
        security_cert_store=str(store),
    )  # fmt: skip
    capp.setup_security()
    result = capp.send_task("sec.add", (3, 4), queue=queue)
    assert result.get(timeout=30) == 7
    capp.close()


def test_taskq_client_to_celery_worker(
    keys: dict[str, Path | Pair], redis_url: str, redis_backend_url: str
) -> None:
    pair, store = keys["celery-side"], keys["store"]
    assert isinstance(pair, Pair) and isinstance(store, Path)
    queue = f"sec-celery-{uuid.uuid4().hex[:8]}"
    env = env_for(pair, store, redis_url, redis_backend_url)
    proc = CeleryWorker(CELERY_APP, "-P", "prefork", "-c", "1", "-Q", queue, env=env)
    proc.start(wait_ready=False)
    try:
        wait_for(lambda: " ready." in proc.log() or proc.proc.poll() is not None, 45, "celery")  # type: ignore[union-attr]
        app = client(keys, "taskq-side", redis_url, redis_backend_url)
        assert app.tasks["sec.whoami"].apply_async(queue=queue).get(timeout=30) == "celery"
        assert app.tasks["sec.add"].apply_async((5, 6), queue=queue).get(timeout=30) == 11
        app.close()
    finally:
        proc.stop()
        proc.kill()
