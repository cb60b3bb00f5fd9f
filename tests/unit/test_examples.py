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
