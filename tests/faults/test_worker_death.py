"""F1-F3: workers and pool children die; no task is lost, none runs twice at once, and a
task that always kills its process stops after a few deliveries."""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from pathlib import Path

import pytest

from taskq.config import SETTINGS
from taskq.deadletter import DeadLetters
from taskq.transports.redis import Channel as RedisChannel
from tests.faults.fault_tasks import DIE_ONCE, POISON, WORK
from tests.faults.harness import PREFETCH, eventually, locate, make_setup, queue_length, scenario
from tests.faults.ledger import Execution
from tests.faults.report import Results
from tests.integration.helpers import children, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

VT = 5.0  # Redis visibility timeout: how long a dead worker's messages stay invisible
SWEEP = RedisChannel.unacked_sweep_interval  # between restore sweeps, taskq's default
# How long after a kill the tasks it cut short have run again. Documented: RabbitMQ
# requeues a dead worker's messages when its connection drops; on Redis they are back
# within the visibility timeout plus one sweep of a live worker. The 15 s of slack cover
# the new worker's start-up and a loaded CI machine, not a slower mechanism.
RECOVERY_BOUND = {"redis": VT + SWEEP + 15.0, "amqp": 15.0}
MAX_DELIVERIES: int = SETTINGS["task_max_deliveries"].default


def _seed() -> int:
    # Random moments, but a failing run can be replayed with TASKQ_FAULTS_SEED.
    return int(os.environ.get("TASKQ_FAULTS_SEED") or random.randrange(1 << 30))


@pytest.mark.timeout(300)
def test_f1_worker_sigkilled_five_times(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, results: Results
) -> None:
    """F1: 1000 tasks; the whole worker SIGKILLed 5 times at random moments and restarted."""
    tasks, kills = 1000, 5
    seed = _seed()
    rng = random.Random(seed)
    setup = make_setup(kind, request, tmp_path, "f1", visibility_timeout=VT)
    ledger = setup.ledger
    with scenario(setup) as app:
        work = app.tasks[WORK]
        ids = [work.delay(0.005).id for _ in range(tasks)]
        worker = setup.worker()
        # One kill in each fifth of the run, at a random count of finished tasks plus a
        # random fraction of a second: kills land mid-task, mid-ack, mid-prefetch.
        span = (tasks - 100) // kills
        marks = [50 + i * span + rng.randrange(span) for i in range(kills)]
        kill_times: list[float] = []
        for mark in marks:
            wait_for(
                lambda m=mark: len(ledger.completions()) >= m,  # type: ignore[misc]
                120,
                f"{mark} tasks to finish (seed {seed})",
                interval=0.1,
            )
            time.sleep(rng.uniform(0.0, 0.3))
            worker.kill()  # the worker and its pool, frozen then SIGKILLed
            kill_times.append(ledger.kill("worker"))
            worker = setup.worker()
        # The backlog left after the last kill takes seconds; the rest is the recovery.
        # (The report below says which tasks are missing, if any.)
        eventually(lambda: set(ids) <= set(ledger.completions()), RECOVERY_BOUND[kind] + 30)
        report = ledger.check(ids)
        recovery = _recovery_seconds(ledger.executions(), kill_times)
        results.add(
            tasks=tasks,
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            in_flight_bound=kills * PREFETCH,
            runs=report.executions,
            recovery_s=max(recovery, default=0.0),
            extra={"cut": report.cut, "seed": seed},
        )
        where = locate(setup, app, report.lost)
        detail = f"seed {seed}: {report.summary()} on the broker: {where}\n{setup.logs(800)}"
        assert not report.lost, detail
        assert not report.concurrent, detail
        assert report.duplicates <= kills * PREFETCH, detail
        assert max(recovery, default=0.0) <= RECOVERY_BOUND[kind], (recovery, detail)


def _recovery_seconds(runs: list[Execution], kill_times: list[float]) -> list[float]:
    """Per kill: how long until every execution it cut short had completed elsewhere."""
    done: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        if r.completed and r.end is not None:
            done[r.id].append(r.end)
    out = []
    for previous, kill in zip([0.0, *kill_times], kill_times, strict=False):
        cut = {r.id for r in runs if not r.completed and previous < r.start < kill}
        firsts = [min((end for end in done[i] if end > kill), default=None) for i in cut]
        out.append(max((f - kill for f in firsts if f is not None), default=0.0))
    return out


@pytest.mark.timeout(240)
def test_f2_one_pool_child_killed_per_task(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, results: Results
) -> None:
    """F2: 100 tasks, each kills its pool child on its first run; all 100 succeed."""
    tasks, pool_size = 100, 6
    # billiard replaces dead children on a 0.8 s beat, after worker_lost_wait has passed:
    # six children (they mostly sleep) and a shorter wait keep 100 deaths to ~15 s.
    setup = make_setup(kind, request, tmp_path, "f2", visibility_timeout=VT, worker_lost_wait=0.5)
    ledger = setup.ledger
    with scenario(setup) as app:
        worker = setup.worker(concurrency=pool_size)
        handles = [app.tasks[DIE_ONCE].delay() for _ in range(tasks)]
        ids = [h.id for h in handles]
        eventually(lambda: set(ids) <= set(ledger.completions()), 120)
        # A task writes its ledger end before its result is stored: a moment for the last.
        eventually(lambda: all(h.state == "SUCCESS" for h in handles), 60)
        states = {h.id: h.state for h in handles}
        report = ledger.check(ids)
        deaths = [e for e in ledger.events() if e["event"] == "die"]
        # A replacement child may still be starting right after the last task.
        eventually(lambda: len(children(worker.pid)) == pool_size, 30)
        pool_after = set(children(worker.pid))
        results.add(
            tasks=tasks,
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            runs=report.executions,
            extra={
                "success": sum(s == "SUCCESS" for s in states.values()),
                "children_killed": len({e["pid"] for e in deaths}),
                "pool": len(pool_after),
            },
        )
        not_ok = {i: s for i, s in states.items() if s != "SUCCESS"}
        detail = f"{report.summary()} {list(not_ok.items())[:3]}\n{worker.log()[-3000:]}"
        assert not not_ok, detail
        # No worker died here, only children: a task that finished must never run again.
        # (A replacement child used to close the parent's publishing connection on
        # RabbitMQ, so a returned copy was published twice: 1-3 repeats in most runs.)
        assert not report.lost and not report.concurrent and report.duplicates == 0, detail
        assert len({e["id"] for e in deaths}) == tasks  # each task really killed a child
        assert len({e["pid"] for e in deaths}) == tasks  # ... a different one each time
        assert worker.proc is not None and worker.proc.poll() is None, detail
        assert len(pool_after) == pool_size, detail  # every dead child was replaced


@pytest.mark.timeout(180)
def test_f3_poison_task_is_dead_lettered(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, results: Results
) -> None:
    """F3: a task that always kills its child runs at most task_max_deliveries times."""
    # Each death costs billiard's worker_lost_wait before the pool reports it: shortened.
    setup = make_setup(kind, request, tmp_path, "f3", visibility_timeout=VT, worker_lost_wait=0.5)
    setup.settings["task_dead_letter_queue"] = f"dead-{setup.queue}"
    ledger = setup.ledger
    with scenario(setup) as app:
        work = app.tasks[WORK]
        before = [work.delay(0.01).id for _ in range(20)]
        poison = app.tasks[POISON].delay()
        after = [work.delay(0.01).id for _ in range(20)]
        worker = setup.worker()

        dead = setup.settings["task_dead_letter_queue"]
        eventually(lambda: queue_length(app, dead) >= 1, 60)  # asserted below, with figures
        # More work after the verdict: it flows, and gives a redelivery time to show up.
        late = [work.delay(0.01).id for _ in range(20)]
        normal = before + after + late
        eventually(lambda: set(normal) <= set(ledger.completions()), 60)
        runs = [r for r in ledger.executions() if r.id == poison.id]
        report = ledger.check(normal)
        letters = [d for d in DeadLetters(app).list() if d.id == poison.id]
        results.add(
            tasks=len(normal) + 1,
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            runs=len(runs),
            dead_lettered=len(letters),
            extra={
                "attempts": [r.attempt for r in runs],
                "state": poison.state,
                "reason": letters[0].reason[:30] if letters else None,
            },
        )
        detail = f"{len(runs)} runs of the poison; {report.summary()}\n{worker.log()[-3000:]}"
        # Every death of its process counts: it runs exactly task_max_deliveries times.
        assert len(runs) == MAX_DELIVERIES, detail
        assert len(letters) == 1, detail
        letter = letters[0]
        assert letter.task == POISON and letter.reason, letter
        assert poison.state == "FAILURE", detail
        assert not report.lost and not report.concurrent, detail
        assert worker.proc is not None and worker.proc.poll() is None, detail
