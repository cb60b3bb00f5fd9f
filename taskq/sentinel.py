"""Redis behind Sentinel: ``sentinel://`` URLs, as Celery spells them.

A URL lists the sentinels, not Redis itself; they say which server is the master of the
group named by ``master_name`` (a transport option), and name a new one when it fails::

    broker_url = "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379"
    broker_transport_options = {"master_name": "mymaster"}
    result_backend = "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379/1"
    result_backend_transport_options = {"master_name": "mymaster"}

The database and the master's password come from the first URL
(``sentinel://:secret@10.0.0.1:26379/1;...``); the sentinels' own credentials, if they
have any, go in ``sentinel_kwargs`` (``{"password": ...}``). Every client taskq makes from
such a URL (the broker transport, the result backend, the beat store) connects through
redis-py's ``SentinelConnectionPool``: each new connection asks the sentinels for the
master, so after a failover the next connection goes to the promoted replica
(``redis_sentinel.MasterConnection``).

This module holds what needs no redis-py (URLs, options, errors); the clients themselves
are made in ``redis_sentinel``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from .exceptions import ConfigurationError
from .url import credentials_in_userinfo, mask_url

SENTINEL_SCHEME = "sentinel"
DEFAULT_PORT = 26379
# Transport options that are about the sentinels, not about a Redis connection.
SENTINEL_OPTIONS = ("master_name", "min_other_sentinels", "sentinel_kwargs")


def require_master_name(options: Mapping[str, Any], setting: str, url: str) -> str:
    """The master's name from ``options``; ConfigurationError saying what to set if absent."""
    name = options.get("master_name")
    if not name or not isinstance(name, str):
        raise ConfigurationError(
            f"The sentinel:// URL {mask_url(url)!r} names the sentinels, not the Redis "
            f"master: set {setting}={{'master_name': '<name>'}}, with the name the "
            f"sentinels monitor (their 'sentinel monitor <name> <host> <port> <quorum>' line)."
        )
    return name


def sentinel_addresses(url: str) -> list[tuple[str, int]]:
    """(host, port) of every sentinel in a ``;`` list of sentinel:// URLs."""
    found = []
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        if parts.scheme.lower() != SENTINEL_SCHEME or not parts.hostname:
            raise ConfigurationError(
                f"Each URL of a sentinel list must be sentinel://host:port, not "
                f"{mask_url(part.strip())!r}"
            )
        found.append((parts.hostname, parts.port or DEFAULT_PORT))
    return found


def master_params(url: str) -> dict[str, Any]:
    """The database and credentials for the master, from the list's first URL."""
    first = urlsplit(credentials_in_userinfo(url.split(";", 1)[0].strip()))
    params: dict[str, Any] = {}
    path = first.path.strip("/")
    if path:
        if not path.isdigit():
            raise ConfigurationError(
                f"The database of {mask_url(url)!r} must be a number, not {path!r}"
            )
        params["db"] = int(path)
    if first.username:
        params["username"] = unquote(first.username)
    if first.password is not None:
        params["password"] = unquote(first.password)
    return params


def sentinel_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Of a transport's options, those a plain redis-py client on the master needs too:
    the sentinel ones and the socket timeouts (not kombu's, such as visibility_timeout)."""
    return {k: v for k, v in options.items() if k in SENTINEL_OPTIONS or k.startswith("socket_")}


__all__ = [
    "SENTINEL_OPTIONS",
    "SENTINEL_SCHEME",
    "master_params",
    "require_master_name",
    "sentinel_addresses",
    "sentinel_options",
]
