"""Embedded broker: a kombu virtual transport on one SQLite file shared by local processes.

Use it as ``kombu.Connection("sqlite:////abs/path/broker.sqlite3", transport=Transport)``.

A consumed message is leased, not removed: the row stays until it is acked. A lease names its
owner (PID plus the process start time, so a reused PID is not mistaken for the owner) and is
renewed by a thread while that process lives. Any ``_get`` releases the rows of an owner that
is gone, so a SIGKILLed worker's unacked messages come back at once; a lease that is simply no
longer renewed expires after ``visibility_timeout``.

Lease times are read from the machine's boot-time clock, not its wall clock: every process
on the machine shares it, and no adjustment (NTP, a manual jump, daylight saving) moves it,
so a jump of the wall clock cannot make live leases look expired. The file records which
boot its leases were measured in; after a reboot each lease left from the previous one
gets one term on the new clock, and expires then (its owner is gone).
"""

# kombu ships py.typed but most of its functions are unannotated.
# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import functools
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.transport import virtual
from kombu.utils.json import dumps, loads

from ..exceptions import ConfigurationError
from .compressed import HeldVirtualMessage

logger = logging.getLogger(__name__)

#: Writers wait this long for the file's write lock instead of failing with "database is locked".
BUSY_TIMEOUT = 30.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY)",
    # AUTOINCREMENT never reuses an id, so id order stays publish order after deletes.
    "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " queue TEXT NOT NULL, priority INTEGER NOT NULL, tag TEXT NOT NULL UNIQUE,"
    " payload TEXT NOT NULL, deliveries INTEGER NOT NULL DEFAULT 0, lease_until REAL,"
    " owner_ns TEXT, owner_pid INTEGER, owner_start TEXT, channel TEXT)",
    "CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, priority DESC, id)",
    "CREATE INDEX IF NOT EXISTS messages_owner ON messages (owner_ns, owner_pid, owner_start)"
    " WHERE owner_pid IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS messages_channel ON messages (channel) WHERE channel IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS bindings (exchange TEXT NOT NULL, routing_key TEXT NOT NULL,"
    " pattern TEXT, queue TEXT NOT NULL, PRIMARY KEY (exchange, routing_key, queue))",
    # What lease times are measured against (see lease_clock).
    "CREATE TABLE IF NOT EXISTS clock (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_READY = "(lease_until IS NULL OR lease_until <= ?)"
_RELEASE = (
    "lease_until = NULL, owner_ns = NULL, owner_pid = NULL, owner_start = NULL, channel = NULL"
)


def _proc_start(pid: int) -> str | None:
    """Start time of ``pid`` (None: gone or a zombie; "": unknowable here, no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None if os.path.exists("/proc/self/stat") else ""
    except OSError:
        return ""
    state, *fields = stat.rsplit(")", 1)[1].split()
    # A SIGKILLed child stays a zombie until its parent reaps it, but it will never ack.
    return None if state in ("Z", "X") else fields[18]


_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def lease_clock() -> float:
    """Seconds on the clock leases are measured with: one for the whole machine, no jumps.

    Linux's boot-time clock where there is one, the wall clock elsewhere.
    """
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME)
    return time.time()


@functools.cache
def _clock_id() -> str:
    """Which clock (and, for the boot-time clock, which boot) lease times belong to."""
    if _BOOTTIME is None:
        return "wall"
    try:
        return "boot:" + Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "boot:unknown"


@functools.cache
def _namespace() -> str:
    """Where our PIDs mean something: one kernel boot and one PID namespace (not a container's)."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot_id}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return socket.gethostname()


def _owner_alive(pid: int, start: str) -> bool:
    current = _proc_start(pid)
    if current is None:
        return False
    if current and start:
        return current == start  # same PID, other start time: the PID was reused
    if os.name == "nt":
        return True  # os.kill would terminate it there; such leases just expire
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, just not ours
    return True


def _db_path(hostname: str | None, virtual_host: str | None) -> str:
    """``sqlite:////abs/b.db`` -> ``/abs/b.db``; ``sqlite:///rel/b.db`` -> ``$CWD/rel/b.db``.

    kombu's URL parser puts everything after the third slash into ``virtual_host``, so the
    fourth slash of the absolute form is the path's own leading slash.
    """
    if hostname not in (None, "", "localhost"):
        raise ValueError(f"the sqlite transport is local only; got host {hostname!r}")
    if not virtual_host or virtual_host in ("/", ":memory:"):
        raise ValueError("the sqlite transport needs a file: sqlite:////absolute/path/broker.db")
    path = Path(os.path.abspath(virtual_host))
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE). check_same_thread
    # is off because kombu lets other threads ack; each Channel serialises use with its own lock.
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA synchronous = FULL")  # an acked publish survives power loss, not just kill
    return db


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Take the write lock up front, so two claimers can never both read the same free row."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _init_schema(db: sqlite3.Connection, lease_seconds: float) -> None:
    deadline = time.monotonic() + BUSY_TIMEOUT
    # Turning WAL on needs the file to ourselves for a moment; a peer may be creating it too.
    while db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("could not switch the broker file to WAL mode")
        time.sleep(0.05)
    with _immediate(db):
        for statement in _SCHEMA:
            db.execute(statement)
        _restart_leases_of_another_clock(db, lease_seconds)


def _restart_leases_of_another_clock(db: sqlite3.Connection, lease_seconds: float) -> None:
    # Leases measured on another clock (a previous boot, or the wall clock of an older
    # taskq) cannot be compared with ours. Their owners are gone (a reboot), or alive and
    # renewing (an upgrade): each lease gets one full term on our clock, after which the
    # first kind expire and the second renew. Releasing them at once could run the
    # messages of a live owner twice.
    row = db.execute("SELECT value FROM clock WHERE name = 'leases'").fetchone()
    ours = _clock_id()
    if row is not None and row[0] == ours:
        return
    db.execute(
        "UPDATE messages SET lease_until = ? WHERE lease_until IS NOT NULL",
        (lease_clock() + lease_seconds,),
    )
    db.execute("INSERT OR REPLACE INTO clock (name, value) VALUES ('leases', ?)", (ours,))


class _Renewer(threading.Thread):
    """Daemon thread that renews the leases of every open channel of one transport.

    A thread, not a hook in ``drain_events``: the consumer thread may itself be running an
    hour-long task and call nothing meanwhile, and that task's message must stay leased.
    """

    def __init__(self, transport: Transport) -> None:
        super().__init__(name="taskq-sqlite-lease-renewer", daemon=True)
        self.pid, self.stopped = os.getpid(), threading.Event()
        self._transport = weakref.ref(transport)  # a dropped connection must stay collectable
        self._path, self._ttl = transport.db_path, transport.visibility_timeout
        self._every = transport.lease_renew_interval

    def run(self) -> None:
        db: sqlite3.Connection | None = None
        try:
            while not self.stopped.wait(self._every):
                transport = self._transport()
                if transport is None:
                    return
                tokens = transport.lease_tokens()
                del transport
                if tokens:
                    db = self._renew(db, tokens)
        finally:
            if db is not None:
                db.close()

    def _renew(self, db: sqlite3.Connection | None, tokens: list[str]) -> sqlite3.Connection | None:
        marks = ",".join("?" * len(tokens))
        sql = f"UPDATE messages SET lease_until = ? WHERE channel IN ({marks})"
        try:
            db = db or _connect(self._path)
            db.execute(sql, (lease_clock() + self._ttl, *tokens))
        except sqlite3.Error:  # retried next round; by default a lease outlasts one miss
            logger.warning("could not renew sqlite broker leases", exc_info=True)
        return db


class QoS(virtual.QoS):
    """Acks and rejects act on the row in the file at once, not on an in-memory copy."""

    def ack(self, delivery_tag: str) -> None:
        self.channel.forget(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self.channel.release(delivery_tag)
        else:
            self.channel.forget(delivery_tag)
        self._quick_ack(delivery_tag)  # only drops it from the unacked set

    def restore_unacked(self) -> list[tuple[BaseException, Any]]:
        """On close or recover: every row this channel still holds becomes visible again."""
        self._flush()
        messages = list(self._delivered.values())
        self._delivered.clear()
        try:
            self.channel.release()
        except Exception as exc:
            return [(exc, message) for message in messages]
        return []


class Channel(virtual.Channel):
    """One SQLite connection per channel, opened by the process that uses it."""

    QoS = QoS
    Message = HeldVirtualMessage  # a compressed body stays so until the worker reads it

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self._path = connection.db_path
        self._ttl = connection.visibility_timeout
        self._pid = 0
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._inherited: list[sqlite3.Connection] = []
        self.lease_token = ""
        self._owner: tuple[str, int, str, str] = ("", 0, "", "")
        with self._session():  # open now, so a bad path fails at connect, not at first publish
            pass

    @contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        if self._pid != os.getpid():
            self._reopen()
        with self._lock:
            assert self._db is not None
            yield self._db

    def _reopen(self) -> None:
        # SQLite forbids using (or closing) a connection across fork, and a parent thread may
        # have held the lock when we forked: keep the old ones unused, start afresh.
        if self._db is not None:
            self._inherited.append(self._db)
        self._lock = threading.RLock()
        self.lease_token = str(uuid.uuid4())  # the parent's leases stay the parent's
        pid = os.getpid()
        self._owner = (_namespace(), pid, _proc_start(pid) or "", self.lease_token)
        db = _connect(self._path)
        try:
            _init_schema(db, self._ttl)
        except BaseException:
            db.close()
            raise
        self._db, self._pid = db, pid

    def close(self) -> None:
        super().close()  # restores unacked rows through QoS.restore_unacked first
        if self._db is not None and self._pid == os.getpid():
            with self._lock:
                self._db.close()
                self._db, self._pid = None, 0

    # -- kombu's virtual channel interface -------------------------------------------------
    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        with self._session() as db:
            db.execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (queue,))

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        with self._session() as db:
            found = db.execute("SELECT 1 FROM queues WHERE name = ?", (queue,)).fetchone()
        return found is not None

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        # A fresh tag per row: a topic exchange hands one dict to every matching queue, and
        # ack/reject find the row by its tag.
        tag = str(uuid.uuid4())
        payload = dumps({**message, "properties": {**message["properties"], "delivery_tag": tag}})
        priority = self._get_message_priority(message)
        with self._session() as db:
            db.execute(
                "INSERT INTO messages (queue, priority, tag, payload) VALUES (?, ?, ?, ?)",
                (queue, priority, tag, payload),
            )

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        with self._session() as db:
            self._reclaim_dead_owners(db)
            claimed = self._claim(db, queue)
        if claimed is None:
            raise Empty()
        self.connection.ensure_renewer()
        payload, deliveries = claimed
        message: dict[str, Any] = loads(payload)
        if deliveries > 1:
            message["properties"].setdefault("delivery_info", {})["redelivered"] = True
        return message

    def _size(self, queue: str) -> int:
        with self._session() as db:
            sql = f"SELECT COUNT(*) FROM messages WHERE queue = ? AND {_READY}"
            count: int = db.execute(sql, (queue, lease_clock())).fetchone()[0]
        return count

    def _purge(self, queue: str) -> int:
        # Like AMQP: only ready messages go; leased ones still belong to their consumers.
        with self._session() as db:
            sql = f"DELETE FROM messages WHERE queue = ? AND {_READY}"
            return db.execute(sql, (queue, lease_clock())).rowcount

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        with self._session() as db, _immediate(db):
            db.execute("DELETE FROM messages WHERE queue = ?", (queue,))
            db.execute("DELETE FROM queues WHERE name = ?", (queue,))
            db.execute("DELETE FROM bindings WHERE queue = ?", (queue,))

    # -- leases ---------------------------------------------------------------------------
    def _claim(self, db: sqlite3.Connection, queue: str) -> tuple[str, int] | None:
        # An unlocked look first, so idle pollers do not queue up for the write lock.
        sql = f"SELECT 1 FROM messages WHERE queue = ? AND {_READY} LIMIT 1"
        if db.execute(sql, (queue, lease_clock())).fetchone() is None:
            return None
        with _immediate(db):
            now = lease_clock()  # after the lock: we may have waited for it
            row = db.execute(
                f"SELECT id, payload, deliveries FROM messages WHERE queue = ? AND {_READY}"
                " ORDER BY priority DESC, id LIMIT 1",
                (queue, now),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE messages SET lease_until = ?, owner_ns = ?, owner_pid = ?,"
                " owner_start = ?, channel = ?, deliveries = deliveries + 1 WHERE id = ?",
                (now + self._ttl, *self._owner, row[0]),
            )
        return row[1], row[2] + 1

    def _reclaim_dead_owners(self, db: sqlite3.Connection) -> None:
        """Free the rows of owners that died (SIGKILL, OOM) without waiting for expiry.

        Only owners in our own PID namespace can be judged; others just expire.
        """
        ns = _namespace()
        owners = db.execute(
            "SELECT DISTINCT owner_pid, owner_start FROM messages"
            " WHERE owner_ns = ? AND owner_pid IS NOT NULL",
            (ns,),
        ).fetchall()
        dead = [(ns, pid, start) for pid, start in owners if not _owner_alive(pid, start)]
        if dead:
            sql = f"UPDATE messages SET {_RELEASE} WHERE owner_ns = ? AND owner_pid = ?"
            with _immediate(db):
                db.executemany(f"{sql} AND owner_start = ?", dead)

    def forget(self, delivery_tag: str) -> None:
        """Delete a row for good (ack, reject without requeue, no_ack delivery)."""
        with self._session() as db:
            db.execute("DELETE FROM messages WHERE tag = ?", (delivery_tag,))

    def release(self, delivery_tag: str | None = None) -> None:
        """Make one (or every) row this channel holds visible again, in its old place."""
        sql = f"UPDATE messages SET {_RELEASE} WHERE channel = ?"
        args: tuple[str, ...] = (self.lease_token,)
        if delivery_tag is not None:
            sql, args = f"{sql} AND tag = ?", (*args, delivery_tag)
        with self._session() as db:
            db.execute(sql, args)

    # -- no_ack: at-most-once, so the row goes as soon as it is handed out ----------------
    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self.forget(message.delivery_tag)
        return message

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Callable[[Any], Any], consumer_tag: str, **kw: Any
    ) -> Any:
        if no_ack:
            inner = callback

            def callback(message: Any) -> Any:
                self.forget(message.delivery_tag)
                return inner(message)

        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kw)

    # -- routing: bindings live in the file --------------------------------------------------
    # kombu keeps bindings in process memory, so a producer that never declared the consumer's
    # queue would route its message nowhere and drop it. Storing them lets any process route.
    def exchange_declare(
        self, exchange: str | None = None, type: str = "direct", *args: Any, **kw: Any
    ) -> None:
        # kombu's virtual fanout without shared state silently delivers to nobody; an error
        # beats a broadcast that quietly reaches no worker.
        if type == "fanout":
            raise ConfigurationError(
                f"the sqlite transport does not support fanout exchanges ({exchange!r});"
                " use a direct or topic exchange"
            )
        super().exchange_declare(exchange, type, *args, **kw)

    def queue_bind(
        self, queue: str, exchange: str = "", routing_key: str = "", *a: Any, **kw: Any
    ) -> None:
        super().queue_bind(queue, exchange, routing_key, *a, **kw)
        exchange = exchange or "amq.direct"
        meta = self.typeof(exchange).prepare_bind(queue, exchange, routing_key, None)
        with self._session() as db:
            db.execute("INSERT OR IGNORE INTO bindings VALUES (?, ?, ?, ?)", (exchange, *meta))

    def queue_unbind(
        self, queue: str, exchange: str = "", routing_key: str = "", *a: Any, **kw: Any
    ) -> None:
        super().queue_unbind(queue, exchange, routing_key, *a, **kw)
        with self._session() as db:
            db.execute(
                "DELETE FROM bindings WHERE exchange = ? AND routing_key = ? AND queue = ?",
                (exchange, routing_key, queue),
            )

    def get_table(self, exchange: str) -> list[tuple[str, str | None, str]]:
        with self._session() as db:
            sql = "SELECT routing_key, pattern, queue FROM bindings WHERE exchange = ?"
            return [(rkey, pattern, queue) for rkey, pattern, queue in db.execute(sql, (exchange,))]

    def queue_delete(
        self, queue: str, if_unused: bool = False, if_empty: bool = False, **kw: Any
    ) -> None:
        # kombu's version only deletes through bindings known to this process.
        if if_empty and self._size(queue):
            return
        self.state.queue_bindings_delete(queue)
        self._delete(queue)


class Transport(virtual.Transport):
    """kombu transport for ``sqlite:////absolute/path.db`` (pass the class as ``transport=``)."""

    Channel = Channel
    # No host to fill in: without this kombu warns "No hostname was supplied" on connect.
    default_connection_params: dict[str, Any] = {}
    driver_type = driver_name = "sqlite"
    polling_interval = 0.05
    # No fanout (see Channel.exchange_declare) and no async I/O: there is no socket to watch.
    implements = virtual.Transport.implements.extend(
        asynchronous=False, exchange_type=frozenset({"direct", "topic"}), heartbeats=False
    )
    # A locked or unreadable file is worth reconnecting over, like a dropped socket.
    connection_errors = (*virtual.Transport.connection_errors, sqlite3.OperationalError)

    def __init__(self, client: Any, **kwargs: Any) -> None:
        options = client.transport_options
        # 60 s is only the worst-case recovery time, not a limit on task length: a live owner
        # renews every lease_renew_interval and a dead one on this machine is reclaimed at once.
        # Expiry matters only for owners we cannot judge (another PID namespace or boot, a
        # frozen process). It must exceed the renewal interval plus one renewal's wait for the
        # lock (BUSY_TIMEOUT): 20 s + 30 s < 60 s.
        self.visibility_timeout = float(options.get("visibility_timeout", 60.0))
        renew = options.get("lease_renew_interval", self.visibility_timeout / 3)
        self.lease_renew_interval = float(renew)
        if not 0 < self.lease_renew_interval < self.visibility_timeout:
            raise ValueError("need 0 < lease_renew_interval < visibility_timeout")
        self.db_path = _db_path(client.hostname, client.virtual_host)
        self._renewer: _Renewer | None = None
        super().__init__(client, **kwargs)

    def driver_version(self) -> str:
        return sqlite3.sqlite_version

    def ensure_renewer(self) -> None:
        renewer = self._renewer
        if renewer is None or renewer.pid != os.getpid() or not renewer.is_alive():
            self._renewer = _Renewer(self)
            self._renewer.start()

    def lease_tokens(self) -> list[str]:
        pid = os.getpid()  # a forked child must not renew its parent's leases
        return [c.lease_token for c in list(self.channels) if not c.closed and c._pid == pid]

    def close_connection(self, connection: Any) -> None:
        super().close_connection(connection)
        if self._renewer is not None:
            self._renewer.stopped.set()
            self._renewer = None
