"""The examples' own test suites, run as their users would run them (their own pytest)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_suite(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)])},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_django_example_suite(tmp_path: Path) -> None:
    project = Path(shutil.copytree(ROOT / "examples" / "django", tmp_path / "django"))
    done = run_suite(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_the_canvas_example_runs_on_the_embedded_default() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "canvas" / "workflow.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    pages = [sum(range(p * 10, p * 10 + 10)) for p in range(10)]
    assert done.stdout.splitlines() == [
        f"chain: {2 * sum(range(30, 40))}",
        f"group: {pages}",
        f"chord: {sum(pages)}",
        f"chord in a chain: {2 * sum(pages)}",
        "worker stopped, exit code 0",
    ]


def test_the_fastapi_example_suite(tmp_path: Path) -> None:
    project = Path(shutil.copytree(ROOT / "examples" / "fastapi", tmp_path / "fastapi"))
    done = run_suite(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
