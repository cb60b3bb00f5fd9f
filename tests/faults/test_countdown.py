"""F6: countdowns longer than the Redis visibility timeout run exactly once.

Celery on Redis runs such a task several times: the worker holds the message unacked until
it is due, the visibility timeout passes, and the message is delivered again. taskq either
renews the lease of what it holds or, past ``worker_eta_horizon``, parks the message on the
broker; both ways are run here, with two workers competing for every redelivered copy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from taskq.transports.redis import Channel as RedisChannel
from tests.faults.fault_tasks import WORK
from tests.faults.harness import eventually, make_setup, scenario
from tests.faults.report import Results

pytestmark = [pytest.mark.integration, pytest.mark.faults]

VT = 2.0  # Redis visibility timeout
COUNTDOWN = 3 * VT
SWEEP = RedisChannel.unacked_sweep_interval  # between restore sweeps, taskq's default


@pytest.mark.timeout(180)
@pytest.mark.parametrize("holding", ["held", "parked"])
def test_f6_countdown_of_three_visibility_timeouts_runs_once(
    kind: str, holding: str, request: pytest.FixtureRequest, tmp_path: Path, results: Results
) -> None:
    """F6: 100 countdown tasks with countdown = 3 x the visibility timeout: exactly 100 runs."""
    tasks = 100
    results.scenario = f"F6 {holding}"
    # "held": the default horizon is far beyond the countdown, so workers keep the messages
    # (and must renew their leases); "parked": a horizon shorter than the countdown.
    extra: dict[str, Any] = {} if holding == "held" else {"worker_eta_horizon": VT / 2}
    setup = make_setup(kind, request, tmp_path, "f6", visibility_timeout=VT, **extra)
    ledger = setup.ledger
    with scenario(setup) as app:
        workers = [setup.worker(), setup.worker()]
        work = app.tasks[WORK]
        not_before = time.time() + COUNTDOWN
        ids = [work.apply_async((0.005,), countdown=COUNTDOWN).id for _ in range(tasks)]
        eventually(lambda: set(ids) <= set(ledger.completions()), COUNTDOWN + 60)
        # A copy redelivered while the original ran would run a little later: give it a
        # visibility timeout and a restore sweep (taskq's Redis sweeps every 5 s) to show up.
        time.sleep(VT + SWEEP + 1)
        report = ledger.check(ids)
        runs = [r for r in ledger.executions() if r.id in set(ids)]
        early = [r.id for r in runs if r.wall_start < not_before]
        results.add(
            tasks=tasks,
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            runs=len(runs),
            extra={"early": len(early)},
        )
        logs = "\n".join(w.log()[-1500:] for w in workers)
        detail = f"{report.summary()}\n{logs}"
        assert len(runs) == tasks, detail  # exactly 100 runs
        assert not report.lost and report.duplicates == 0 and not report.concurrent, detail
        assert not early, detail
        assert all(w.proc is not None and w.proc.poll() is None for w in workers), detail
