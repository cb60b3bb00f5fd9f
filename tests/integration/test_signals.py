"""A stop signal is never lost, whatever the worker was doing when it landed.

The hard case is a signal that lands while the worker's main thread is writing a log line:
a handler that logs then meets the stderr buffer it interrupted, and used to raise
"reentrant call" before it had asked the worker to stop, so the worker ran on until a
supervisor's SIGKILL. These tests put the worker in exactly that place, every time: its
output goes into a small pipe that the test stops reading while tasks stream through, so
the main thread blocks inside a write to stderr, and the signal comes then.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.integration.helpers import WorkerProcess, wait_for
from tests.integration.worker_tasks import itest_env, make_app

pytestmark = pytest.mark.integration
APP = "tests.integration.worker_tasks"
TASKS = 600
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# write and writev, on x86_64 and on arm64 (/proc/PID/syscall gives the number).
WRITE_CALLS = {"1", "20", "64", "66"}


class PipedWorker(WorkerProcess):
    """A worker whose output goes through a pipe the test can stop reading."""

    def start(self, wait_ready: bool = True) -> PipedWorker:
        # Buffered stderr, as under systemd or Kubernetes: the interrupted write then holds
        # the buffer's lock (with PYTHONUNBUFFERED there is no buffer to meet again).
        self.env.pop("PYTHONUNBUFFERED", None)
        read, write = os.pipe()
        fcntl.fcntl(write, F_SETPIPE_SZ, 4096)  # the smallest: full after a few lines
        self.flowing = threading.Event()
        self.flowing.set()
        self._out = bytearray()
        self._reader = threading.Thread(target=self._read, args=(read,), daemon=True)
        self._reader.start()
        try:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=self.env,
                stdout=write,
                stderr=write,
                start_new_session=True,
            )
        finally:
            os.close(write)
        if wait_ready:
            wait_for(lambda: "Connected to" in self.log(), self.ready_timeout, "the worker")
        return self

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while True:
                self.flowing.wait()
                chunk = pipe.read(65536)
                if not chunk:
                    return
                self._out += chunk

    def log(self) -> str:
        return bytes(self._out).decode(errors="replace")

    def main_thread(self, name: str) -> str:
        return Path(f"/proc/{self.pid}/task/{self.pid}/{name}").read_text()

    def blocked_writing_output(self) -> bool:
        # "<number> <fd> ...": a write (or writev) to its stdout or stderr, which is our pipe.
        call = self.main_thread("syscall").split()
        return len(call) > 1 and call[0] in WRITE_CALLS and call[1] in {"0x1", "0x2"}

    def sleeps(self) -> int:
        for line in self.main_thread("status").splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
        raise AssertionError("no voluntary_ctxt_switches in /proc status")


@pytest.mark.parametrize(
    ("how", "cold"),
    [("SIGTERM", False), ("SIGINT", False), ("SIGTERM to the group", False), ("SIGQUIT", True)],
)
def test_a_signal_that_lands_mid_log_line_still_stops_the_worker(
    how: str, cold: bool, redis_url: str, redis_backend_url: str
) -> None:
    queue = f"signals-{how.replace(' ', '-')}"
    app = make_app(redis_url, redis_backend_url, None)
    add = app.tasks["itest.add"]
    env = itest_env(redis_url, redis_backend_url)
    worker = PipedWorker(APP, "-P", "prefork", "-c", "2", "-Q", queue, env=env).start()
    try:
        # Stop reading first: however fast the worker runs (or slowly this test), its log
        # lines (one per task) fill the small pipe long before the tasks run out.
        worker.flowing.clear()
        results = [add.apply_async((i, 1), queue=queue) for i in range(TASKS)]
        wait_for(worker.blocked_writing_output, 60, "the worker to block writing its log")
        before = worker.sleeps()
        if how == "SIGTERM to the group":
            os.killpg(worker.pid, signal.SIGTERM)
        else:
            worker.signal(getattr(signal, how))
        # The signal interrupts the write; its handler runs before the write is tried again.
        wait_for(
            lambda: worker.sleeps() > before and worker.blocked_writing_output(),
            30,
            "the handler to run and the write to block again",
        )
        worker.flowing.set()
        code = worker.wait(60)
        log = worker.log()
        assert "reentrant call" not in log and "Logging error" not in log, log[-3000:]
        assert ("cold shutdown" if cold else "warm shutdown") in log, log[-3000:]
        # 0 after a warm stop; 1 after a cold one, which cut tasks short (as Celery's)
        assert code == (1 if cold else 0), log[-3000:]
    finally:
        worker.flowing.set()
        worker.kill()
    # Nothing lost: whatever the first worker did not finish, a second one runs.
    with WorkerProcess(APP, "-P", "prefork", "-c", "2", "-Q", queue, env=env):
        assert [r.get(timeout=60) for r in results] == [i + 1 for i in range(TASKS)]
    app.close()
