"""Redis result backend: Celery's keys and meta documents; waits use pub/sub, not polling."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis

from .. import exceptions, states
from ..exceptions import BackendError, ConfigurationError, ResultNotStored
from ..redis_sentinel import close_client, redis_client
from ..url import mask_url, scrub
from .base import KEY_PREFIX, Backend
from .codec import ResultCodec
from .redis_chord import RedisChords
from .redis_waiter import Waiter, connect_within, within
from .retry import RetryPolicy, retrying

# Celery's rule that a stored success is never overwritten, and the write itself, in one
# round trip and without a gap between the check and the write, whatever the result
# serializer. The script reads JSON (cjson) and msgpack (cmsgpack) itself. A pickle is
# opaque to Lua: the script hands the stored value back instead of writing, Python reads
# its status, and, unless it is a success, calls again with the value's SHA1 (ARGV[3]);
# the script writes only if the key still holds that very value, so the check and the
# write stay atomic (compare-and-set). A value neither side can read is overwritten, as
# before. So a pickle store costs one round trip when nothing is stored yet (a task's
# first state), two when a state is (STARTED, then SUCCESS); WATCH/MULTI would cost two
# or three every time, and a state kept in a key of its own beside the value would not
# see a success that a Celery worker stored.
STORE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if not ok then
    local b1, b2 = string.byte(current, 1, 2)
    if not (b1 == 128 and b2 and b2 >= 2 and b2 <= 5) then
      ok, meta = pcall(cmsgpack.unpack, current)
    end
  end
  if ok and type(meta) == 'table' then
    if meta['status'] == 'SUCCESS' then return 0 end
  elseif redis.sha1hex(current) ~= (ARGV[3] or '') then
    return current
  end
end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


# Failures that mean "not now": a lost connection, a server out of memory, still loading,
# read-only during a failover, a cluster or replica set that is changing. redis-py gives
# some replies classes of their own (and drops their code); the others keep the code.
WAIT_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MasterDownError,
    redis.exceptions.MaxClientsReachedError,
)
CHECKS = 100  # compare-and-set attempts before a store gives up (others kept writing)
Store = tuple[str, bytes | str, str]  # key, value, expiry in seconds ('' for none)

WAIT_CODES = frozenset({"OOM", "MISCONF", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN"})


class RedisBackend(RedisChords, Backend):
    """Each state write is ``SET`` (with expiry) + ``PUBLISH`` on a channel named like the key."""

    def __init__(
        self,
        url: str,
        expires: float | None = 86400.0,
        extended: bool = False,
        options: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        codec: ResultCodec | None = None,
    ):
        super().__init__(expires, extended, retry, codec)
        self.url = url
        self.chord_expires = expires
        opts = {
            "socket_connect_timeout": 4.0,
            "socket_timeout": 30.0,
            "health_check_interval": 30,
            **dict(options or {}),
        }
        prefix = opts.pop("global_keyprefix", None)
        if prefix:
            # Celery's rule, so both sides find the same keys: a separator unless it has one.
            self.key_prefix = prefix + ("" if prefix[-1] in ":_-." else "_") + KEY_PREFIX
        try:
            self.client = redis_client(url, opts, "result_backend_transport_options")
            # redis-py checks connection keywords only when it connects: check them now.
            self.client.connection_pool.connection_class(
                **self.client.connection_pool.connection_kwargs
            )
        except TypeError as exc:
            raise ConfigurationError(
                f"Invalid result_backend_transport_options for Redis: {exc}"
            ) from None
        self._store = self.client.register_script(STORE_SCRIPT)
        # Per thread: a client for reads and stores (_thread_client), and a waiter whose
        # connection is kept between waits (a new connection per get() cost more than the
        # wait itself).
        self._local = threading.local()

    def _thread_client(self) -> Any:
        """This thread's client, on a connection of its own from the shared pool.

        A pooled client takes a connection from the pool and checks it for unread data on
        every command; keeping one per thread skips both. A forked child makes its own.
        Its store in flight, if any, is settled first: a reply is read in order.
        """
        self._settle()
        local = self._local
        client = getattr(local, "client", None)
        if client is None or local.client_pid != os.getpid():
            client = local.client = redis.Redis(
                connection_pool=self.client.connection_pool, single_connection_client=True
            )
            local.client_pid = os.getpid()
        return client

    @contextlib.contextmanager
    def stores_in_flight(self) -> Iterator[dict[str, BackendError]]:
        # One store in flight at a time: the next command on the connection reads its
        # reply first, by which time the reply is there (a task ran in between) and the
        # thread need not sleep for it, as it did once per store (optimisation 21).
        failures: dict[str, BackendError] = {}
        self._local.failures = failures
        try:
            yield failures
        finally:
            try:
                self._settle()
            finally:
                self._local.failures = None

    def _settle(self) -> None:
        """Read the reply to this thread's store in flight, if any."""
        local = self._local
        store = getattr(local, "pending", None)
        if store is None:
            return
        local.pending = None
        if local.client_pid != os.getpid():
            return  # a parent process's store, on its connection: the parent reads it
        try:
            reply = local.client.connection.read_response()
        except redis.RedisError as exc:
            # The server lost the script (a restart), the connection dropped before the
            # reply, or the server could not take the write for now: all are stored again.
            if isinstance(exc, redis.exceptions.NoScriptError) or self.transient(exc):
                self._store_again(local.client, store)
            else:
                self._failed(store[0], self._error(exc), exc)
        else:
            if isinstance(reply, bytes):  # a value the script could not read: see STORE_SCRIPT
                self._store_again(local.client, store, reply)

    def _store_again(self, client: Any, store: Store, current: bytes | None = None) -> None:
        # The client's own path loads the script and reconnects; the same value twice
        # changes nothing. A failure that may pass is tried again per the retry policy.
        key = store[0]
        task_id = key[len(self.key_prefix) :]
        try:
            retrying(
                self.store_policy(),
                lambda: self._store_checked(client, store, current),
                self.transient,
                f"store the result of task {task_id}",
            )
        except ResultNotStored as exc:
            self._failed(key, ResultNotStored(f"Result backend {self._where()} failed: {exc}"), exc)
        except redis.RedisError as exc:
            self._failed(key, self._error(exc), exc)

    def _store_checked(self, client: Any, store: Store, current: bytes | None) -> None:
        """Run the store script until it stored, or Python found the stored state a success.

        ``current`` is a stored value the script handed back, unread (a pickle); it is
        read here, and the script called again with its digest (compare-and-set).
        """
        key, value, expires = store
        for _ in range(CHECKS):
            args = [value, expires]
            if current is not None:
                if self.codec.status(current) == states.SUCCESS:
                    return
                args.append(hashlib.sha1(current).hexdigest())
            reply = self._store(keys=[key], args=args, client=client)
            if not isinstance(reply, bytes):
                return
            current = reply
        raise BackendError(f"The result at {key} kept changing while it was stored")

    def transient(self, exc: BaseException) -> bool:
        if isinstance(exc, WAIT_ERRORS):
            return True
        words = str(exc).split(maxsplit=1)
        return isinstance(exc, redis.ResponseError) and bool(words) and words[0] in WAIT_CODES

    def _failed(self, key: str, error: BackendError, cause: BaseException) -> None:
        """A store failed: raised, or, within ``stores_in_flight``, recorded for its end."""
        failures = getattr(self._local, "failures", None)
        if failures is None:
            if error is cause:
                raise error
            raise error from cause
        failures[key[len(self.key_prefix) :]] = error

    def _error(self, exc: redis.RedisError) -> BackendError:
        return BackendError(f"Result backend {self._where()} failed: {scrub(str(exc))}")

    def _get(self, key: str) -> bytes | None:
        try:
            try:
                value: Any = self._thread_client().get(key)
            except (redis.ConnectionError, redis.TimeoutError):
                # The kept connection died since its last use (a server restart, an idle
                # timeout): once more, on a new one.
                self._drop_client()
                value = self._thread_client().get(key)
        except redis.RedisError as exc:
            raise self._error(exc) from exc
        return value  # type: ignore[no-any-return]

    def get_many(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        # One MGET for the lot (a group's join reads its members in batches this way).
        keys = [self.key_for(task_id) for task_id in task_ids]
        if not keys:
            return []
        try:
            values: list[Any] = self._thread_client().mget(keys)
        except redis.RedisError as exc:
            raise self._error(exc) from exc
        return [self.decode_meta(t, v) for t, v in zip(task_ids, values, strict=True)]

    def _drop_client(self) -> None:
        # Only after a read: _thread_client() settled any store in flight before it.
        client, self._local.client = getattr(self._local, "client", None), None
        if client is not None and self._local.client_pid == os.getpid():
            with contextlib.suppress(Exception):
                client.close()

    def _set(self, key: str, value: bytes | str, state: str) -> None:
        # The script keeps a stored success itself, in the same round trip as the write.
        expires = str(max(1, int(self.expires))) if self.expires else ""
        store: Store = (key, value, expires)
        client = self._thread_client()
        try:
            client.connection.send_command("EVALSHA", self._store.sha, 1, *store)
        except (redis.ConnectionError, redis.TimeoutError):
            # Not sent: the connection had dropped (a restart, an idle timeout).
            self._store_again(client, store)
            return
        self._local.pending = store
        if getattr(self._local, "failures", None) is None:
            self._settle()  # outside stores_in_flight(), its reply is read now

    # No read before the write: the script checks for a stored success atomically.
    _set_unless_succeeded = _set

    def _delete(self, key: str) -> None:
        try:
            # On the connection that stores: a store in flight cannot land after it.
            self._thread_client().delete(key)
        except redis.RedisError as exc:
            raise self._error(exc) from exc

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> Mapping[str, Any]:
        # Every read is bounded by the deadline: ``timeout=`` is a promise about wall time,
        # even when the server stopped answering (a partition) and a read would otherwise
        # block until the socket's own timeout.
        key = self.key_for(task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # A first read pays off when results are in by the time they are asked for (a
            # batch sent, then collected), a round trip wasted when they are not
            # (delay().get() one at a time): each thread starts the way its last wait went.
            if not getattr(self._local, "subscribe_first", False):
                meta = self.decode_meta(task_id, self._read(key, deadline))
                if meta["status"] in states.READY_STATES:
                    return meta
            return self._wait_subscribed(task_id, key, deadline)
        except exceptions.TimeoutError:
            raise
        except redis.RedisError as exc:
            self._drop_waiter()
            if deadline is not None and time.monotonic() >= deadline:
                raise exceptions.TimeoutError("The operation timed out.") from exc
            raise self._error(exc) from exc
        except BaseException:
            self._drop_waiter()  # interrupted mid-read: its replies cannot be trusted
            raise

    def _read(self, key: str, deadline: float | None) -> bytes | None:
        """GET on this thread's plain connection, within the deadline."""
        if deadline is None:
            return self._get(key)
        try:
            return self._get_within(key, deadline)
        except redis.ConnectionError:
            # The kept connection died since its last use: once more, connected anew
            # (within the deadline too).
            self._thread_client().connection.disconnect()
            return self._get_within(key, deadline)

    def _get_within(self, key: str, deadline: float) -> bytes | None:
        connection = self._thread_client().connection
        connect_within(connection, deadline)
        connection.send_command("GET", key)
        value: Any = connection.read_response(**within(deadline))
        return value  # type: ignore[no-any-return]

    def _wait_subscribed(self, task_id: str, key: str, deadline: float | None) -> dict[str, Any]:
        waiter, value = self._subscribe(key, deadline)
        meta = self.decode_meta(task_id, value)
        self._local.subscribe_first = meta["status"] not in states.READY_STATES
        while meta["status"] not in states.READY_STATES:
            try:
                value = waiter.next_value(key, deadline)
            except exceptions.TimeoutError:
                self._leave(waiter, key)  # the connection stays good for the next wait
                raise
            except (redis.ConnectionError, redis.TimeoutError):
                # Lost mid-wait, with its subscription: subscribing again also reads a
                # result stored meanwhile.
                self._drop_waiter()
                waiter, value = self._subscribe(key, deadline)
            if value is not None:
                meta = self.decode_meta(task_id, value)
        self._leave(waiter, key)
        return meta

    def _subscribe(self, key: str, deadline: float | None) -> tuple[Waiter, bytes | None]:
        """Subscribe on this thread's waiter: the key's value, if stored, and the waiter."""
        try:
            waiter = self._waiter()
            return waiter, waiter.subscribe(key, deadline)
        except (redis.ConnectionError, redis.TimeoutError):
            # The kept connection had died (a restart, an idle timeout), or Redis cut it:
            # a reply to a subscribed connection over its output limit for subscribers (32
            # MB by default; a big result, or its announcement) ends the connection. So,
            # on a new one: subscribe only, then read the value on the plain connection,
            # which has no such limit. Subscribed first, no result stored between is missed.
            self._drop_waiter()
            waiter = self._waiter()
            waiter.subscribe(key, deadline, read=False)
            return waiter, self._read(key, deadline)

    def _leave(self, waiter: Waiter, key: str) -> None:
        try:
            waiter.unsubscribe(key)
        except redis.RedisError:
            self._drop_waiter()  # the wait is over either way; the next one starts anew

    def _waiter(self) -> Waiter:
        local = self._local
        waiter: Waiter | None = getattr(local, "waiter", None)
        if waiter is None or local.pid != os.getpid():
            waiter = local.waiter = Waiter(self.client.connection_pool)
            local.pid = os.getpid()
        return waiter

    def _drop_waiter(self) -> None:
        waiter, self._local.waiter = getattr(self._local, "waiter", None), None
        if waiter is not None and self._local.pid == os.getpid():
            with contextlib.suppress(Exception):  # dropped because it failed already
                waiter.close()

    def _where(self) -> str:
        return mask_url(self.url)

    def close(self) -> None:
        self._drop_waiter()
        self._drop_client()
        close_client(self.client)
