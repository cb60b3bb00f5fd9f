"""What a worker knows of itself beyond its queues: revoked ids and the tasks it has run.

Revoked ids are kept as Celery keeps them: each for a while (3 hours), at most 50,000,
the oldest first to go, so a fleet's revokes cannot grow a worker's memory without bound.
With ``--statedb`` they are saved to a file (JSON, written whole and renamed into place)
when the worker stops and every minute, and read back at start: a revoke outlives a
restart.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REVOKES_MAX = 50_000
REVOKE_EXPIRES = 10_800.0  # seconds


class Revoked:
    """Task ids with an expiry, in the order they were revoked (Celery's LimitedSet)."""

    def __init__(self, maxlen: int = REVOKES_MAX, expires: float = REVOKE_EXPIRES):
        self.maxlen = maxlen
        self.expires = expires
        self._ids: OrderedDict[str, float] = OrderedDict()  # id -> wall time it expires
        self.version = 0  # changes whenever ids are added: a cheap "anything new?"

    def add(self, ids: Iterable[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        for task_id in ids:
            self._ids.pop(task_id, None)
            self._ids[task_id] = now + self.expires
        self.version += 1
        self.purge(now)

    def purge(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        while self._ids and (len(self._ids) > self.maxlen or next(iter(self._ids.values())) <= now):
            self._ids.popitem(last=False)

    def __contains__(self, task_id: object) -> bool:
        until = self._ids.get(task_id) if isinstance(task_id, str) else None
        return until is not None and until > time.time()

    def __iter__(self) -> Iterator[str]:
        now = time.time()
        return iter([i for i, until in self._ids.items() if until > now])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def dump(self) -> dict[str, float]:
        self.purge()
        return dict(self._ids)

    def load(self, saved: dict[str, float]) -> None:
        now = time.time()
        for task_id, until in sorted(saved.items(), key=lambda item: item[1]):
            if isinstance(task_id, str) and isinstance(until, int | float) and until > now:
                self._ids[task_id] = float(until)
        self.version += 1
        self.purge(now)


class WorkerState:
    """Revoked ids, tasks run per name, and the state file they are kept in."""

    def __init__(self, statedb: str | None = None):
        self.revoked = Revoked()
        self.revoked_stamps = RevokedStamps()
        self.total: Counter[str] = Counter()
        self.started = time.time()
        self.statedb = Path(statedb).expanduser() if statedb else None
        self._saved_at = time.monotonic()

    def load(self) -> None:
        if self.statedb is None or not self.statedb.exists():
            return
        try:
            data = json.loads(self.statedb.read_text())
            self.revoked.load(dict(data.get("revoked") or {}))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # A damaged file must not keep the worker from starting: say so, start empty.
            logger.error("Could not read the worker state file %s: %s", self.statedb, exc)
            return
        logger.info("Read %d revoked task id(s) from %s", len(self.revoked), self.statedb)

    def save(self) -> None:
        if self.statedb is None:
            return
        self._saved_at = time.monotonic()
        data = json.dumps({"revoked": self.revoked.dump()})
        tmp = self.statedb.with_name(self.statedb.name + ".tmp")
        try:
            self.statedb.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.statedb)
        except OSError as exc:
            logger.error("Could not write the worker state file %s: %s", self.statedb, exc)

    def save_now_and_then(self, every: float = 60.0) -> None:
        if self.statedb is not None and time.monotonic() - self._saved_at >= every:
            self.save()


class RevokedStamps:
    """Stamp values revoked with ``revoke_by_stamped_headers``, by stamp name.

    As Celery keeps them: for the life of the worker, not in the state file. A task is
    revoked when one of its stamped headers holds a revoked value (or a list holding one).
    """

    def __init__(self) -> None:
        self.by_header: dict[str, list[Any]] = {}
        self.version = 0

    def add(self, headers: Mapping[str, Any]) -> None:
        for header, values in headers.items():
            known = self.by_header.setdefault(str(header), [])
            known.extend(v for v in _as_list(values) if v not in known)
        self.version += 1

    def __bool__(self) -> bool:
        return bool(self.by_header)

    def match(self, stamped_headers: Iterable[str] | None, stamps: Mapping[str, Any]) -> bool:
        return bool(matching_stamps(self.by_header, stamped_headers, stamps))


def matching_stamps(
    wanted: Mapping[str, Any], stamped_headers: Iterable[str] | None, stamps: Mapping[str, Any]
) -> dict[str, list[Any]]:
    """The stamp values of a message (its stamped headers) that ``wanted`` names, by stamp;
    a value in either may be one value or a list of them."""
    found: dict[str, list[Any]] = {}
    for header in stamped_headers or ():
        value = stamps.get(header)
        if header not in wanted or value is None:
            continue
        names = _as_list(wanted[header])
        hits = [v for v in _as_list(value) if v in names]
        if hits:
            found[header] = hits
    return found


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple | set) else [value]
