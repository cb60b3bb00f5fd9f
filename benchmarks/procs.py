"""Processes the harness starts: workers in their own session, their memory, their end.

A worker is started with ``start_new_session`` (its process group id is its pid) and asks
Linux to SIGTERM it if the harness dies, so a crashed or interrupted run leaves nothing
behind. It is stopped by pid and process group only, never by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


class BenchError(RuntimeError):
    """A benchmark run could not be completed; the message says why and where to look."""


def _pdeathsig() -> Callable[[], None] | None:
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


_PREEXEC = _pdeathsig()


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


def processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time in clock ticks) of every live process."""
    table: dict[int, tuple[int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] not in ("Z", "X"):
                table[int(stat.parent.name)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(root: int) -> dict[int, int]:
    """``root`` and every process below it: pid -> start time (tells a reused pid apart)."""
    table = processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found[pid] = table[pid][1]
            todo.extend(children.get(pid, ()))
    return found


def rss_bytes(pids: Sequence[int]) -> int:
    """Summed resident set size. Pages a forked child still shares with its parent count
    twice, as in ``ps``; the same holds for both frameworks, which both fork a pool."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total


class Worker:
    """One worker command line, its log, and its process tree's memory over time."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], cwd: Path, log_path: Path):
        self.log_path = log_path
        self.argv = list(argv)
        self.spawned_at = time.time()  # wall clock: compared with the task's time.time()
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_PREEXEC,
            )
        self.pid = self.popen.pid
        self.rss_peak = 0
        self.rss_series: list[tuple[float, int]] = []  # (seconds since spawn, bytes)
        # Every process seen in the tree. taskq's pool children move to process groups of
        # their own, so killing the worker's group alone could leave them behind.
        self._known: dict[int, int] = {}
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    def sample_memory(self, interval: float) -> None:
        """Sample RSS of the whole tree every ``interval`` seconds until ``stop()``."""

        def run() -> None:
            while not self._stop_sampling.wait(interval):
                tree = descendants(self.pid)
                self._known.update(tree)
                rss = rss_bytes(list(tree))
                self.rss_peak = max(self.rss_peak, rss)
                self.rss_series.append((time.time() - self.spawned_at, rss))

        self._sampler = threading.Thread(target=run, name="rss-sampler", daemon=True)
        self._sampler.start()

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise BenchError(
                f"worker exited with code {code}: {' '.join(self.argv)}\n"
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (warm shutdown), then SIGKILL the group and every process seen in the tree.

        Only pids whose start time still matches are killed, so a pid reused by another
        program since it was seen is left alone.
        """
        self._stop_sampling.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        self._known.update(descendants(self.pid))
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        alive = processes()
        for pid, started in self._known.items():
            if pid != self.pid and alive.get(pid, (0, -1))[1] == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
