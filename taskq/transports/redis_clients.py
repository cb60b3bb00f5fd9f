"""The connections a taskq Redis channel keeps beside kombu's, and the clients on them.

kombu's channel reads its consuming connection's replies and takes a pooled client for
everything else. taskq's channel adds: one connection of its own per process for the hot
paths (publish, take, acks: ``_direct``), one cached client per pool for the rest
(``_sync_client``), and the watchers' connections (``redis_watch``), which stay outside the
pool and are stopped by their server-side id.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from kombu.exceptions import VersionMismatch
from kombu.transport import redis as kombu_redis

from ..redis_direct import DEFAULT_SPIN, ReplyWait

MIN_SERVER = (6, 2)  # BLMOVE, RPOP with a count


class ClientChannel(kombu_redis.Channel):
    _cached_client: Any = None  # class default: kombu's __init__ already makes clients
    # (pid, client, lock, the wait for its replies)
    _direct_client: tuple[int, Any, threading.Lock, ReplyWait] | None = None
    reply_spin = DEFAULT_SPIN  # seconds a publish polls for its reply before it sleeps
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "reply_spin")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        try:
            spin = float(self.reply_spin)
        except (TypeError, ValueError):
            spin = -1.0
        if not spin >= 0:  # also refuses NaN
            raise ValueError("need reply_spin >= 0 (seconds; 0 turns the spin off)")
        self.reply_spin = spin
        self._server_checked = False

    def _check_server(self) -> None:
        if self._server_checked:
            return
        version = str(self._sync_client().info("server").get("redis_version", "0"))
        found = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
        if found < MIN_SERVER:
            raise VersionMismatch(
                f"taskq's Redis transport needs Redis 6.2 or newer (it takes messages with "
                f"BLMOVE and RPOP with a count); this server is {version}. Upgrade Redis."
            )
        self._server_checked = True

    def _direct(self) -> tuple[Any, threading.Lock, ReplyWait]:
        """This process's client on one connection of its own, the lock to use it, and
        the wait for its replies.

        A pooled client takes a connection from the pool and checks it for unread data (a
        poll) on every command, a fifth of an LPUSH's time. The connection still connects,
        checks its health and drops itself on an error. The lock is made with the client,
        so a child forked mid-command never inherits it held.
        """
        pid = os.getpid()
        if self._direct_client is None or self._direct_client[0] != pid:
            # A forked child leaves its parent's connection alone and opens its own.
            options: dict[str, Any] = {
                "connection_pool": self.pool,
                "single_connection_client": True,
            }
            provider = self.pool.connection_kwargs.get("credential_provider")
            if provider is not None:
                options["credential_provider"] = provider
            wait = ReplyWait(self.reply_spin)
            self._direct_client = (pid, self.Client(**options), threading.Lock(), wait)
        return self._direct_client[1:]

    def _sync_client(self) -> Any:
        # Never ``self.client``: kombu pins that one to the connection it reads BRPOP
        # replies from, so a command from another thread (or mid-poll) would take them.
        return self._create_client(asynchronous=False)

    def _create_client(self, asynchronous: bool = False) -> Any:
        # kombu builds a new redis-py client for every publish, ack and unacked write
        # (about a fifth of a publish's CPU time). A client on a connection pool is
        # thread-safe, so keep one per pool; a new pool (after a fork or a disconnect)
        # gets a new client.
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self._cached_client
        if cached is None or cached.connection_pool is not pool:
            cached = self._cached_client = super()._create_client(asynchronous=False)
        return cached

    def _unblock_clients(self, client_ids: list[int]) -> Any:
        with self._sync_client().pipeline(transaction=False) as pipe:
            for client_id in client_ids:
                pipe.execute_command("CLIENT", "UNBLOCK", client_id)
            return pipe.execute()

    def _kill_client(self, client_id: int) -> Any:
        return self._sync_client().execute_command("CLIENT", "KILL", "ID", client_id)

    def _watcher_connection(self) -> Any:
        # Outside the channel's pool, whose size is not counted for one per queue.
        pool = self.pool
        return pool.connection_class(**pool.connection_kwargs)

    def close(self) -> None:
        direct, self._direct_client = self._direct_client, None
        if direct is not None and direct[0] == os.getpid():
            with contextlib.suppress(Exception):
                direct[1].close()  # back to the pool, which kombu disconnects
        super().close()


__all__ = ["MIN_SERVER", "ClientChannel"]
