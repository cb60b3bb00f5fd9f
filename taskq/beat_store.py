"""Where the schedulers agree: the last due time sent for each entry, and the claims.

Any number of ``taskq beat`` processes may run. Before sending an entry's due time, a beat
claims that (entry, due time) here, atomically; only the beat whose claim succeeds sends,
then marks it sent. A claim holds for a lease: a beat killed between its claim and its mark
leaves a claim that runs out, and another beat takes it over and sends that due time (late,
once). A due time counts as sent when it is at or before the entry's last mark and nobody
holds a claim on it.

Kept in the broker the app already has: a Redis hash per entry (one script per step, times
from the Redis server's clock), a SQLite file beside the embedded broker (one transaction
per step), or on RabbitMQ the Redis or SQLite result backend. Times are epoch seconds; a
due time's key is written with millisecond precision.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from .exceptions import ConfigurationError


def due_key(due: float) -> str:
    return f"{due:.3f}"


class BeatStore(Protocol):
    def start(self, entry: str, now: float) -> float:
        """The entry's last mark; ``now`` if it has none (the first beat to ask sets it)."""

    def claim(self, entry: str, due: float, owner: str, lease: float) -> bool:
        """Take the due time for ``owner``: False if it was sent or is held by another."""

    def sent(self, entry: str, due: float) -> None:
        """The due time went out: drop its claim, move the mark forward to it."""

    def abandoned(self, entry: str) -> list[float]:
        """Due times claimed, not sent, whose lease ran out."""

    def forget(self, entry: str) -> None:
        """Drop the entry's state (its schedule changed: start again from now)."""

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- Redis

# KEYS[1] the entry's hash; ARGV: due key, owner, lease seconds. 1 when claimed.
CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local field = 'c:' .. ARGV[1]
local held = redis.call('HGET', KEYS[1], field)
if held then
  local space = string.find(held, ' ')
  local owner = string.sub(held, 1, space - 1)
  if owner ~= ARGV[2] and tonumber(string.sub(held, space + 1)) > now then return 0 end
else
  local last = redis.call('HGET', KEYS[1], 'last')
  if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('HSET', KEYS[1], field, ARGV[2] .. ' ' .. string.format('%.3f', now + tonumber(ARGV[3])))
return 1
"""
SENT = """
redis.call('HDEL', KEYS[1], 'c:' .. ARGV[1])
local last = redis.call('HGET', KEYS[1], 'last')
if not last or tonumber(last) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'last', ARGV[1])
end
return 1
"""
ABANDONED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local found = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'c:' then
    local held = all[i + 1]
    local space = string.find(held, ' ')
    if tonumber(string.sub(held, space + 1)) <= now then
      table.insert(found, string.sub(all[i], 3))
    end
  end
end
return found
"""


class RedisBeatStore:
    def __init__(
        self,
        url: str,
        namespace: str,
        options: dict[str, Any] | None = None,
        setting: str = "broker_transport_options",
    ):
        """``options`` are redis-py keywords (with ``master_name`` for sentinel://);
        ``setting`` is where they came from, for errors."""
        try:
            from .redis_sentinel import close_client, redis_client
        except ImportError as exc:
            raise ConfigurationError(
                f"taskq beat on Redis needs redis-py ({exc}): pip install 'taskq[redis]'"
            ) from exc
        self.client = redis_client(url, options or {}, setting)
        self._close = close_client
        self.prefix = f"taskq.beat:{namespace}:"
        self._claim = self.client.register_script(CLAIM)
        self._sent = self.client.register_script(SENT)
        self._abandoned = self.client.register_script(ABANDONED)

    def _key(self, entry: str) -> str:
        return self.prefix + entry

    def start(self, entry: str, now: float) -> float:
        key = self._key(entry)
        self.client.hsetnx(key, "last", due_key(now))
        return float(self.client.hget(key, "last"))

    def claim(self, entry: str, due: float, owner: str, lease: float) -> bool:
        return bool(self._claim(keys=[self._key(entry)], args=[due_key(due), owner, lease]))

    def sent(self, entry: str, due: float) -> None:
        self._sent(keys=[self._key(entry)], args=[due_key(due)])

    def abandoned(self, entry: str) -> list[float]:
        found = self._abandoned(keys=[self._key(entry)])
        return sorted(float(d) for d in found)

    def forget(self, entry: str) -> None:
        self.client.delete(self._key(entry))

    def close(self) -> None:
        self._close(self.client)


# ---------------------------------------------------------------------------- SQLite

SCHEMA = """
CREATE TABLE IF NOT EXISTS beat_last (entry TEXT PRIMARY KEY, last REAL NOT NULL);
CREATE TABLE IF NOT EXISTS beat_claim (
    entry TEXT NOT NULL, due TEXT NOT NULL, owner TEXT NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (entry, due)
);
"""


class SqliteBeatStore:
    """One file for every beat on this machine; each step one IMMEDIATE transaction."""

    def __init__(self, path: str | Path, clock: Any = time.time):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.clock = clock
        self._local = threading.local()
        self._db().executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    def _tx(self) -> _Transaction:
        return _Transaction(self._db())

    def start(self, entry: str, now: float) -> float:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO beat_last VALUES (?, ?)", (entry, now))
            row = db.execute("SELECT last FROM beat_last WHERE entry = ?", (entry,)).fetchone()
        return float(row[0])

    def claim(self, entry: str, due: float, owner: str, lease: float) -> bool:
        key, now = due_key(due), self.clock()
        with self._tx() as db:
            held = db.execute(
                "SELECT owner, until FROM beat_claim WHERE entry = ? AND due = ?", (entry, key)
            ).fetchone()
            if held is not None:
                if held[0] != owner and held[1] > now:
                    return False
            else:
                last = db.execute("SELECT last FROM beat_last WHERE entry = ?", (entry,)).fetchone()
                if last is not None and last[0] >= float(key):
                    return False
            db.execute(
                "INSERT OR REPLACE INTO beat_claim VALUES (?, ?, ?, ?)",
                (entry, key, owner, now + lease),
            )
        return True

    def sent(self, entry: str, due: float) -> None:
        key = due_key(due)
        with self._tx() as db:
            db.execute("DELETE FROM beat_claim WHERE entry = ? AND due = ?", (entry, key))
            db.execute(
                "INSERT INTO beat_last VALUES (?, ?) ON CONFLICT(entry) DO UPDATE "
                "SET last = max(last, excluded.last)",
                (entry, float(key)),
            )

    def abandoned(self, entry: str) -> list[float]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT due FROM beat_claim WHERE entry = ? AND until <= ?", (entry, self.clock())
            ).fetchall()
        return sorted(float(r[0]) for r in rows)

    def forget(self, entry: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM beat_claim WHERE entry = ?", (entry,))
            db.execute("DELETE FROM beat_last WHERE entry = ?", (entry,))

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


# ---------------------------------------------------------------------------- memory


class MemoryBeatStore(SqliteBeatStore):
    """In one process (kombu's memory:// broker, tests): SQLite in memory, shared by threads."""

    def __init__(self, clock: Any = time.time):  # no file, so not the parent's
        self.path = ":memory:"
        self.clock = clock
        self._lock = threading.RLock()
        self._shared = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._shared.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        return self._shared

    def _tx(self) -> _Transaction:
        return _LockedTransaction(self._shared, self._lock)

    def close(self) -> None:
        self._shared.close()


class _LockedTransaction(_Transaction):
    def __init__(self, db: sqlite3.Connection, lock: threading.RLock):
        super().__init__(db)
        self.lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        return super().__enter__()

    def __exit__(self, kind: object, *rest: object) -> None:
        try:
            super().__exit__(kind, *rest)
        finally:
            self.lock.release()


__all__ = ["BeatStore", "MemoryBeatStore", "RedisBeatStore", "SqliteBeatStore", "due_key"]
