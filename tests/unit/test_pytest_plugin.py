"""The pytest plugin, used as a ported project uses it: tests/data/ported is Celery's "Next
steps" project and a test module after Celery's testing guide, with celery renamed to taskq
in imports and fixture names. Its suite runs here in its own pytest process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taskq import Taskq, current_app, shared_task
from taskq.contrib.testing import WorkerDidNotStart, start_worker

PORTED = Path(__file__).resolve().parents[1] / "data" / "ported"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the ported project, to run its suite in."""
    return Path(shutil.copytree(PORTED, tmp_path / "ported"))


def run_suite(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(project), os.getcwd()])},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_ported_suite_passes_with_the_plugin(project: Path) -> None:
    done = run_suite(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout


def test_a_failing_ported_test_fails(project: Path) -> None:
    # One expectation made wrong: the fixtures really run the task, and say what came back.
    (project / "tests" / "test_broken.py").write_text(
        "def test_wrong(taskq_app, taskq_worker):\n"
        "    @taskq_app.task\n"
        "    def mul(x, y):\n"
        "        return x * y\n"
        "    assert mul.delay(4, 4).get(timeout=10) == 17\n"
    )
    done = run_suite(project, "tests/test_broken.py")
    assert done.returncode == 1 and "assert 16 == 17" in done.stdout


def test_session_fixtures_and_the_current_app(project: Path) -> None:
    (project / "tests" / "test_session.py").write_text(
        "from taskq import current_app, shared_task\n"
        "\n"
        "@shared_task(name='session.square')\n"
        "def square(x):\n"
        "    return x * x\n"
        "\n"
        "def test_one(taskq_session_app, taskq_session_worker):\n"
        "    assert taskq_session_app.tasks['session.square'].delay(4).get(timeout=10) == 16\n"
        "\n"
        "def test_two_same_worker(taskq_session_app, taskq_session_worker):\n"
        "    assert taskq_session_worker.ready.is_set()\n"
        "    assert taskq_session_app.tasks['session.square'].delay(5).get(timeout=10) == 25\n"
        "\n"
        "def test_current(depends_on_current_app, taskq_app):\n"
        "    assert current_app() is taskq_app is depends_on_current_app\n"
    )
    done = run_suite(project, "tests/test_session.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


@pytest.mark.usefixtures("restore_shared_tasks")
def test_taskq_app_is_the_default_app_during_a_test(taskq_app: Taskq) -> None:
    assert current_app() is taskq_app

    @shared_task(name="plugin.echo")
    def echo(x: int) -> int:
        return x

    assert "plugin.echo" in taskq_app.tasks


@pytest.mark.taskq(task_default_queue="marked")
def test_the_marker_sets_settings(taskq_app: Taskq) -> None:
    assert taskq_app.conf.task_default_queue == "marked"
    assert taskq_app.broker_url == "memory://"


def test_start_worker_raises_what_the_worker_died_of() -> None:
    app = Taskq("dies", broker="memory://", worker_pool="prefork", set_as_current=False)
    died = pytest.raises(Exception, match="memory:// broker lives in one process")
    with died, start_worker(app, pool="prefork"):
        pass
    unreachable = Taskq("away", broker="redis://127.0.0.1:1/0", set_as_current=False)
    unreachable.conf.broker_connection_max_retries = 0
    with pytest.raises(WorkerDidNotStart), start_worker(unreachable, ping_task_timeout=5):
        pass
