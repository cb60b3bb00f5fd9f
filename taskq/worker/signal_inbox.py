"""Signals as requests: a handler only records one, and the loop that owns the process acts.

A Python signal handler runs on the main thread between two bytecodes, wherever that
thread happens to be: in the middle of a log line, holding the stderr buffer's lock, or
holding a lock the handler itself would need. A handler that logs or takes a lock can then
fail (``RuntimeError: reentrant call inside <_io.BufferedWriter name='<stderr>'>``) or
deadlock, and whatever it meant to do next is lost. So the handlers here do one thing,
append the signal number to a deque (a single C call, safe at any point), and the wake-up
byte that CPython's C-level handler writes (``signal.set_wakeup_fd``) makes the owner's poll
return. The owner calls ``take`` from its loop, then logs and acts like any other code.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import deque
from collections.abc import Iterable
from typing import Any

# What a process started from the command line may be asked to do by its supervisor.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGQUIT") if hasattr(signal, name)
)


class SignalInbox:
    """Signals received and not yet acted on, and a file that is readable while there are."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._read, self._write = os.pipe()  # close-on-exec, like every fd Python opens
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)  # set_wakeup_fd requires it
        self._previous: dict[int, Any] = {}
        self._previous_fd: int | None = None

    @property
    def fd(self) -> int:
        """Readable once a signal has come: add it to the loop's poll."""
        return self._read

    def install(self, signums: Iterable[int] = STOP_SIGNALS) -> None:
        """Route ``signums`` here. Only from the main thread (Python's rule for handlers)."""
        for signum in signums:
            self._previous[signum] = signal.signal(signum, self._record)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    def _record(self, signum: int, frame: Any) -> None:
        # Nothing else here: no logging, no locks, no I/O (see the module docstring).
        self._pending.append(signum)

    def take(self) -> list[int]:
        """The signals received since the last call, oldest first; empties the file."""
        # Empty the file first: a signal that lands after this read is still in the deque
        # below or, if its handler has not run yet, leaves a byte that wakes the next poll.
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass
        taken = []
        while self._pending:
            taken.append(self._pending.popleft())
        return taken

    def uninstall(self) -> None:
        """Put back the handlers and wake-up file that were there before ``install``."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        if self._previous_fd is not None:
            signal.set_wakeup_fd(self._previous_fd)
            self._previous_fd = None
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


def forget_inherited_inbox() -> None:
    """In a forked child: stop recording into the parent's inbox, take the default actions.

    A fork inherits the handlers and the wake-up file. Left in place, a signal meant for
    the child would wake the parent's loop, and the child would record the signal in its
    own copy of the deque, where nothing ever reads it: it would ignore its own SIGTERM.
    """
    with contextlib.suppress(ValueError):  # not the main thread: nothing was inherited here
        signal.set_wakeup_fd(-1)
        for signum in STOP_SIGNALS:
            if isinstance(getattr(signal.getsignal(signum), "__self__", None), SignalInbox):
                signal.signal(signum, signal.SIG_DFL)
