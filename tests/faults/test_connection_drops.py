"""F9-F10: the broker's connection drops or goes silent while the worker is busy.

F9: Redis closes idle connections (``timeout 3``, as managed Redis services do), and the
worker's broker connection sits idle while its one process runs long tasks. F10: a silent
partition (a proxy that stops forwarding without closing anything) for 35 s. In both the
worker must come back and serve, lose nothing, and say what happened once per incident.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.fault_tasks import WORK
from tests.faults.harness import eventually, make_setup, scenario
from tests.faults.proxy import Proxy
from tests.faults.report import Results
from tests.integration.helpers import wait_for
from tests.servers import RedisServer, serve

pytestmark = [pytest.mark.integration, pytest.mark.faults]
MAX_LOG = 200_000  # bytes: a log that grows per poll is far past this within seconds


@pytest.fixture
def idle_closing_redis() -> Iterator[RedisServer]:
    yield from serve(lambda: RedisServer(extra_args=["--timeout", "3"]), "redis-server")


@pytest.fixture
def proxied_redis() -> Iterator[tuple[RedisServer, Proxy]]:
    for server in serve(RedisServer, "redis-server"):
        with Proxy(server.port) as proxy:
            yield server, proxy


@pytest.mark.parametrize("kind", ["redis"])
@pytest.mark.timeout(240)
def test_f9_redis_closes_the_idle_connection_of_a_busy_worker(
    kind: str,
    idle_closing_redis: RedisServer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    results: Results,
) -> None:
    """F9: Redis closes idle connections while the worker's one process runs 8 s tasks."""
    setup = make_setup(kind, request, tmp_path, "f9", broker=idle_closing_redis.url)
    with scenario(setup) as app:
        work = app.tasks[WORK]
        worker = setup.worker("--prefetch-multiplier", "1", concurrency=1)
        long = [work.delay(8.0).id for _ in range(3)]
        wait_for(lambda: long[0] in setup.ledger.completions(), 60, "the first long task")
        # By now Redis has closed the connection the worker was not using for 8 s.
        short = [work.delay(0.01).id for _ in range(20)]
        ids = long + short
        done = eventually(lambda: set(ids) <= set(setup.ledger.completions()), 90)
        report = setup.ledger.check(ids)
        log = worker.log()
        results.add(
            tasks=len(ids),
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            runs=report.executions,
            extra={"log_bytes": len(log)},
        )
        detail = f"{report.summary()}\n{log[-3000:]}"
        assert done and not report.lost, detail
        assert report.duplicates == 0 and not report.concurrent, detail
        assert len(log) < MAX_LOG, detail
        assert "TypeError" not in log, detail


@pytest.mark.parametrize("kind", ["redis"])
@pytest.mark.timeout(300)
def test_f10_a_silent_partition_heals_and_the_worker_serves_again(
    kind: str,
    proxied_redis: tuple[RedisServer, Proxy],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    results: Results,
) -> None:
    """F10: the path to Redis goes silent for 35 s, then heals."""
    _, proxy = proxied_redis
    setup = make_setup(kind, request, tmp_path, "f10", broker=proxy.url())
    direct = make_setup(kind, request, tmp_path, "f10", broker=proxied_redis[0].url)
    direct.settings = setup.settings  # the same queue, reached without the proxy
    with scenario(setup), scenario(direct) as client:
        work = client.tasks[WORK]
        worker = setup.worker("--prefetch-multiplier", "1", concurrency=2)
        before = [work.delay(0.01).id for _ in range(10)]
        wait_for(lambda: set(before) <= set(setup.ledger.completions()), 60, "tasks to run")
        running = [work.delay(6.0).id for _ in range(2)]
        wait_for(lambda: set(running) <= {e["id"] for e in setup.ledger.events()}, 30, "start")
        proxy.blackhole()
        during = [work.delay(0.01).id for _ in range(20)]  # sent straight to Redis
        time.sleep(35)  # the partition's length is the scenario, not a wait for an event
        proxy.heal()
        healed = time.monotonic()
        after = [work.delay(0.01).id for _ in range(20)]
        ids = before + running + during + after
        served = eventually(lambda: set(after) <= set(setup.ledger.completions()), 60)
        back_in = time.monotonic() - healed
        done = eventually(lambda: set(ids) <= set(setup.ledger.completions()), 90)
        report = setup.ledger.check(ids)
        log = worker.log()
        incidents = log.count("Connection to broker lost")
        results.add(
            tasks=len(ids),
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            runs=report.executions,
            extra={"served_again_s": round(back_in, 1), "log_bytes": len(log)},
        )
        detail = f"{report.summary()}\n{log[-4000:]}"
        assert served and done and not report.lost, detail
        assert not report.concurrent, detail
        assert back_in < 20, detail  # the requirement is 10 s; the bound allows a slow machine
        assert len(log) < MAX_LOG and incidents <= 2, detail
