"""SQLite result backend: the embedded default, shared by processes on one machine."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..exceptions import BackendError
from .base import Backend
from .chords import ChordTable, KeyValueChords
from .codec import ResultCodec
from .retry import RetryPolicy

SCHEMA = """
CREATE TABLE IF NOT EXISTS taskq_results (
    key TEXT PRIMARY KEY,
    meta TEXT NOT NULL,
    expires_at REAL
)
"""
CHORD_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS taskq_chord_keys "
    "(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL)",
    "CREATE TABLE IF NOT EXISTS taskq_chord_entries (jkey TEXT NOT NULL, member TEXT NOT NULL, "
    "score REAL NOT NULL, entry TEXT NOT NULL, PRIMARY KEY (jkey, member))",
)
SWEEP_EVERY = 60.0


class SqliteChordTable:
    """A ``ChordTable`` on one connection, inside the caller's transaction."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def get(self, key: str) -> str | None:
        row = self.db.execute(
            "SELECT value FROM taskq_chord_keys WHERE key = ? AND "
            "(expires_at IS NULL OR expires_at > ?)",
            (key, time.time()),
        ).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str, ttl: float | None) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO taskq_chord_keys (key, value, expires_at) VALUES (?, ?, ?)",
            (key, value, time.time() + ttl if ttl else None),
        )

    def delete(self, *keys: str) -> None:
        self.db.executemany("DELETE FROM taskq_chord_keys WHERE key = ?", [(k,) for k in keys])

    def add_entry(self, jkey: str, member: str, score: float, entry: bytes | str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO taskq_chord_entries (jkey, member, score, entry) "
            "VALUES (?, ?, ?, ?)",
            (jkey, member, score, entry),
        )

    def count_entries(self, jkey: str) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM taskq_chord_entries WHERE jkey = ?", (jkey,)
        ).fetchone()
        return int(row[0])

    def entries(self, jkey: str) -> list[bytes | str]:
        rows = self.db.execute(
            "SELECT entry FROM taskq_chord_entries WHERE jkey = ? ORDER BY score, member",
            (jkey,),
        )
        # TEXT for JSON, a BLOB for msgpack and pickle: SQLite keeps what it was given.
        return [r[0] for r in rows]

    def drop_entries(self, jkey: str) -> None:
        self.db.execute("DELETE FROM taskq_chord_entries WHERE jkey = ?", (jkey,))


class SqliteBackend(KeyValueChords, Backend):
    """Meta documents in one table; expired rows are invisible and swept now and then."""

    def __init__(
        self,
        path: str,
        expires: float | None = 86400.0,
        extended: bool = False,
        retry: RetryPolicy | None = None,
        codec: ResultCodec | None = None,
    ):
        super().__init__(expires, extended, retry, codec)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._last_sweep = 0.0
        self.chord_expires = expires

    def _db(self) -> sqlite3.Connection:
        # One connection per thread and per process: sqlite3 connections must not cross
        # a fork, and the threads pool writes from several threads.
        pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != pid:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(SCHEMA)
            for statement in CHORD_SCHEMA:
                conn.execute(statement)
            self._local.conn, self._local.pid = conn, pid
        return conn

    def _get(self, key: str) -> bytes | str | None:
        try:
            row = (
                self._db()
                .execute(
                    "SELECT meta FROM taskq_results WHERE key = ? AND "
                    "(expires_at IS NULL OR expires_at > ?)",
                    (key, time.time()),
                )
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise BackendError(f"Result store {self.path} failed: {exc}") from exc
        return None if row is None else row[0]  # TEXT for JSON, a BLOB for the others

    def _set(self, key: str, value: bytes | str, state: str) -> None:
        expires_at = time.time() + self.expires if self.expires else None
        try:
            db = self._db()
            db.execute(
                "INSERT OR REPLACE INTO taskq_results (key, meta, expires_at) VALUES (?, ?, ?)",
                (key, value, expires_at),
            )
            self._maybe_sweep(db)
        except sqlite3.Error as exc:
            raise BackendError(f"Result store {self.path} failed: {exc}") from exc

    @contextlib.contextmanager
    def _chord_table(self) -> Iterator[ChordTable]:
        # One write transaction per call: the count and the claim cannot interleave with
        # another process's, which is what makes the join count each member once.
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteChordTable(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise BackendError(f"Result store {self.path} failed: {exc}") from exc

    def transient(self, exc: BaseException) -> bool:
        # Locked past the busy timeout, disk full, an I/O error: all may pass.
        cause = exc.__cause__ if isinstance(exc, BackendError) else exc
        return isinstance(cause, sqlite3.OperationalError)

    def _delete(self, key: str) -> None:
        try:
            self._db().execute("DELETE FROM taskq_results WHERE key = ?", (key,))
        except sqlite3.Error as exc:
            raise BackendError(f"Result store {self.path} failed: {exc}") from exc

    def _maybe_sweep(self, db: sqlite3.Connection) -> None:
        now = time.time()
        if now - self._last_sweep > SWEEP_EVERY:
            self._last_sweep = now
            db.execute(
                "DELETE FROM taskq_results WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            )

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local = threading.local()
