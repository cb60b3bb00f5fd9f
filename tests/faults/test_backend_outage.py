"""F11-F12: the result backend goes away while tasks run.

F11: the Redis that keeps results stops for 20 s in the middle of 400 tasks. Every task's
message must stay unacked until its result is stored, and once the backend is back every
one of the 400 must read SUCCESS: none left PENDING for ever. F12: the backend stays away
past the retry policy: each task that ran is then dead-lettered with the reason, never
acknowledged as if its result had been stored, and a waiting `get()` is not fooled either.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskq import AsyncResult, states
from taskq.deadletter import DeadLetters
from tests.faults.fault_tasks import WORK
from tests.faults.harness import eventually, make_setup, queue_length, scenario
from tests.faults.report import Results
from tests.integration.helpers import wait_for
from tests.servers import RedisServer, serve

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
def results_redis() -> Iterator[RedisServer]:
    # Its own server, with the AOF on: results stored before the outage survive it.
    yield from serve(lambda: RedisServer(extra_args=["--appendonly", "yes"]), "redis-server")


def backend_url(server: RedisServer) -> str:
    return server.url.rsplit("/", 1)[0] + "/1"


@pytest.mark.timeout(300)
def test_f11_results_are_kept_through_a_result_backend_outage(
    kind: str,
    results_redis: RedisServer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    results: Results,
) -> None:
    """F11: the result backend is stopped for 20 s during 400 tasks."""
    setup = make_setup(kind, request, tmp_path, "f11")
    setup.backend = backend_url(results_redis)
    setup.settings["task_dead_letter_queue"] = f"dead-{setup.queue}"  # its own, to count
    with scenario(setup) as app:
        work = app.tasks[WORK]
        ids = [work.delay(0.02).id for _ in range(400)]
        worker = setup.worker()
        wait_for(lambda: len(setup.ledger.completions()) >= 60, 60, "tasks to run")
        results_redis.stop()
        ran_before = len(setup.ledger.completions())
        time.sleep(20)  # the outage is the scenario, not a wait for something
        ran_during = len(setup.ledger.completions()) - ran_before
        results_redis.start()
        done = eventually(lambda: set(ids) <= set(setup.ledger.completions()), 120)

        def stored_states() -> dict[str, str]:
            return {i: app.backend.get_task_meta(i)["status"] for i in ids}

        # A body's ledger line is written before its result is stored, and a store that
        # failed during the outage is tried again after a backoff of up to 10 s.
        eventually(lambda: set(stored_states().values()) == {states.SUCCESS}, 120, 0.5)
        stored = stored_states()
        eventually(lambda: queue_length(app) == 0, 30)
        dead = DeadLetters(app).list()
        report = setup.ledger.check(ids)
        not_success = [i for i, state in stored.items() if state != states.SUCCESS]
        results.add(
            tasks=len(ids),
            lost=len(report.lost) + len(not_success),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            runs=report.executions,
            extra={"ran_during_outage": ran_during, "dead": len(dead)},
        )
        detail = f"{report.summary()}\nnot SUCCESS: {len(not_success)}\n{worker.log()[-3000:]}"
        assert done and not report.lost, detail
        assert not_success == [], detail
        assert dead == [], detail
        assert not report.concurrent, detail
        assert queue_length(app) == 0, detail


@pytest.mark.timeout(240)
def test_f12_a_result_that_cannot_be_stored_is_dead_lettered_with_the_reason(
    kind: str,
    results_redis: RedisServer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    results: Results,
) -> None:
    """F12: the result backend stays away past the retry policy."""
    setup = make_setup(
        kind, request, tmp_path, "f12",
        result_backend_max_retries=3,
        result_backend_max_sleep_between_retries_ms=200,
    )  # fmt: skip
    setup.backend = backend_url(results_redis)
    setup.settings["task_dead_letter_queue"] = f"dead-{setup.queue}"
    with scenario(setup) as app:
        work = app.tasks[WORK]
        worker = setup.worker()
        assert work.delay(0.01).get(timeout=30)  # the path works before the outage
        results_redis.stop()
        ids = [work.delay(0.01).id for _ in range(10)]
        wait_for(lambda: set(ids) <= set(setup.ledger.completions()), 60, "the tasks to run")
        letters = DeadLetters(app)
        eventually(lambda: len(letters.list()) >= len(ids), 60)
        dead = {letter.id: letter for letter in letters.list()}
        left = queue_length(app)
        results_redis.start()
        results.add(
            tasks=len(ids),
            lost=len(set(ids) - set(dead)),
            runs=len(setup.ledger.executions()),
            extra={"dead": len(dead), "left_in_queue": left},
        )
        detail = f"{sorted(dead)}\n{worker.log()[-3000:]}"
        assert set(dead) == set(ids), detail
        assert all("result could not be stored" in d.reason for d in dead.values()), detail
        assert left == 0, detail
        # Nothing stored SUCCESS for them behind the dead letters' back.
        assert {app.backend.get_task_meta(i)["status"] for i in ids} == {states.PENDING}
        # Requeued once the backend is back, they run again and their results land.
        assert letters.requeue(ids) == len(ids)
        for task_id in ids:
            assert AsyncResult(task_id, app=app).get(timeout=60) == task_id
