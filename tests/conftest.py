"""Shared fixtures. Servers start lazily, once per session, on private loopback ports."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

# Let tests import helpers as `tests.servers`, `tests.integration.helpers`, ... under
# any pytest entry point (the repo root is not on sys.path for .venv/bin/pytest).
if str(Path(__file__).resolve().parent.parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import RabbitServer, RedisServer

_S = TypeVar("_S", RedisServer, RabbitServer)


def _serve(factory: Callable[[], _S], what: str) -> Iterator[_S]:
    """Start a server for the session; if it cannot start, FAIL (never skip)."""
    server: _S | None = None
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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from _serve(RedisServer, "redis-server")


@pytest.fixture(scope="session")
def rabbit_server() -> Iterator[RabbitServer]:
    yield from _serve(RabbitServer, "rabbitmq-server")


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def amqp_url(rabbit_server: RabbitServer) -> str:
    return rabbit_server.url
