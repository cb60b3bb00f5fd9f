"""F18: connecting works, but the broker refuses commands (Redis out of memory, noeviction).

Before, the worker either crashed ("unexpected" OutOfMemoryError while setting up its
queues after a reconnect) or, when a poll failed, tried again at once and logged each
try. Now it backs off (0.2 s doubling to 5 s, with jitter), says what is wrong once per
incident, and serves again once Redis has room.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.faults.fault_tasks import WORK
from tests.faults.harness import eventually, make_setup, scenario
from tests.faults.report import Results
from tests.integration.helpers import wait_for
from tests.servers import RedisServer, serve

pytestmark = [pytest.mark.integration, pytest.mark.faults]
WINDOW = 10.0  # seconds of refusal, counted
MOST_COMMANDS = 300  # in the window: a retry per poll makes thousands


@pytest.fixture
def noeviction_redis() -> Iterator[RedisServer]:
    yield from serve(
        lambda: RedisServer(extra_args=["--maxmemory-policy", "noeviction"]), "redis-server"
    )


def commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


@pytest.mark.parametrize("kind", ["redis"])
@pytest.mark.timeout(180)
def test_f18_a_broker_out_of_memory_is_waited_out_not_stormed(
    kind: str,
    noeviction_redis: RedisServer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    results: Results,
) -> None:
    """F18: Redis out of memory (noeviction) and the worker's connections dropped."""
    setup = make_setup(kind, request, tmp_path, "f18", broker=noeviction_redis.url)
    server = redis.Redis.from_url(noeviction_redis.url)
    with scenario(setup) as app:
        work = app.tasks[WORK]
        worker = setup.worker()
        assert work.delay(0.01).get(timeout=30)
        server.config_set("maxmemory", 1)
        # Its connections go (as in a restart): every reconnect is refused at set-up.
        server.client_kill_filter(_type="normal", skipme=True)
        wait_for(lambda: "out of memory" in worker.log(), 30, "the worker to notice")
        before = commands(server)
        # The refusal's length is the scenario, not a wait for something.
        eventually(lambda: worker.proc is not None and worker.proc.poll() is not None, WINDOW)
        during = commands(server) - before
        alive = worker.proc is not None and worker.proc.poll() is None
        server.config_set("maxmemory", 0)
        ids = [work.delay(0.01).id for _ in range(10)]
        served = eventually(lambda: set(ids) <= set(setup.ledger.completions()), 60)
        log = worker.log()
        said = sum("out of memory" in line for line in log.splitlines())
        results.add(
            tasks=len(ids),
            lost=len(set(ids) - set(setup.ledger.completions())),
            extra={"commands_per_s": round(during / WINDOW, 1), "log_lines": said},
        )
        detail = log[-3000:]
        assert alive, detail  # it waited the fault out
        assert during < MOST_COMMANDS, f"{during} commands in {WINDOW} s\n{detail}"
        assert said <= 12, detail  # once per incident, then at 2, 4, 8... attempts
        assert served, detail
    server.close()
