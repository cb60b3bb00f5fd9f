"""Processes the harness starts: workers in their own session, their memory, their end.

A worker is started with ``start_new_session`` (its process group id is its pid) and asks
Linux to SIGTERM it if the harness dies, so a crashed or interrupted run leaves nothing
behind. It is stopped by pid and process group only, never by name.

Reading /proc and walking the process tree are the test suite's helpers (tests/servers.py,
tests/integration/helpers.py); what is added here is the benchmark's own: the RSS sampler
and the worker's start/stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.integration.helpers import descendants, still_alive  # plain Python, no pytest
from tests.servers import die_with_parent, tail

PAGE = os.sysconf("SC_PAGE_SIZE")
# The tree is walked (a scan of all of /proc) this rarely; each sample in between reads
# one small file per known process, so sampling costs the measured drain next to nothing.
TREE_RESCAN = 1.0  # seconds
LOG_LINES = 30  # of a dead worker's log, in the error

_PREEXEC = die_with_parent()  # looked up once, before any fork


class BenchError(RuntimeError):
    """A benchmark run could not be completed; the message says why and where to look."""


def tree_rss(pids: Iterable[int]) -> int | None:
    """Summed resident set size, or None once one of ``pids`` is gone (the tree changed).

    Pages a forked child still shares with its parent count twice, as in ``ps``; the same
    holds for both frameworks, which both fork a pool.
    """
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            return None
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
        self.rss_series: list[tuple[float, int]] = []  # (seconds since spawn, bytes)
        # Every process seen in the tree (pid -> start time). taskq's pool children move to
        # process groups of their own, so killing the worker's group alone could leave them.
        self._known: dict[int, int] = {}
        self._tree: list[int] = []  # the tree at the last scan: what each sample reads
        self._next_scan = 0.0
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    @property
    def rss_peak(self) -> int:
        """The largest sample, in bytes (0 before the first)."""
        return max((rss for _, rss in self.rss_series), default=0)

    def sample_memory(self, interval: float) -> None:
        """Sample RSS of the whole tree every ``interval`` seconds until ``stop()``."""

        def run() -> None:
            while not self._stop_sampling.wait(interval):
                rss = self._measure()
                if rss is not None:
                    self.rss_series.append((time.time() - self.spawned_at, rss))

        self._sampler = threading.Thread(target=run, name="rss-sampler", daemon=True)
        self._sampler.start()

    def _scan(self) -> None:
        tree = descendants(self.pid)
        self._known.update(tree)
        self._tree = list(tree)
        self._next_scan = time.monotonic() + TREE_RESCAN

    def _measure(self) -> int | None:
        """The tree's RSS now; None if it changed under two reads in a row (no sample)."""
        if time.monotonic() >= self._next_scan:
            self._scan()
        rss = tree_rss(self._tree)
        if rss is None:  # a process ended, or a pool child was replaced: find them again
            self._scan()
            rss = tree_rss(self._tree)
        return rss

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise BenchError(
                f"worker exited with code {code}: {' '.join(self.argv)}\n"
                f"log {self.log_path}:\n{tail(self.log_path, LOG_LINES)}"
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
        for pid in still_alive(self._known):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
