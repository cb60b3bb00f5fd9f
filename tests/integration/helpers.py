"""Run real `taskq worker` processes (the CLI, the prefork pool) for integration tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.servers import alive, proc_table

ROOT = Path(__file__).resolve().parents[2]


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> object:
    """Poll until ``predicate()`` is truthy; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def connections_received(server: Any) -> int:
    """How many connections the Redis server ``server`` (a redis-py client) has accepted."""
    return int(server.info("stats")["total_connections_received"])


def run_cli(
    *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m taskq ARGS`` from the repository root, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "taskq", *args],
        cwd=ROOT,
        input=input,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of ``root`` and every live process below it (from /proc)."""
    table = proc_table()
    below: dict[int, list[int]] = {}
    for pid, info in table.items():
        below.setdefault(info.ppid, []).append(pid)
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid not in found and alive(table.get(pid)):
            found[pid] = table[pid].start
            todo.extend(below.get(pid, ()))
    return found


def still_alive(procs: dict[int, int]) -> list[int]:
    """Those of ``procs`` (pid -> start time) still running; a reused pid does not count."""
    table = proc_table()
    return [p for p, start in procs.items() if alive(table.get(p)) and table[p].start == start]


def children(pid: int) -> list[int]:
    """Live direct children of ``pid``."""
    return [c for c, info in proc_table().items() if info.ppid == pid and alive(info)]


class WorkerProcess:
    """A `python -m taskq -A <module> worker ...` subprocess with its log in a file."""

    ready_line = "Connected to"  # in the log once the process is ready

    def __init__(
        self,
        app: str,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        ready_timeout: float = 30.0,
    ):
        self.app = app
        self.args = list(args)
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(cwd or ROOT), str(ROOT), os.environ.get("PYTHONPATH", "")]
            ),
            **(env or {}),
        }
        self.cwd = cwd or ROOT
        self.ready_timeout = ready_timeout
        self.log_file = Path(tempfile.mkstemp(prefix="taskq-worker-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> Sequence[str]:
        return [sys.executable, "-m", "taskq", "-A", self.app, "worker", "-l", "info", *self.args]

    def start(self, wait_ready: bool = True) -> WorkerProcess:
        with self.log_file.open("ab") as log:
            # A session of its own, so a test can signal the worker's whole process group.
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait_ready:
            wait_for(
                lambda: self.ready_line in self.log() or self.proc.poll() is not None,  # type: ignore[union-attr]
                self.ready_timeout,
                f"worker {self.app} to connect",
            )
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
        return self

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker did not exit within {timeout}s:\n{self.log()}") from None

    def stop(self, timeout: float = 30.0) -> int:
        """Warm shutdown (SIGTERM); kill the whole group if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker ignored SIGTERM for {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL the worker and every process below it at once, as a crash would.

        taskq's pool children lead process groups of their own, so killing the worker (or
        its group) alone would leave them running to finish and ack on their own. The
        worker is frozen first, so it forks no replacement while its tree is listed.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGSTOP)
        tree = descendants(self.pid)
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        self.proc.wait(timeout=10)
        wait_for(lambda: not still_alive(tree), 20, f"processes {sorted(tree)} to exit")

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()


class DashboardProcess(WorkerProcess):
    """`python -m taskq -A <module> dashboard --port 0 ...`; ``url`` once it serves."""

    ready_line = "Dashboard on http"

    def command(self) -> Sequence[str]:
        return [sys.executable, "-m", "taskq", "-A", self.app, "dashboard", "--port", "0",
                "-l", "info", *self.args]  # fmt: skip

    @property
    def url(self) -> str:
        found = re.search(r"Dashboard on (http://\S+/)", self.log())
        assert found, self.log()
        return found.group(1)
