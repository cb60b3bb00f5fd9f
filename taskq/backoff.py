"""Waiting between attempts, and saying so once: exponential backoff and incident logs.

A worker that retries a failing broker at once, and logs each try, turns one fault into a
storm: a thousand reconnects a second against a server that is already struggling, and a
log that fills the disk (the same disk, when the fault is a full disk). Every retry path
of the worker takes its delay from a ``Backoff`` and reports through an ``Incident``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from .url import scrub


@dataclass
class Backoff:
    """Delays that double from ``first`` up to ``cap``, each with jitter; ``reset`` on success.

    The first retry of an incident waits ``first`` (a dropped connection usually heals at
    once); the jitter (a draw between half and all of the delay) keeps a fleet of workers
    that lost the same server from coming back in step. The cap bounds how long a worker
    may stay away after the fault is gone.
    """

    first: float = 0.2
    cap: float = 5.0
    failures: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.first * 2.0**self.failures)
        self.failures += 1
        return ceiling * (0.5 + 0.5 * self._random.random())

    def reset(self) -> None:
        self.failures = 0


class Incident:
    """Logs one kind of failure once per incident, not once per attempt.

    An incident opens with its first failure, logged in full. Repeats of the same failure
    are logged again only at the 2nd, 4th, 8th... attempt, with their count; a different
    failure is logged at once. ``resolve`` closes the incident and says how long it lasted.
    """

    def __init__(self, logger: logging.Logger, what: str):
        self.logger = logger
        self.what = what
        self.attempts = 0
        self._last: str | None = None

    @property
    def open(self) -> bool:
        return self.attempts > 0

    def failed(self, exc: BaseException, then: str = "", level: int = logging.ERROR) -> None:
        self.attempts += 1
        text = describe(exc)
        if text != self._last:
            self._last = text
            self.logger.log(level, "%s: %s%s", self.what, text, f". {then}" if then else "")
        elif self.attempts & (self.attempts - 1) == 0:  # a power of two
            self.logger.log(
                level, "%s: still %s (%d attempts)%s", self.what, text, self.attempts,
                f". {then}" if then else "",
            )  # fmt: skip

    def resolve(self) -> None:
        if self.attempts:
            self.logger.warning(
                "%s: recovered after %d failed attempt(s)", self.what, self.attempts
            )
        self.attempts = 0
        self._last = None


def describe(exc: BaseException) -> str:
    """What went wrong, in words an operator can act on, for the failures that need them."""
    text = f"{type(exc).__name__}: {scrub(str(exc))}" if str(exc) else type(exc).__name__
    advice = _advice(text.lower())
    return f"{text} ({advice})" if advice and advice not in text else text


def _advice(lowered: str) -> str | None:
    if "database or disk is full" in lowered or "no space left" in lowered:
        return "the disk is full: free space where the broker keeps its data"
    if "oom command not allowed" in lowered or "used memory > 'maxmemory'" in lowered:
        return (
            "Redis is out of memory and may not evict: raise maxmemory, or remove keys it "
            "does not need"
        )
    if "readonly" in lowered and "replica" in lowered:
        return "the server is a read-only replica: point broker_url at the primary"
    return None
