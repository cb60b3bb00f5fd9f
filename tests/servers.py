"""Real Redis and RabbitMQ servers on private loopback ports, for tests.

Each server runs as a child process in its own session (process group), is
stopped by PID / process group only (never by name), and keeps its data in a
private temporary directory so that ``restart()`` comes back with the same data
on the same port::

    from tests.servers import RabbitServer, RedisServer  # root put on sys.path by conftest

    with RedisServer() as redis:
        use(redis.url)            # redis://127.0.0.1:PORT/0
        redis.restart()           # same port, data kept (SHUTDOWN SAVE)
        redis.kill()              # SIGKILL: a crash, unsaved data is lost
        redis.start()             # back again on the same port

    with RabbitServer() as rabbit:
        use(rabbit.url)           # amqp://guest:guest@127.0.0.1:PORT//

A server that does not come up in time raises :class:`ServerError` with the
tail of its log. Set ``TASKQ_KEEP_SERVER_DIRS=1`` to keep the data and log
directories after the servers stop.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

__all__ = ["RabbitServer", "RedisServer", "SentinelServer", "ServerError", "free_port"]

LOG_TAIL_LINES = 60


class ServerError(RuntimeError):
    """A test server could not be started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all sockets held until all are picked)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def find_binary(name: str, *candidates: str) -> str:
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return found
    raise ServerError(
        f"{name} not found (looked at {', '.join(candidates) or '-'} and PATH); "
        "install it with `make system-deps` (Debian packages redis-server, rabbitmq-server)"
    )


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines, preceded by the first error lines if the tail lacks them."""
    try:
        all_lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    tail = all_lines[-lines:]
    head = all_lines[: -lines or None]
    errors = [line for line in head if "error" in line.lower()][:20]
    if errors:
        return "\n".join(["(first error lines)", *errors, "(last lines)", *tail])
    return "\n".join(tail)


def _connect(port: int, timeout: float) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


class ProcInfo(NamedTuple):
    ppid: int
    pgrp: int
    state: str
    start: int  # start time in clock ticks after boot: tells a reused PID apart


def proc_table() -> dict[int, ProcInfo]:
    """Every process from /proc (empty where there is no /proc)."""
    table: dict[int, ProcInfo] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp session ... starttime(22nd)": comm may hold
            # spaces and parentheses, so split after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = ProcInfo(
                int(fields[1]), int(fields[2]), fields[0], int(fields[19])
            )
        except (OSError, IndexError, ValueError):
            continue
    return table


def alive(info: ProcInfo | None) -> bool:
    return info is not None and info.state not in ("Z", "X")


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when the test process dies.

    Covers what atexit cannot: a test run killed by SIGKILL or an outside timeout.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded before fork
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


_PREEXEC = die_with_parent() if sys.platform.startswith("linux") else None


class _Proc:
    """One child process started in a new session; stopped by PID / process group.

    Some children leave the group (Erlang's ``erl_child_setup`` and
    ``inet_gethost`` call setsid), so before signalling we also note every
    descendant by PID and start time, and make sure each of those is gone too.
    """

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str], cwd: Path):
        self.log_path = log_path
        with open(log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # pgid == pid
                preexec_fn=_PREEXEC,
            )
        self.pid = self.popen.pid
        self._known: dict[int, int] = {}  # pid -> start time, of everything seen in our tree

    def running(self) -> bool:
        return self.popen.poll() is None

    def _snapshot(self) -> dict[int, ProcInfo]:
        """Note the leader's group and all its descendants; return the table."""
        table = proc_table()
        children: dict[int, list[int]] = {}
        for pid, info in table.items():
            children.setdefault(info.ppid, []).append(pid)
        todo = [self.pid, *(pid for pid, info in table.items() if info.pgrp == self.pid)]
        while todo:
            pid = todo.pop()
            found = table.get(pid)
            if found is None or pid in self._known:
                continue
            self._known[pid] = found.start
            todo.extend(children.get(pid, ()))
        return table

    def _leftovers(self) -> list[int]:
        table = proc_table()
        left = [
            pid
            for pid, start in self._known.items()
            if alive(table.get(pid)) and table[pid].start == start
        ]
        group = [pid for pid, info in table.items() if info.pgrp == self.pid and alive(info)]
        return left + [pid for pid in group if pid not in left]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Send ``sig`` to the leader and wait; then SIGKILL whatever we started is left."""
        self._snapshot()
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
            # helpers outside the group exit by themselves once the VM is gone
            grace = time.monotonic() + 5
            while self._leftovers() and time.monotonic() < grace:
                time.sleep(0.05)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the leader, its group and every descendant seen; wait until all are gone."""
        self._snapshot()
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            for pid in self._leftovers():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(0.1)
            if self.popen.returncode is not None and not self._leftovers():
                return
            if time.monotonic() > deadline:
                raise ServerError(f"processes {self._leftovers()} of {self.pid} survived SIGKILL")
            time.sleep(0.05)


_live: set[_Server] = set()  # started and not closed: stopped at exit if still running
_live_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:  # never leave servers behind, even if a test forgot
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.close()


class _Server:
    name = "server"
    start_timeout = 30.0

    def __init__(self, port: int | None = None, start_timeout: float | None = None):
        self.port = port or free_port()
        if start_timeout is not None:
            self.start_timeout = start_timeout
        self.dir = Path(tempfile.mkdtemp(prefix=f"taskq-{self.name}-{self.port}-"))
        self.log_path = self.dir / f"{self.name}.log"
        self._proc: _Proc | None = None

    # -- public API ---------------------------------------------------------

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    def start(self) -> Self:
        if self.running():
            return self
        if self._proc is not None:  # died on its own: reap what may be left of it
            self.kill()
        with _live_lock:
            _live.add(self)
        began = time.monotonic()
        try:
            self._proc = self._spawn()
            self._wait_ready(began + self.start_timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self._abort()
            raise
        return self

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then make sure nothing we started is left."""
        if self._proc is not None:
            self._proc.stop(signal.SIGTERM, timeout=self._stop_timeout)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL the server (a crash); ``start()`` brings it back on the same port."""
        if self._proc is not None:
            self._proc.kill()
            self._proc = None

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and remove the data directory."""
        try:
            self.stop()
        finally:
            with _live_lock:
                _live.discard(self)
            if not os.environ.get("TASKQ_KEEP_SERVER_DIRS"):
                shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} pid={self.pid}>"

    # -- subclass hooks -----------------------------------------------------

    _stop_timeout = 20.0

    def _spawn(self) -> _Proc:
        raise NotImplementedError

    def _abort(self) -> None:
        """Clean up after a failed start()."""
        self.kill()

    def _probe(self) -> bool:
        """True once the server answers."""
        raise NotImplementedError

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        last_error: Exception | None = None
        while True:
            if not self._proc.running():
                raise ServerError(
                    f"{self.name} (pid {self._proc.pid}) exited with code "
                    f"{self._proc.popen.returncode} while starting on port {self.port}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if self._probe():
                    return
            except (OSError, ValueError) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.name} did not answer on 127.0.0.1:{self.port} within "
                    f"{self.start_timeout:.0f}s (last error: {last_error!r}); "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)


class RedisServer(_Server):
    """``redis-server`` on 127.0.0.1, no persistence unless ``extra_args`` ask for it.

    ``RedisServer(extra_args=["--appendonly", "yes"])`` turns on the AOF.
    """

    name = "redis"
    start_timeout = 15.0

    def __init__(
        self,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float | None = None,
        binary: str | None = None,
    ):
        super().__init__(port, start_timeout)
        self.extra_args = list(extra_args)
        self.binary = binary or find_binary("redis-server", "/usr/bin/redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", "",
            *self.extra_args,
        ]  # fmt: skip

    def _spawn(self) -> _Proc:
        return _Proc(self.command(), self.log_path, dict(os.environ), self.dir)

    def _call(self, *args: str, timeout: float = 2.0) -> bytes:
        """Send one RESP command, return the raw reply (b"" if the server closed)."""
        payload = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            payload += b"$%d\r\n%s\r\n" % (len(data), data)
        with _connect(self.port, timeout) as sock:
            sock.sendall(payload)
            return sock.recv(4096)

    def _probe(self) -> bool:
        return self._call("PING").startswith(b"+PONG")

    def restart(self, save: bool = True) -> Self:
        """Stop and start on the same port; with ``save`` the dataset survives.

        ``SHUTDOWN SAVE`` writes ``dump.rdb`` even when persistence is off, and
        redis loads it again at start. That file stays: a later ``kill()`` and
        ``start()`` come back with this snapshot, as a real redis would.
        """
        if save and self.running():
            with contextlib.suppress(OSError):
                self._call("SHUTDOWN", "SAVE", timeout=self._stop_timeout)
        return super().restart()


# A replica that takes its master's data at once, not after Redis's default 5 s delay.
QUICK_SYNC = ["--repl-diskless-sync-delay", "0"]


def replica_pair(stack: contextlib.ExitStack) -> tuple[RedisServer, RedisServer]:
    """A Redis master and its replica, started now and closed with ``stack``."""
    master = stack.enter_context(RedisServer(extra_args=QUICK_SYNC))
    follows = ["--replicaof", "127.0.0.1", str(master.port), *QUICK_SYNC]
    return master, stack.enter_context(RedisServer(extra_args=follows))


class SentinelServer(RedisServer):
    """A Redis Sentinel (``redis-server <conf> --sentinel``, the same binary) on 127.0.0.1,
    watching the master on ``master_port`` as ``master_name``.

    It writes its state into the config file, which lives in its own directory. Quick
    settings, for tests: a master that does not answer for ``down_after_ms`` is down, and
    a failover that stalls is tried again after ``failover_timeout_ms``::

        with RedisServer() as master, SentinelServer(master.port) as sentinel:
            use(sentinel.url)             # sentinel://127.0.0.1:PORT
            sentinel.master_address()     # ("127.0.0.1", master.port), until a failover
    """

    name = "sentinel"

    def __init__(
        self,
        master_port: int,
        master_name: str = "mymaster",
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        port: int | None = None,
        binary: str | None = None,
    ):
        super().__init__(port, binary=binary)
        self.master_name = master_name
        self.config = (
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {master_name} 1\n"
        )

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        conf = self.dir / "sentinel.conf"
        if not conf.exists():  # kept across restarts: the sentinel's state is in it
            conf.write_text(self.config)
        return [self.binary, str(conf), "--sentinel"]

    def master_address(self) -> tuple[str, int] | None:
        """Where this sentinel tells clients the master is (None if it does not answer).

        From ``SENTINEL MASTER``, as redis-py asks: during a failover it names the new
        master only once the switch is done (``+switch-master``), a little after
        ``get-master-addr-by-name`` does.
        """
        try:
            state = self.master_state()
        except OSError:
            return None
        except Exception as exc:  # redis-py's errors, which need not be imported here
            if type(exc).__module__.startswith("redis"):
                return None
            raise
        return str(state["ip"]), int(state["port"])

    def master_state(self) -> dict[str, Any]:
        """``SENTINEL MASTER <name>``: the sentinel's view of the master (redis-py parses it:
        ``num-slaves``, ``num-other-sentinels``, ``is_sdown``...)."""
        with self.client() as client:
            state: dict[str, Any] = client.sentinel_master(self.master_name)
        return state

    def promotable_replicas(self) -> int:
        """How many replicas this sentinel would promote now.

        Knowing of a replica (``num-slaves``, read from the master's INFO) is not enough:
        ``SENTINEL FAILOVER`` answers NOGOODSLAVE until the sentinel has its own link to
        the replica, a recent INFO from it and a recent ping reply. Its INFO must also show
        the link to the master up, so the replica holds the master's data.
        """
        with self.client() as client:
            replicas: list[dict[str, Any]] = client.sentinel_slaves(self.master_name)
        return sum(
            1
            for r in replicas
            if r["is_slave"]
            and not (r["is_sdown"] or r["is_odown"] or r["is_disconnected"])
            and r["master-link-status"] == "ok"
            and r["info-refresh"] < 30_000  # the sentinel's validity bound for an INFO
            and r["last-ok-ping-reply"] < 5_000
            and r["slave-priority"] != 0
        )

    def client(self) -> Any:
        """A redis-py client on this sentinel (redis-py imported only here)."""
        import redis

        return redis.Redis("127.0.0.1", self.port, socket_timeout=2.0, socket_connect_timeout=2.0)


class RabbitServer(_Server):
    """Debian's RabbitMQ, in the foreground, on private loopback ports.

    Runs ``/usr/lib/rabbitmq/bin/rabbitmq-server`` directly as the current user
    (root or not; Debian's ``/usr/sbin`` wrapper would ``su`` to the
    ``rabbitmq`` user), with its own epmd on a private port, its own node name,
    config, plugins file, Erlang cookie (``HOME``) and data under ``self.dir``.
    """

    name = "rabbitmq"
    start_timeout = 60.0
    _stop_timeout = 30.0

    def __init__(
        self,
        port: int | None = None,
        start_timeout: float | None = None,
        config: str = "",
    ):
        super().__init__(port, start_timeout)
        self.dist_port, self.epmd_port = free_ports(2)
        while self.port in (self.dist_port, self.epmd_port):
            self.dist_port, self.epmd_port = free_ports(2)
        self.nodename = f"taskq-test-{self.port}@localhost"
        self.config = config  # extra rabbitmq.conf lines
        self.server_script = find_binary("rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server")
        if self.server_script == "/usr/sbin/rabbitmq-server":
            self.server_script = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        self.epmd_binary = find_binary("epmd", "/usr/bin/epmd")
        self.epmd_log_path = self.dir / "epmd.log"
        self._epmd: _Proc | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def env(self) -> dict[str, str]:
        d = self.dir
        (d / "home").mkdir(exist_ok=True)
        (d / "log").mkdir(exist_ok=True)
        (d / "mnesia").mkdir(exist_ok=True)
        (d / "rabbitmq-env.conf").touch()
        (d / "enabled_plugins").write_text("[].\n")
        (d / "rabbitmq.conf").write_text(
            "loopback_users.guest = true\n"
            "log.console = true\n"
            "log.console.level = info\n"
            "log.console.use_colors = off\n"
            "disk_free_limit.absolute = 10MB\n"
            "log.file = false\n" + self.config + "\n"
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not (k.startswith(("RABBITMQ_", "ERL_")) or k == "NOTIFY_SOCKET")
        }
        env.update(
            HOME=str(d / "home"),  # the Erlang cookie goes here
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(d / "rabbitmq.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_CRASH_DUMP=str(d / "log" / "erl_crash.dump"),
        )
        return env

    def _start_epmd(self, env: dict[str, str]) -> None:
        if self._epmd is not None and self._epmd.running():
            return
        # Our own epmd in the foreground (no -daemon): a child we can stop by PID,
        # on a private port, so we never share or clash with another epmd.
        self._epmd = _Proc(
            [self.epmd_binary, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            self.epmd_log_path,
            env,
            self.dir,
        )
        deadline = time.monotonic() + 10
        while True:
            if not self._epmd.running():
                raise ServerError(
                    f"epmd exited while starting on port {self.epmd_port}:\n"
                    + tail(self.epmd_log_path)
                )
            try:
                _connect(self.epmd_port, 1).close()
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    self._stop_epmd()
                    raise ServerError(
                        f"epmd did not listen on 127.0.0.1:{self.epmd_port}: {exc!r}\n"
                        + tail(self.epmd_log_path)
                    ) from exc
            time.sleep(0.05)

    def _stop_epmd(self) -> None:
        if self._epmd is not None:
            self._epmd.stop(signal.SIGTERM, timeout=5)
            self._epmd = None

    def _spawn(self) -> _Proc:
        env = self.env()
        self._start_epmd(env)
        return _Proc([self.server_script], self.log_path, env, self.dir)

    def _probe(self) -> bool:
        # AMQP 0-9-1 protocol header; a live broker answers with a
        # Connection.Start method frame (type 1, channel 0, class 10, method 10).
        with _connect(self.port, 2) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            reply = sock.recv(11)
        return reply[:3] == b"\x01\x00\x00" and reply[7:11] == b"\x00\x0a\x00\x0a"

    def _wait_ready(self, deadline: float) -> None:
        super()._wait_ready(deadline)
        # The listener is up; check that a real client can log in as guest.
        from kombu.connection import Connection

        errors: list[Any] = []
        while True:
            try:
                with Connection(self.url, connect_timeout=5) as conn:
                    conn.connect()
                return
            except Exception as exc:
                errors.append(exc)
                if time.monotonic() > deadline or not self.running():
                    raise ServerError(
                        f"rabbitmq accepts AMQP on port {self.port} but login failed: "
                        f"{exc!r}; log {self.log_path}:\n{self.log_tail()}"
                    ) from exc
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the broker's VM (a crash); epmd stays, as a system's would."""
        super().kill()

    def _abort(self) -> None:
        try:
            self.kill()
        finally:
            self._stop_epmd()

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self._stop_epmd()

    def restart(self) -> Self:
        # Keep epmd across the restart; the node comes back with its mnesia data.
        super().stop()
        return self.start()


S = TypeVar("S", bound=_Server)


def serve(factory: Callable[[], S], what: str) -> Iterator[S]:
    """A generator for fixtures: start a server, yield it, close it. FAIL (never skip) if
    it cannot start, with the reason."""
    import pytest  # here: the benchmarks use this module without pytest

    server: S | None = None
    error = ""
    try:
        server = factory()
        server.start()
    except Exception as exc:
        error = f"cannot start {what}: {exc}"
        if server is not None:
            server.close()
    if error or server is None:
        pytest.fail(error, pytrace=False)
    try:
        yield server
    finally:
        server.close()
