"""Chord joins kept in the result backend: who finished, and who sends the body, once.

The state of one chord, by its group id (Celery's keys and rules, so that Celery and
taskq workers can finish the same chord; Redis does it in scripts, in redis_chord.py):

- ``.s`` the header's size, set by the client before any member is sent; ``.t`` a
  difference added by ``replace``/``add_to_chord``;
- ``.j`` the members' results, ``[1, task_id, state, result]`` ordered by group index, and
  ``.d`` the members counted, so a member that runs twice counts once;
- ``.c`` the claim of the worker sending the body, then ``done``.

taskq adds ``.b``, the token of the body copy that may run. A worker killed after it sent
the body but before it marked the chord done leaves a claim that runs out; the member's
redelivery then sends the body again, under a new token, and whichever copy starts first
wins: the other finds a token not its own and is dropped (``chord_body_starts``). So the
body runs once even then, on taskq workers (a Celery worker runs any copy it gets).

Backends without scripts (memory, SQLite) run the same rules in Python, each call inside
one atomic section of the backend (``KeyValueChords``).
"""

from __future__ import annotations

import contextlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

GROUP_PREFIX = "celery-taskset-meta-"
DONE = "done"
RAN = "ran:"


@dataclass(frozen=True)
class PartReturn:
    """What one member's arrival made of the chord."""

    count: int  # members counted so far; -1 when the chord was already done
    total: int | None  # the size the count must reach (None: size unknown or dropped)
    claimed: bool  # this caller holds the claim to send the body

    @property
    def done(self) -> bool:
        return self.count < 0

    @property
    def complete(self) -> bool:
        return self.total is not None and self.count >= self.total


class Chords(ABC):
    """A backend that can join chords natively."""

    chord_expires: float | None = 86400.0

    def group_key(self, group_id: str, suffix: str = "") -> str:
        prefix: str = getattr(self, "key_prefix", "")
        base = prefix[: -len("celery-task-meta-")] if prefix.endswith("celery-task-meta-") else ""
        return f"{base}{GROUP_PREFIX}{group_id}{suffix}"

    @abstractmethod
    def set_chord_size(self, group_id: str, size: int) -> None:
        """Before the header is sent: a new run of this chord, of ``size`` members."""

    @abstractmethod
    def add_to_chord(self, group_id: str, count: int = 1) -> None:
        """``count`` more members than the header had (a replaced member that became a group)."""

    @abstractmethod
    def chord_part(
        self,
        group_id: str,
        member: str,
        score: float,
        entry: bytes | str,
        token: str,
        claim_s: int,
        before: Callable[[], None] | None = None,
    ) -> PartReturn:
        """Count one member's result (once per ``member``); claim the body if it was the last.

        ``before`` stores the member's own result first: in the same transaction where the
        backend has transactions (SQLite), so a member is stored and counted, or neither.
        """

    @abstractmethod
    def chord_entries(self, group_id: str) -> list[bytes | str]:
        """The members' result entries (in the result serializer), in group-index order."""

    @abstractmethod
    def chord_claim_body(self, group_id: str, token: str, claim_s: int) -> str:
        """Hold the claim for ``claim_s`` more and name ``token`` the body copy that may run:
        ``go``; ``ran`` if a body copy already started (send nothing); ``lost``."""

    @abstractmethod
    def chord_body_starts(self, group_id: str, token: str) -> bool:
        """Whether the body copy sent under ``token`` may run (and, if so, that it has)."""

    @abstractmethod
    def chord_cleanup(self, group_id: str, token: str, done_s: int) -> bool:
        """Drop the join state and mark the chord done, if ``token`` still holds the claim."""

    @abstractmethod
    def chord_drop_size(self, group_id: str) -> None:
        """After a failed join: a late copy of a member must not fail the chord again."""


class ChordTable(Protocol):
    """The operations ``KeyValueChords`` needs, inside one atomic section."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, ttl: float | None) -> None: ...

    def delete(self, *keys: str) -> None: ...

    def add_entry(self, jkey: str, member: str, score: float, entry: bytes | str) -> None:
        """Add ``entry`` unless ``member`` was already added."""

    def count_entries(self, jkey: str) -> int: ...

    def entries(self, jkey: str) -> list[bytes | str]: ...

    def drop_entries(self, jkey: str) -> None: ...


class KeyValueChords(Chords):
    """Celery's join rules in Python, for backends with a transaction instead of scripts."""

    @abstractmethod
    def _chord_table(self) -> contextlib.AbstractContextManager[ChordTable]: ...

    def _ttl(self) -> float | None:
        return self.chord_expires or None

    def set_chord_size(self, group_id: str, size: int) -> None:
        with self._chord_table() as t:
            t.delete(self.group_key(group_id, ".c"), self.group_key(group_id, ".b"))
            t.put(self.group_key(group_id, ".s"), str(int(size)), self._ttl())

    def add_to_chord(self, group_id: str, count: int = 1) -> None:
        key = self.group_key(group_id, ".t")
        with self._chord_table() as t:
            t.put(key, str(int(t.get(key) or 0) + count), self._ttl())

    def chord_part(
        self,
        group_id: str,
        member: str,
        score: float,
        entry: bytes | str,
        token: str,
        claim_s: int,
        before: Callable[[], None] | None = None,
    ) -> PartReturn:
        k = self._keys(group_id)
        with self._chord_table() as t:
            if before is not None:
                before()
            if t.get(k["c"]) == DONE:
                return PartReturn(-1, None, False)
            t.add_entry(k["j"], member, score, entry)
            count = t.count_entries(k["j"])
            size = t.get(k["s"])
            if size is None:
                return PartReturn(count, None, False)
            total = int(size) + int(t.get(k["t"]) or 0)
            claimed = False
            if count >= total and t.get(k["c"]) is None:
                t.put(k["c"], token, claim_s)
                claimed = True
            return PartReturn(count, total, claimed)

    def chord_entries(self, group_id: str) -> list[bytes | str]:
        with self._chord_table() as t:
            return t.entries(self.group_key(group_id, ".j"))

    def chord_claim_body(self, group_id: str, token: str, claim_s: int) -> str:
        k = self._keys(group_id)
        with self._chord_table() as t:
            holder = t.get(k["c"])
            if holder != token and (holder is not None or t.get(k["s"]) is None):
                return "lost"
            t.put(k["c"], token, claim_s)
            body = t.get(k["b"])
            if body is not None and body.startswith(RAN):
                return "ran"
            t.put(k["b"], token, self._ttl())
            return "go"

    def chord_body_starts(self, group_id: str, token: str) -> bool:
        key = self.group_key(group_id, ".b")
        with self._chord_table() as t:
            body = t.get(key)
            if body is None or body == RAN + token:
                return True
            if body == token:
                t.put(key, RAN + token, self._ttl())
                return True
            return False

    def chord_cleanup(self, group_id: str, token: str, done_s: int) -> bool:
        k = self._keys(group_id)
        with self._chord_table() as t:
            if t.get(k["c"]) != token:
                return False
            t.drop_entries(k["j"])
            t.delete(k["t"], k["s"])
            t.put(k["c"], DONE, done_s)
            return True

    def chord_drop_size(self, group_id: str) -> None:
        with self._chord_table() as t:
            t.delete(self.group_key(group_id, ".s"))

    def _keys(self, group_id: str) -> dict[str, str]:
        return {s: self.group_key(group_id, "." + s) for s in ("j", "t", "s", "c", "b")}


class MemoryChordTable:
    """A ``ChordTable`` over dicts; the caller holds the lock that makes it atomic."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, float]] = {}
        self.joins: dict[str, dict[str, tuple[float, bytes | str]]] = {}

    def get(self, key: str) -> str | None:
        item = self.values.get(key)
        if item is None or item[1] <= time.monotonic():
            return None
        return item[0]

    def put(self, key: str, value: str, ttl: float | None) -> None:
        self.values[key] = (value, time.monotonic() + ttl if ttl else math.inf)

    def delete(self, *keys: str) -> None:
        for key in keys:
            self.values.pop(key, None)

    def add_entry(self, jkey: str, member: str, score: float, entry: bytes | str) -> None:
        self.joins.setdefault(jkey, {}).setdefault(member, (score, entry))

    def count_entries(self, jkey: str) -> int:
        return len(self.joins.get(jkey, {}))

    def entries(self, jkey: str) -> list[bytes | str]:
        # By score alone: entries of one chord share a type, but order must not compare them.
        items = sorted(self.joins.get(jkey, {}).items(), key=lambda i: (i[1][0], i[0]))
        return [entry for _, (_, entry) in items]

    def drop_entries(self, jkey: str) -> None:
        self.joins.pop(jkey, None)


@contextlib.contextmanager
def held(
    lock: contextlib.AbstractContextManager[object], table: ChordTable
) -> Iterator[ChordTable]:
    with lock:
        yield table
