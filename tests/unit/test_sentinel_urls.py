"""sentinel:// URLs without a server: what they become, what a missing setting says, and
that a password in them is never shown. (tests/integration/test_sentinel_servers.py and
tests/faults/test_sentinel_failover.py run them against real sentinels.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from taskq import Taskq
from taskq.backends import backend_from_url
from taskq.beat import open_store
from taskq.broker import broker_connection
from taskq.exceptions import ConfigurationError
from taskq.redis_sentinel import MasterConnection, master_client
from taskq.sentinel import master_params, sentinel_addresses, sentinel_options
from taskq.transports.redis import Transport as RedisTransport
from taskq.transports.redis_sentinel import SentinelChannel, SentinelTransport
from taskq.transports.redis_take import TakingChannel

SECRET = "s3cr3t"
URL = f"sentinel://:{SECRET}@127.0.0.1:26379/2;sentinel://:{SECRET}@127.0.0.1:26380/2"


def test_the_sentinel_url_list_names_every_sentinel_and_the_first_gives_db_and_password() -> None:
    assert sentinel_addresses("sentinel://a:1;sentinel://b;sentinel://c:3/0") == [
        ("a", 1),
        ("b", 26379),
        ("c", 3),
    ]
    assert master_params(URL) == {"db": 2, "password": SECRET}
    assert master_params("sentinel://u:p%40ss@a:1/0") == {
        "db": 0,
        "username": "u",
        "password": "p@ss",
    }
    assert master_params(f"sentinel://a:1/3?password={SECRET}") == {"db": 3, "password": SECRET}
    with pytest.raises(ConfigurationError, match="sentinel://host:port"):
        sentinel_addresses("sentinel://a:1;redis://b:2/0")


def test_a_sentinel_broker_gets_taskqs_redis_channel_on_kombus_sentinel_pool() -> None:
    conn = broker_connection(URL, {"master_name": "mymaster"})
    assert conn.transport_cls is SentinelTransport
    assert issubclass(SentinelTransport, RedisTransport)
    # taskq's take, leases and parking, with kombu's Sentinel pool underneath
    assert issubclass(SentinelChannel, TakingChannel)
    assert SentinelChannel.connection_class is MasterConnection
    options = SentinelChannel.from_transport_options
    assert {"master_name", "sentinel_kwargs", "visibility_timeout", "fetch_batch"} <= set(options)
    assert conn.transport_options["socket_timeout"] == 10.0  # taskq's Redis defaults apply


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("redis://127.0.0.1:1/0;redis://127.0.0.1:2/0", RedisTransport),
        ("sentinel://127.0.0.1:1;sentinel://127.0.0.1:2", SentinelTransport),
    ],
)
def test_moving_to_the_next_url_of_a_list_keeps_taskqs_transport(url: str, transport: type) -> None:
    # kombu looks the next URL's scheme up in its own alias table (its plain transports).
    conn = broker_connection(url, {"master_name": "mymaster"})
    conn.maybe_switch_next()
    assert conn.port == 2
    assert conn.transport_cls is transport
    assert conn.clone().transport_cls is transport


def _broker(app: Taskq) -> object:
    return broker_connection(app.broker_url, app.conf.broker_transport_options)


def _backend(app: Taskq) -> object:
    return backend_from_url(app.backend_url, options=app.conf.result_backend_transport_options)


@pytest.mark.parametrize(
    ("make", "setting"),
    [
        (_broker, "broker_transport_options"),
        (_backend, "result_backend_transport_options"),
        (open_store, "broker_transport_options"),
    ],
)
def test_a_missing_master_name_says_what_to_set_and_never_shows_the_password(
    make: Callable[[Taskq], object], setting: str
) -> None:
    app = Taskq("proj", broker=URL, backend=URL)
    with pytest.raises(ConfigurationError) as caught:
        make(app)
    message = str(caught.value)
    assert f"set {setting}={{'master_name': " in message, message
    assert "sentinel monitor" in message
    assert SECRET not in message
    assert "sentinel://:**@127.0.0.1:26379/2" in message


def test_the_beat_store_takes_only_the_options_a_redis_client_knows() -> None:
    options = {"master_name": "m", "visibility_timeout": 5, "socket_timeout": 2, "fetch_batch": 9}
    assert sentinel_options(options) == {"master_name": "m", "socket_timeout": 2}


def test_a_sentinel_client_connects_through_the_sentinels_with_the_masters_credentials() -> None:
    client = master_client(URL, {"master_name": "mymaster", "socket_timeout": 3.0}, "x")
    pool = client.connection_pool
    assert pool.service_name == "mymaster"
    assert pool.connection_class is MasterConnection
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == SECRET
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26380]
    # the sentinels themselves get the socket options, not the master's password
    assert sentinels[0].connection_pool.connection_kwargs.get("password") is None
    assert SECRET not in repr(client)
    client.close()
