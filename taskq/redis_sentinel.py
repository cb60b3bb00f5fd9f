"""redis-py clients on the master that Redis Sentinel names (see ``sentinel`` for the URLs).

redis-py's ``SentinelManagedConnection`` asks the sentinels for the master in
``connect()``. redis-py's own paths that connect a dropped connection without it
(``send_command`` on a connection whose socket is gone, which is how a single-connection
client and taskq's direct calls reconnect) go straight to the address of the last
connection: after a failover, to the old master, for ever. ``MasterConnection`` asks the
sentinels whichever way it connects, so every connection taskq keeps (a thread's client,
a publisher's, a result waiter's) follows the master.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from redis.sentinel import Sentinel, SentinelManagedConnection

from .sentinel import (
    SENTINEL_OPTIONS,
    SENTINEL_SCHEME,
    master_params,
    require_master_name,
    sentinel_addresses,
)


class MasterConnection(SentinelManagedConnection):
    """A connection to the master, found through the sentinels on every connect."""

    _address_known = False  # set while SentinelManagedConnection connects to an address

    def connect_to(self, address: Any) -> None:
        self._address_known = True
        try:
            super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self._address_known = False

    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self._sock is None and not self._address_known and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health, retry_socket_connect)


class MasterSSLConnection(MasterConnection, redis.SSLConnection):
    """``MasterConnection`` over TLS."""


def master_client(url: str, options: Mapping[str, Any], setting: str) -> Any:
    """A redis-py client on the master the sentinels at ``url`` name, following failovers.

    ``options`` are the transport options: ``master_name`` (required), optionally
    ``min_other_sentinels`` and ``sentinel_kwargs``; the rest are redis-py connection
    keywords for the master (timeouts, keepalive...). ``setting`` names them in errors.
    """
    opts = dict(options)
    name = require_master_name(opts, setting, url)
    for key in SENTINEL_OPTIONS:
        opts.pop(key, None)
    opts["connection_class"] = MasterSSLConnection if opts.pop("ssl", False) else MasterConnection
    sentinel = Sentinel(
        sentinel_addresses(url),
        min_other_sentinels=int(options.get("min_other_sentinels") or 0),
        sentinel_kwargs=options.get("sentinel_kwargs"),
        **opts,
    )
    return sentinel.master_for(name, redis_class=redis.Redis, **master_params(url))


def redis_client(url: str, options: Mapping[str, Any], setting: str) -> Any:
    """A redis-py client for ``url``: on the sentinels' master for sentinel://, else
    ``redis.Redis.from_url``; ``options`` are its keywords (``setting`` names them in
    errors)."""
    if url.split("://", 1)[0].lower() == SENTINEL_SCHEME:
        return master_client(url, options, setting)
    return redis.Redis.from_url(url, **options)


def close_client(client: Any) -> None:
    """Close a client, and its connections to the sentinels if it has any."""
    client.close()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if manager is not None:
        manager.close()


__all__ = [
    "MasterConnection",
    "MasterSSLConnection",
    "close_client",
    "master_client",
    "redis_client",
]
