"""What installing taskq gives: the version in one place, the plugin entry point, and no
redis-py needed unless a redis:// URL is used."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import taskq

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_written_once() -> None:
    assert importlib.metadata.version("taskq") == taskq.__version__
    assert (
        "version ="
        not in (ROOT / "pyproject.toml").read_text().split("[project]")[1].split("\n[", 1)[0]
    )


def test_the_pytest_plugin_is_registered() -> None:
    plugins = importlib.metadata.entry_points(group="pytest11")
    assert [p.value for p in plugins if p.name == "taskq"] == ["taskq.contrib.pytest"]


def test_without_redis_py_the_embedded_default_works_and_redis_urls_say_what_to_install(
    tmp_path: Path,
) -> None:
    script = textwrap.dedent(f"""
        import importlib.abc, sys

        class NoRedis(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "redis" or name.startswith("redis."):
                    raise ImportError(f"No module named {{name!r}}")

        sys.meta_path.insert(0, NoRedis())
        import taskq
        import taskq.worker.worker
        app = taskq.Taskq("nored", embedded_data_dir={str(tmp_path)!r})

        @app.task
        def add(x, y):
            return x + y

        print("sent", bool(add.delay(1, 2).id))
        for url in ("redis://localhost", None):
            try:
                if url:
                    taskq.Taskq("r", broker=url).connection()
                else:
                    taskq.Taskq("r", broker="memory://", backend="redis://x").backend
            except taskq.ConfigurationError as exc:
                print("said:", exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "sent True"
    assert lines[1].startswith("said: A redis:// broker needs redis-py")
    assert "pip install 'taskq[redis]'" in lines[1] and "result backend" in lines[2]
