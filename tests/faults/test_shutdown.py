"""F4-F5: a worker asked to stop, warm or cold, hands back everything it has not finished."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.faults.fault_tasks import WORK
from tests.faults.harness import PREFETCH, eventually, make_setup, queue_length, scenario, wait_gone
from tests.faults.report import Results
from tests.integration.helpers import children, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.mark.timeout(180)
def test_f4_warm_shutdown_returns_reserved_eta_tasks(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, results: Results
) -> None:
    """F4: warm shutdown with tasks running and 50 ETA tasks reserved."""
    eta_tasks, countdown = 50, 8.0
    setup = make_setup(kind, request, tmp_path, "f4")
    ledger = setup.ledger
    with scenario(setup) as app:
        work = app.tasks[WORK]
        worker = setup.worker()
        # One per pool slot, long enough to be still running when SIGTERM comes.
        running = [work.delay(countdown / 2 + 2) for _ in range(2)]
        not_before = time.time() + countdown  # each ETA is at least this (set a bit later)
        later = [work.apply_async((0.005,), countdown=countdown) for _ in range(eta_tasks)]
        later_ids = [r.id for r in later]
        started = {r.id for r in running}
        wait_for(lambda: started <= {e["id"] for e in ledger.events()}, 30, "both to start")
        # Every ETA message is off the queue (the worker holds all 50), well before they
        # are due; the verdict comes below, with the figures.
        reserved = eventually(lambda: queue_length(app) == 0, countdown / 2)
        waiting = queue_length(app)
        term = time.monotonic()
        worker.signal(signal.SIGTERM)
        code = worker.wait(60)
        later_set = set(later_ids)
        events = ledger.events()
        ends = [e["t"] for e in events if e["event"] == "end" and e["id"] in started]
        ran_on_old = [e for e in events if e["id"] in later_set]
        first_states = [r.state for r in running]
        # Back on the broker, not merely unacked: on Redis an unreturned message would only
        # reappear after the visibility timeout, in time for the second worker all the same.
        returned = queue_length(app)
        second = setup.worker()
        eventually(lambda: later_set <= set(ledger.completions()), countdown + 60)
        report = ledger.check(later_ids)
        runs = [r for r in ledger.executions() if r.id in later_set]
        early = [r.id for r in runs if r.wall_start < not_before]
        second.signal(signal.SIGTERM)
        second_code = second.wait(60)
        results.add(
            tasks=eta_tasks + len(running),
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            runs=len(runs),
            extra={
                "exit": code,
                "not_reserved": waiting,
                "returned": returned,
                "running_done": first_states.count("SUCCESS"),
                "early": len(early),
            },
        )
        detail = f"{report.summary()}\n{worker.log()[-3000:]}"
        assert reserved, f"{waiting} ETA tasks still in the queue: not reserved\n{detail}"
        assert code == 0, detail
        assert returned == eta_tasks, detail
        assert len(ends) == 2 and min(ends) > term, detail  # they ran on after SIGTERM ...
        assert first_states == ["SUCCESS", "SUCCESS"], detail  # ... and finished
        assert not ran_on_old, detail
        assert not report.lost and report.duplicates == 0 and not report.concurrent, detail
        assert len(runs) == eta_tasks, detail  # exactly once each
        assert not early, detail  # and none before its ETA
        assert second_code == 0, second.log()[-3000:]


@pytest.mark.timeout(180)
def test_f5_cold_shutdown_loses_nothing(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, results: Results
) -> None:
    """F5: cold shutdown (SIGQUIT) with tasks running and reserved: nothing lost."""
    setup = make_setup(kind, request, tmp_path, "f5")
    ledger = setup.ledger
    with scenario(setup) as app:
        work = app.tasks[WORK]
        first = [work.delay(0.01).id for _ in range(100)]
        long = [work.delay(3.0).id for _ in range(2)]
        rest = [work.delay(0.01).id for _ in range(100)]
        ids = first + long + rest
        worker = setup.worker()
        wait_for(lambda: set(long) <= {e["id"] for e in ledger.events()}, 60, "long tasks")
        pool = children(worker.pid)
        worker.signal(signal.SIGQUIT)
        code = worker.wait(60)
        wait_gone(pool)  # the cold stop kills the children; make sure, then note it
        ledger.kill("cold shutdown")
        completed = ledger.completions()
        cut = [i for i in long if i not in completed]
        unfinished = set(ids) - set(completed)
        back = queue_length(app)  # returned to the queue, not left for a timeout to find
        second = setup.worker()
        eventually(lambda: set(ids) <= set(ledger.completions()), 90)
        report = ledger.check(ids)
        results.add(
            tasks=len(ids),
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            in_flight_bound=PREFETCH,
            runs=report.executions,
            extra={"exit": code, "cut": len(cut), "unfinished": len(unfinished), "back": back},
        )
        detail = f"{report.summary()}\n{worker.log()[-3000:]}"
        assert "cold shutdown" in worker.log(), detail
        assert cut == long, detail  # the long tasks were stopped, not waited for
        assert back >= len(unfinished), detail
        assert not report.lost and not report.concurrent, detail
        assert report.duplicates <= PREFETCH, detail
        assert second.proc is not None and second.proc.poll() is None


@pytest.mark.timeout(180)
def test_f13_warm_shutdown_returns_tasks_queued_behind_busy_processes(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, results: Results
) -> None:
    """F13: warm shutdown with -c 2 and four 6 s tasks: two run on, two go back at once."""
    setup = make_setup(kind, request, tmp_path, "f13")
    ledger = setup.ledger
    with scenario(setup) as app:
        work = app.tasks[WORK]
        worker = setup.worker()
        ids = [work.delay(6.0).id for _ in range(4)]
        # Two start; the other two are handed to the pool behind them (one waiting batch
        # per process), so none is left in the queue.
        wait_for(lambda: len({e["id"] for e in ledger.events()}) >= 2, 30, "two to start")
        handed = eventually(lambda: queue_length(app) == 0, 10)
        started = {e["id"] for e in ledger.events()}
        worker.signal(signal.SIGTERM)
        # The two that had not started are back on the broker while the two running
        # tasks still run: nothing waits for them.
        back_early = eventually(
            lambda: queue_length(app) == 2 and not ledger.completions(), 5.5, interval=0.05
        )
        code = worker.wait(60)
        ran = set(ledger.completions())
        left = queue_length(app)
        second = setup.worker()
        eventually(lambda: set(ids) <= set(ledger.completions()), 60)
        report = ledger.check(ids)
        second.signal(signal.SIGTERM)
        second.wait(60)
        results.add(
            tasks=len(ids),
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            runs=report.executions,
            extra={"exit": code, "ran_on_first": len(ran), "back": left},
        )
        detail = f"{report.summary()}\n{worker.log()[-3000:]}"
        assert handed, "the four tasks were not all handed to the pool: the scenario is void"
        assert back_early, detail
        assert code == 0 and ran == started and len(ran) == 2, detail
        assert left == 2, detail
        assert not report.lost and report.duplicates == 0 and not report.concurrent, detail
