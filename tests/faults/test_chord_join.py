"""F19: the worker sending a chord's body is SIGKILLed at the worst moments; the body runs once.

The last header member's worker holds the claim to send the body when it dies: either
before it sent the body, or after the broker confirmed it but before the chord was marked
done. That member was not acknowledged (late ack), so it is delivered again and its join
runs again: once the dead worker's claim runs out, it takes the claim and sends the body
if no copy ran yet, under a new token; a copy sent before the kill is then dropped when it
comes (tests/faults/chord/sitecustomize.py does the killing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from taskq import chord
from tests.faults.fault_tasks import COLLECT, WORK
from tests.faults.harness import eventually, make_setup, queue_length, scenario
from tests.faults.report import Results
from tests.integration.helpers import ROOT, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
KILLER = Path(__file__).parent / "chord"
MEMBERS = 20


@pytest.mark.parametrize("moment", ["before_send", "after_send"])
@pytest.mark.timeout(240)
def test_f19_a_worker_killed_while_sending_a_chord_body_sends_it_once(
    moment: str, kind: str, request: pytest.FixtureRequest, tmp_path: Path, results: Results
) -> None:
    """F19: the worker holding a chord's claim is SIGKILLed before/after sending the body."""
    setup = make_setup(kind, request, tmp_path, f"f19-{moment}", visibility_timeout=10.0)
    ledger = setup.ledger
    with scenario(setup) as app:
        work, collect = app.tasks[WORK], app.tasks[COLLECT]
        dying = setup.worker(env={"FAULT_CHORD_KILL": moment, "PYTHONPATH": f"{KILLER}:{ROOT}"})
        result = chord((work.si(0.005) for _ in range(MEMBERS)), collect.s()).delay()
        wait_for(lambda: any(e["event"] == "kill" for e in ledger.events()), 60, "the kill")
        wait_for(lambda: dying.proc.poll() is not None, 30, "the killed worker to exit")
        setup.worker()
        value = result.get(timeout=120)
        # Whatever was still on its way (a copy of the body sent before the kill, a
        # member delivered again) has come and gone before the runs are counted.
        settled = eventually(lambda: queue_length(app) == 0, 60)
        body_runs = ledger.completions().get(result.id, 0)
        members = [r.id for r in result.parent.results]
        report = ledger.check(members)
        results.add(
            tasks=MEMBERS + 1,
            lost=len(report.lost),
            runs=report.executions,
            extra={"moment": moment, "body_runs": body_runs},
        )
        detail = f"{report.summary()} body_runs={body_runs}\n{setup.logs()}"
        assert value == MEMBERS and settled, detail
        assert not report.lost, detail
        assert body_runs == 1, detail
