"""F16: a worker whose clock is five minutes ahead takes nothing the others hold.

Leases and restores on Redis are measured on the server's clock (``TIME`` in the scripts),
never a worker's: a host whose clock is off cannot see another's messages as abandoned,
and take back tasks that are still running. The skewed worker's wall clock is injected
(tests/faults/clock/sitecustomize.py), before kombu or taskq read it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.fault_tasks import WORK
from tests.faults.harness import eventually, make_setup, scenario
from tests.faults.report import Results
from tests.integration.helpers import ROOT, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
CLOCK = Path(__file__).parent / "clock"


def skewed(seconds: float) -> dict[str, str]:
    return {"FAULT_CLOCK_SKEW": str(seconds), "PYTHONPATH": f"{CLOCK}:{ROOT}"}


@pytest.mark.parametrize("kind", ["redis"])
@pytest.mark.timeout(180)
def test_f16_a_worker_whose_clock_is_ahead_takes_nothing_from_the_others(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, results: Results
) -> None:
    """F16: a second worker's clock runs 5 minutes ahead while the first runs long tasks."""
    # A lease of 20 s, renewed every 5 s; the skewed worker sweeps every 5 s.
    setup = make_setup(kind, request, tmp_path, "f16", visibility_timeout=20.0)
    ledger = setup.ledger
    with scenario(setup) as app:
        work = app.tasks[WORK]
        setup.worker()
        ids = [work.delay(15.0).id for _ in range(2)]
        wait_for(lambda: {e["id"] for e in ledger.events()} >= set(ids), 30, "both to start")
        ahead = setup.worker(env=skewed(300))
        # Its first sweeps come within seconds, long before the two tasks end: on its
        # clock, their leases are five minutes old.
        done = eventually(lambda: set(ids) <= set(ledger.completions()), 60)
        report = ledger.check(ids)
        log = ahead.log()
        results.add(
            tasks=len(ids),
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            runs=report.executions,
            extra={"skew_s": 300},
        )
        detail = f"{report.summary()}\n{setup.logs()}"
        assert done and not report.lost, detail
        assert report.duplicates == 0 and not report.concurrent, detail
        assert "Connected to" in log, detail
