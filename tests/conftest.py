"""Shared fixtures. Servers start lazily, once per session, on private loopback ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Let tests import helpers as `tests.servers`, `tests.integration.helpers`, ... under
# any pytest entry point (the repo root is not on sys.path for .venv/bin/pytest).
if str(Path(__file__).resolve().parent.parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faults.report import RESULTS, table
from tests.servers import RabbitServer, RedisServer, serve


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from serve(RedisServer, "redis-server")


@pytest.fixture(scope="session")
def rabbit_server() -> Iterator[RabbitServer]:
    yield from serve(RabbitServer, "rabbitmq-server")


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def amqp_url(rabbit_server: RabbitServer) -> str:
    return rabbit_server.url


@pytest.fixture(autouse=True, scope="module")
def _no_pooled_connections_between_modules() -> Iterator[None]:
    # Celery's clients keep their connections in kombu's process-wide pools, keyed by URL:
    # a later module's Celery app would be handed a connection an earlier one left behind,
    # made for another test's server state. Each module starts with none.
    yield
    import kombu.pools

    kombu.pools.reset()


@pytest.fixture(scope="session")
def redis_backend_url(redis_url: str) -> str:
    """Results on the session Redis, in a database of their own (db 1)."""
    return redis_url.rsplit("/", 1)[0] + "/1"


# The fault suite's results table. In a parallel run (pytest-xdist) each worker process
# hands its rows to the main one, which prints them all.
def pytest_sessionfinish(session: pytest.Session) -> None:
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["fault_rows"] = session.config.stash.get(RESULTS, [])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    rows = getattr(node, "workeroutput", {}).get("fault_rows", [])
    node.config.stash.setdefault(RESULTS, []).extend(rows)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = table(config)
    if lines:
        terminalreporter.section("fault-injection results")
        for line in lines:
            terminalreporter.line(line)
