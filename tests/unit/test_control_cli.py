"""``taskq inspect|control|status|revoke`` against stand-in workers (tests/unit/pidbox_workers.py).

The commands run in-process with click's runner, on memory://, so each request the CLI
sends is checked as the stand-in received it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from click.testing import CliRunner

from taskq.cli import main as cli_main
from tests.integration import interop_tasks
from tests.unit.pidbox_workers import CANNED, WAIT, Workers

CLI = ["-A", "tests.integration.interop_tasks", "-b", "memory://"]


@pytest.fixture
def workers() -> Iterator[Workers]:
    started = Workers()
    yield started
    started.stop()


def run(*args: str, cli: Sequence[str] = CLI) -> Any:
    try:
        return CliRunner().invoke(cli_main, [*cli, *args])
    finally:
        # The app module stays imported between invocations here, unlike in a real `taskq`
        # process: drop the app's clients, so the next -b is the broker it uses.
        interop_tasks.taskq_app.close()


def test_cli_inspect_json_and_text(workers: Any) -> None:
    worker = workers()
    done = run("inspect", "registered", "-d", worker.hostname, "-t", str(WAIT), "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {worker.hostname: CANNED["registered"]}
    assert worker.request().body["arguments"] == {"taskinfoitems": []}
    done = run("inspect", "registered", "rate_limit", "-d", worker.hostname, "-t", str(WAIT))
    assert done.exit_code == 0, done.output
    assert worker.request(count=2).body["arguments"] == {"taskinfoitems": ["rate_limit"]}
    assert done.stdout.splitlines() == [
        f"-> {worker.hostname}: OK",
        *(f"    * {name}" for name in CANNED["registered"]),
        "",
        "1 node online.",
    ]


def test_cli_status(workers: Any) -> None:
    worker = workers()
    done = run("status", "-d", worker.hostname, "-t", str(WAIT))
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == [f"-> {worker.hostname}: OK", "", "1 node online."]
    assert worker.request().body["method"] == "ping"


def test_cli_control_sends_celerys_arguments(workers: Any) -> None:
    worker = workers()
    cases = [
        (["rate_limit", "proj.add", "10/s"], {"task_name": "proj.add", "rate_limit": "10/s"}),
        (["time_limit", "proj.add", "5"], {"task_name": "proj.add", "soft": 5.0}),
        (["pool_grow", "2"], {"n": 2}),
        (["add_consumer", "q1"], {"queue": "q1"}),
        (["revoke", "a", "b"], {"task_id": ["a", "b"]}),
        (["terminate", "SIGKILL", "a"], {"signal": "SIGKILL", "task_id": ["a"]}),
        (["shutdown"], {}),
    ]
    for count, (args, expected) in enumerate(cases, 1):
        done = run("control", *args, "-d", worker.hostname, "-t", str(WAIT))
        assert done.exit_code == 0, done.output
        body = worker.request(count=count).body
        assert (body["method"], body["arguments"]) == (args[0], expected)
        assert done.stdout.splitlines() == [
            f"-> {worker.hostname}: OK",
            f"    {CANNED.get(args[0], {'ok': f'{args[0]} done'})['ok']}",
        ]


def test_cli_revoke(workers: Any) -> None:
    worker = workers()
    done = run(
        "revoke", "a", "b", "--terminate", "-s", "KILL", "-d", worker.hostname, "-t", str(WAIT)
    )
    assert done.exit_code == 0, done.output
    assert worker.request().body["arguments"] == {
        "task_id": ["a", "b"], "terminate": True, "signal": "SIGKILL",
    }  # fmt: skip
    assert done.stdout.startswith(f"-> {worker.hostname}: OK\n")


def test_cli_errors_are_one_line_with_celerys_exit_status(workers: Any) -> None:
    workers()
    done = run("status", "-d", "nobody@nowhere", "-t", "0.2")
    assert done.exit_code == 69
    assert done.stderr.startswith("Error: No nodes replied within time constraint")
    assert len(done.stderr.splitlines()) == 1
    done = run("inspect", "everything")
    assert done.exit_code == 2
    assert "Known inspect commands: active, active_queues," in done.stderr
    done = run("control", "rate_limit", "proj.add")
    assert done.exit_code == 2
    assert "taskq control rate_limit <task_name> <rate_limit>" in done.stderr
    done = run("revoke", "a", "--signal", "NOPE")
    assert done.exit_code == 2
    assert "Unknown signal 'NOPE'" in done.stderr
    unreachable = ["-A", "tests.integration.interop_tasks", "-b", "redis://:pw@127.0.0.1:1/0"]
    done = run("inspect", "ping", cli=unreachable)
    assert done.exit_code == 69
    assert done.stderr.startswith("Error: Could not reach the broker at redis://:**@")
    assert len(done.stderr.splitlines()) == 1 and ":pw@" not in done.stderr
