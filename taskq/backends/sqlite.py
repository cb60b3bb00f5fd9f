"""SQLite result backend: the embedded default, shared by processes on one machine."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from ..exceptions import BackendError
from .base import Backend
from .retry import RetryPolicy

SCHEMA = """
CREATE TABLE IF NOT EXISTS taskq_results (
    key TEXT PRIMARY KEY,
    meta TEXT NOT NULL,
    expires_at REAL
)
"""
SWEEP_EVERY = 60.0


class SqliteBackend(Backend):
    """Meta documents in one table; expired rows are invisible and swept now and then."""

    def __init__(
        self,
        path: str,
        expires: float | None = 86400.0,
        extended: bool = False,
        retry: RetryPolicy | None = None,
    ):
        super().__init__(expires, extended, retry)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._last_sweep = 0.0

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
            self._local.conn, self._local.pid = conn, pid
        return conn

    def _get(self, key: str) -> str | None:
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
        return None if row is None else str(row[0])

    def _set(self, key: str, value: str, state: str) -> None:
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
