"""The broker connection: which transport a URL gets, with which options.

Client and worker both connect through ``broker_connection``, so they agree on transport
options (confirms, timeouts, the embedded SQLite transport, the Sentinel master's name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kombu import Connection
from kombu.exceptions import KombuError

from .exceptions import ConfigurationError
from .sentinel import SENTINEL_SCHEME, require_master_name
from .url import credentials_in_userinfo, mask_url


def custom_transport(scheme: str) -> type[Any] | None:
    """taskq's own kombu transport for a URL scheme, passed to kombu by class rather than by
    its alias table; imported when used, so redis-py is needed only for Redis URLs."""
    if scheme == "sqlite":
        from .transports.sqlite import Transport as Sqlite

        return Sqlite
    if scheme == "memory":
        from .transports.memory import Transport as Memory

        return Memory
    if scheme in ("amqp", "pyamqp"):
        from .transports.amqp import Transport as Amqp

        return Amqp
    if scheme in ("redis", "rediss", SENTINEL_SCHEME):
        try:
            if scheme == SENTINEL_SCHEME:
                from .transports.redis_sentinel import SentinelTransport

                return SentinelTransport
            from .transports.redis import Transport as Redis
        except ImportError as exc:
            raise ConfigurationError(
                f"A {scheme}:// broker needs redis-py ({exc}): pip install 'taskq[redis]'"
            ) from exc
        return Redis
    return None


# Dead connections are noticed: a read that hangs times out, keepalives probe idle sockets.
REDIS_OPTIONS = {
    "socket_timeout": 10.0,
    "socket_connect_timeout": 4.0,
    "socket_keepalive": True,
    "health_check_interval": 25,
}
REDIS_SCHEMES = frozenset({"redis", "rediss", SENTINEL_SCHEME})
CONFIRMING_SCHEMES = frozenset({"amqp", "pyamqp", "amqps"})


class BrokerConnection(Connection):  # type: ignore[misc]  # kombu has no types
    """kombu's connection, keeping taskq's transport when it moves along a URL list.

    On a connection error kombu switches to the next URL of a ``;`` list and takes the
    transport from that URL's scheme, by kombu's alias table: a worker on
    ``redis://a;redis://b`` would go on with kombu's plain Redis transport (no leases, no
    atomic take), and one on a Sentinel list with kombu's Sentinel transport.
    """

    def switch(self, conn_str: str) -> None:
        super().switch(conn_str)
        if "://" in conn_str:
            transport = custom_transport(conn_str.split("://", 1)[0].lower())
            if transport is not None:
                self.transport_cls = transport


def broker_connection(
    url: str,
    transport_options: Mapping[str, Any] | None = None,
    heartbeat: float = 0.0,
    connect_timeout: float = 4.0,
) -> Connection:
    """A kombu connection for ``url`` with taskq's transport defaults."""
    scheme = url.split("://", 1)[0].lower()
    options = dict(transport_options or {})
    if scheme == "memory":
        # kombu's in-process broker polls; its 1 s default would dominate test latency.
        options.setdefault("polling_interval", 0.01)
    if scheme in REDIS_SCHEMES:
        options = {**REDIS_OPTIONS, **options}
    if scheme == SENTINEL_SCHEME:
        require_master_name(options, "broker_transport_options", url)
    if scheme in CONFIRMING_SCHEMES:
        # Publisher confirms: publish() returns only once RabbitMQ has taken the message.
        options.setdefault("confirm_publish", True)
    kwargs: dict[str, Any] = {
        "transport_options": options,
        "heartbeat": heartbeat if scheme in CONFIRMING_SCHEMES else 0,
        "connect_timeout": connect_timeout,
    }
    transport = custom_transport(scheme)
    if transport is not None:
        kwargs["transport"] = transport
    try:
        return BrokerConnection(credentials_in_userinfo(url), **kwargs)
    except (KombuError, KeyError, ValueError, TypeError, ImportError) as exc:
        raise ConfigurationError(f"Cannot use broker URL {mask_url(url)!r}: {exc}") from exc


__all__ = ["BrokerConnection", "broker_connection", "custom_transport"]
