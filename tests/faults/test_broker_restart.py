"""F7: the broker is killed and restarted three times while a client publishes and a worker
consumes: the worker comes back each time, and every publish either raised or ran."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Publisher, eventually, locate, make_setup, scenario
from tests.faults.report import Results
from tests.servers import RabbitServer, RedisServer, serve

pytestmark = [pytest.mark.integration, pytest.mark.faults]

VT = 5.0  # Redis visibility timeout: unacked messages of the crash come back after it
RESTARTS = 3
RESUME_WITHIN = 10.0  # the bound for the worker to run tasks again


@pytest.fixture
def private_broker(kind: str) -> Iterator[RedisServer | RabbitServer]:
    # Its own server: killing the session's would break every other test's workers. Redis
    # with the append-only file on, as the guarantee requires for a broker crash.
    def factory() -> RedisServer | RabbitServer:
        return (
            RedisServer(extra_args=["--appendonly", "yes"]) if kind == "redis" else RabbitServer()
        )

    yield from serve(factory, f"the {kind} broker")


@pytest.mark.timeout(240)
def test_f7_broker_killed_and_restarted_three_times(
    kind: str,
    private_broker: RedisServer | RabbitServer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    results: Results,
) -> None:
    """F7: the broker killed and restarted 3 times during a run; nothing that was sent is lost."""
    setup = make_setup(
        kind, request, tmp_path, "f7", broker=private_broker.url, visibility_timeout=VT
    )
    ledger = setup.ledger
    with scenario(setup) as app:
        worker = setup.worker()
        publisher = Publisher(app)
        thread = threading.Thread(target=publisher.run, name="publisher", daemon=True)
        thread.start()
        resumes: list[float | None] = []
        try:
            for _ in range(RESTARTS):
                done = len(ledger.completions())
                eventually(lambda d=done: len(ledger.completions()) >= d + 30, 30)  # type: ignore[misc]
                private_broker.kill()  # SIGKILL: a crash, no clean shutdown
                time.sleep(1.0)  # down long enough for publishes to fail
                private_broker.start()
                up = time.monotonic()
                eventually(
                    lambda u=up: publisher.resumed(ledger, u) is not None,  # type: ignore[misc]
                    RESUME_WITHIN,
                )
                resumes.append(publisher.resumed(ledger, up))
            done = len(ledger.completions())
            eventually(lambda: len(ledger.completions()) >= done + 30, 30)
        finally:
            publisher.stop.set()
            thread.join(30)
        report = publisher.settle(ledger, VT + 30)
        measured = [r for r in resumes if r is not None]
        results.add(
            tasks=len(publisher.returned),
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            recovery_s=max(measured, default=None),
            extra={
                "raised": len(publisher.raised),
                "raised_ran": publisher.raised_that_ran(ledger),
            },
        )
        where = locate(setup, app, report.lost)
        detail = (
            f"{report.summary()} on the broker: {where} resumes={resumes} "
            f"raised={publisher.raised[:3]}\n"
            f"{worker.log()[-3000:]}"
        )
        assert len(measured) == RESTARTS, f"worker did not resume within {RESUME_WITHIN}s: {detail}"
        assert max(measured) <= RESUME_WITHIN, detail
        assert not publisher.unexpected, publisher.unexpected[:3]
        assert not report.lost, detail  # every call that returned ran
        assert not report.concurrent, detail
        # Duplicates are recorded, not bounded here: besides what the worker held unacked, a
        # crashed RabbitMQ forgets acks it had not yet written to disk and delivers those
        # messages again (at-least-once); the issue asks nothing more of F7.
        assert worker.proc is not None and worker.proc.poll() is None, detail
