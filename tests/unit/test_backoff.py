"""Backoff delays grow, stay under the cap and spread; an incident is logged once, not per try."""

from __future__ import annotations

import logging
import random

import pytest

from taskq.backoff import Backoff, Incident, describe


def test_delays_double_up_to_the_cap_with_jitter_below_each_step() -> None:
    backoff = Backoff(first=0.2, cap=5.0, _random=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(5.0, 0.2 * 2**i) for i in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert max(delays) <= 5.0 and delays[-1] >= 2.5  # capped, and it got there
    backoff.reset()
    assert backoff.next_delay() <= 0.2


def test_workers_that_fail_together_do_not_retry_in_step() -> None:
    fleet = [Backoff(_random=random.Random(seed)) for seed in range(20)]
    for backoff in fleet:
        for _ in range(5):
            backoff.next_delay()
    sixth = {round(b.next_delay(), 3) for b in fleet}
    assert len(sixth) > 15


def test_an_incident_is_logged_once_then_at_powers_of_two(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.incident")
    incident = Incident(logger, "Connection to broker lost")
    with caplog.at_level(logging.INFO, logger="test.incident"):
        for _ in range(1000):
            incident.failed(ConnectionError("refused"), "Reconnecting in 1.0 s")
        incident.failed(OSError("no route to host"))  # a different failure: said at once
        incident.resolve()
        incident.resolve()  # nothing open: nothing said
    lines = [r.getMessage() for r in caplog.records]
    # the first, then the 2nd, 4th, ..., 512th repeat, the new failure, the recovery
    assert len(lines) == 1 + 9 + 1 + 1, lines
    assert lines[0] == "Connection to broker lost: ConnectionError: refused. Reconnecting in 1.0 s"
    assert "still ConnectionError: refused (512 attempts)" in lines[9]
    assert lines[10] == "Connection to broker lost: OSError: no route to host"
    assert lines[11] == "Connection to broker lost: recovered after 1001 failed attempt(s)"
    assert not incident.open


@pytest.mark.parametrize(
    ("error", "advice"),
    [
        ("database or disk is full", "the disk is full"),
        ("[Errno 28] No space left on device", "the disk is full"),
        ("OOM command not allowed when used memory > 'maxmemory'.", "out of memory"),
        ("READONLY You can't write against a read only replica.", "read-only replica"),
    ],
)
def test_a_failure_an_operator_can_fix_says_what_to_fix(error: str, advice: str) -> None:
    assert advice in describe(RuntimeError(error))
    assert describe(ConnectionError("refused")) == "ConnectionError: refused"
