"""A wake-up pipe: lets other threads end the worker's wait for the broker at once.

The worker's consumer thread waits in ``drain_events`` while the pool's threads report
finished tasks. Without a way to wake it, it can only poll with a short timeout, and the
pool sits idle until that timeout runs out. A transport that watches ``Waker.fd`` next to
its broker sockets can be woken instead.
"""

from __future__ import annotations

import contextlib
import os
import threading


class Waker:
    """A self-pipe: ``wake`` from any thread makes ``fd`` readable until ``woken``."""

    def __init__(self) -> None:
        self._fds: tuple[int, int] | None = None
        self._lock = threading.Lock()

    @property
    def fd(self) -> int:
        """The read end, opened on first use (again after ``close``)."""
        fds = self._fds
        if fds is None:
            with self._lock:
                if self._fds is None:
                    read, write = os.pipe()
                    os.set_blocking(read, False)
                    os.set_blocking(write, False)
                    self._fds = (read, write)
                fds = self._fds
        return fds[0]

    def wake(self) -> None:
        # Under the lock: once closed, the fd number may belong to another file.
        with self._lock:
            if self._fds is not None:
                # A full pipe already holds a pending wake-up.
                with contextlib.suppress(BlockingIOError):
                    os.write(self._fds[1], b"!")

    def woken(self) -> bool:
        """Whether a wake-up came since the last call (and forget it)."""
        fds = self._fds
        if fds is None:
            return False
        try:
            return bool(os.read(fds[0], 4096))
        except BlockingIOError:
            return False

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, None
            for fd in fds or ():
                os.close(fd)
