"""The real `taskq` command: call, result, purge, --version, and its error messages."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

import taskq
from tests.integration.helpers import WorkerProcess, run_cli, wait_for
from tests.integration.worker_tasks import itest_env, make_app
from tests.servers import free_port

pytestmark = pytest.mark.integration
APP = "tests.integration.worker_tasks"


@pytest.fixture(scope="module")
def env(redis_url: str, redis_backend_url: str) -> dict[str, str]:
    return itest_env(redis_url, redis_backend_url)


@pytest.fixture(scope="module")
def worker(env: dict[str, str]) -> Iterator[WorkerProcess]:
    with WorkerProcess(APP, "-P", "prefork", "-c", "2", env=env) as process:
        yield process


def test_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0 and taskq.__version__ in done.stdout


def test_call_then_result(worker: WorkerProcess, env: dict[str, str]) -> None:
    sent = run_cli("-A", APP, "call", "itest.add", "--args", "[2, 2]", env=env)
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    done = run_cli("-A", APP, "result", task_id, "--wait", "--timeout", "20", env=env)
    assert (done.returncode, done.stdout.strip()) == (0, "4")
    failed = run_cli("-A", APP, "call", "itest.fail", "--kwargs", '{"message": "bad"}', env=env)
    shown = run_cli(
        "-A",
        APP,
        "result",
        failed.stdout.strip(),
        "--wait",
        "--timeout",
        "20",
        "--traceback",
        env=env,
    )
    assert shown.returncode == 1
    assert "FAILURE: ValueError" in shown.stdout and "Traceback" in shown.stdout
    assert run_cli("-A", APP, "result", "unknown-id", env=env).stdout.strip() == "PENDING"


def test_call_rejects_bad_json_and_wrong_shapes(env: dict[str, str]) -> None:
    done = run_cli("-A", APP, "call", "itest.add", "--args", "[2,", env=env)
    assert done.returncode == 2 and "not valid JSON" in done.stderr
    done = run_cli("-A", APP, "call", "itest.add", "--args", '{"x": 1}', env=env)
    assert done.returncode == 2 and "JSON list" in done.stderr
    done = run_cli("-A", APP, "call", "itest.add", "--args", "[1]", env=env)
    assert done.returncode != 0 and "missing a required argument" in done.stderr


def test_purge_asks_then_purges(env: dict[str, str]) -> None:
    queue = "purge-me"
    for _ in range(3):
        assert (
            run_cli(
                "-A", APP, "call", "itest.add", "--args", "[1, 1]", "--queue", queue, env=env
            ).returncode
            == 0
        )
    kept = run_cli("-A", APP, "purge", "-Q", queue, env=env, input="n\n")
    assert kept.returncode == 1 and "Aborted" in kept.stderr
    done = run_cli("-A", APP, "purge", "-f", "-Q", queue, env=env)
    assert done.returncode == 0 and "Purged 3 messages" in done.stdout
    assert "Purged 0 messages" in run_cli("-A", APP, "purge", "-f", "-Q", queue, env=env).stdout


def test_unreachable_broker_is_a_clear_error() -> None:
    env = itest_env("redis://:hunter2@127.0.0.1:1/0", None)
    done = run_cli("-A", APP, "call", "itest.add", "--args", "[1, 1]", env=env)
    assert done.returncode == 1
    assert "Could not send task itest.add" in done.stderr and "hunter2" not in done.stderr


def test_bad_app_module_is_a_usage_error() -> None:
    done = run_cli("-A", "no_such_module_here", "call", "x")
    assert done.returncode == 2 and "Cannot import app module 'no_such_module_here'" in done.stderr
    done = run_cli("call", "x")
    assert done.returncode == 2 and "-A/--app" in done.stderr


def test_banner_masks_the_password(amqp_url: str, redis_backend_url: str) -> None:
    env = itest_env(amqp_url, redis_backend_url)
    with WorkerProcess(APP, "-P", "solo", env=env) as process:
        log = process.log()
    assert "guest:**@" in log and "guest:guest" not in log
    assert "itest.add" in log and "concurrency: 1 (solo)" in log


def test_worker_options_threads_prefetch_and_no_heartbeat(
    amqp_url: str, redis_backend_url: str
) -> None:
    env = itest_env(amqp_url, redis_backend_url)
    app = make_app(amqp_url, redis_backend_url, None)
    options = ("-P", "threads", "-c", "3", "--prefetch-multiplier", "2", "--without-heartbeat",
               "-Q", "cli-threads", "-n", "t1@%h")  # fmt: skip
    with WorkerProcess(APP, *options, env=env) as process:
        results = [app.tasks["itest.add"].apply_async((i, i), queue="cli-threads")
                   for i in range(6)]  # fmt: skip
        assert [r.get(timeout=20) for r in results] == [2 * i for i in range(6)]
        log = process.log()
    app.close()
    assert "concurrency: 3 (threads)" in log and "prefetch:    6" in log
    assert f"(t1@{socket.gethostname()})" in log


def one_error_line(stderr: str) -> str:
    """The failure as the user sees it: exactly one line, ``Error: ...``, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_wrong_arguments_are_one_line_that_says_what_to_give(env: dict[str, str]) -> None:
    done = run_cli("-A", APP, "call", "itest.add", "-a", "[2]", env=env)
    line = one_error_line(done.stderr)
    assert done.returncode == 2
    assert "'itest.add' cannot take args=[2]" in line and "-a '[...]'" in line


def test_a_command_against_a_dead_broker_is_one_line_without_the_password() -> None:
    dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    env = itest_env(dead, None)
    done = run_cli("-A", APP, "purge", "-f", env=env)
    line = one_error_line(done.stderr)
    assert done.returncode == 1 and "hunter2" not in done.stderr
    assert "Cannot reach the broker at redis://:**@127.0.0.1" in line
    assert "Check that it is running" in line
    # and the details, for whoever asks
    shown = run_cli("-A", APP, "--traceback", "purge", "-f", env=env)
    assert "Traceback" in shown.stderr and "hunter2" not in shown.stderr


@pytest.mark.parametrize(
    "broker",
    [
        "redis://:hunter2@127.0.0.1:{port}/0;redis://:swordfish@127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}/0?password=hunter2",
    ],
    ids=["failover-list", "query-password"],
)
def test_no_password_is_printed_by_a_worker(broker: str, redis_server: Any) -> None:
    # The real server has no password set: AUTH fails, the worker says so and keeps trying.
    url = broker.format(port=redis_server.port)
    env = itest_env(url, None)
    process = WorkerProcess(APP, "-P", "solo", env=env).start(wait_ready=False)
    try:
        wait_for(
            lambda: "Cannot connect to" in process.log() or "Connected to" in process.log(),
            30,
            "the worker to try the broker",
        )
        log = process.log()
    finally:
        process.kill()
    assert "hunter2" not in log and "swordfish" not in log, log
    assert "redis://" in log and "- broker:" in log, log
    assert "Traceback" not in log, log
