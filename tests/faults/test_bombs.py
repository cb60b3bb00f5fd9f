"""F14: decompression bombs: 300 KB of gzip that inflates to 300 MB.

The worker must refuse each once its output passes task_max_message_size, without ever
holding the inflated body, keep the bytes as received in the dead letter, and leave a
dead-letter queue that lists in moments. Valid tasks sent alongside run as usual.
"""

from __future__ import annotations

import time
import uuid
import zlib
from pathlib import Path

import pytest

from taskq.amqp import make_queue
from taskq.deadletter import DeadLetters
from taskq.message import TaskMessage, to_headers
from tests.faults.fault_tasks import WORK
from tests.faults.harness import eventually, make_setup, queue_length, scenario
from tests.faults.report import Results
from tests.integration.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
BOMBS = 3
INFLATED = 300 * 1024 * 1024


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.timeout(240)
def test_f14_a_decompression_bomb_is_refused_without_inflating_it(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, results: Results
) -> None:
    """F14: three 300 KB bodies that inflate to 300 MB each, among valid tasks."""
    setup = make_setup(kind, request, tmp_path, "f14")  # default limit: 10 MiB
    setup.settings["task_dead_letter_queue"] = f"dead-{setup.queue}"
    bomb = zlib.compress(b"[[0.001], {}, {}]" + b" " * INFLATED)
    with scenario(setup) as app:
        work = app.tasks[WORK]
        worker = setup.worker()
        baseline = peak_rss_kib(worker.pid)
        ids = []
        with app.connection() as conn:
            producer = conn.Producer()
            queue = make_queue(setup.queue)
            for _ in range(BOMBS):
                task_id = str(uuid.uuid4())
                headers = to_headers(TaskMessage(id=task_id, task=WORK, args=(0.001,)))
                headers["compression"] = "application/x-gzip"
                producer.publish(
                    bomb, exchange="", routing_key=queue.name, declare=[queue],
                    content_type="application/json", content_encoding="utf-8",
                    headers=headers,
                )  # fmt: skip
                ids.append(task_id)
        valid = [work.delay(0.001).id for _ in range(20)]
        wait_for(lambda: set(valid) <= set(setup.ledger.completions()), 60, "valid tasks")
        letters = DeadLetters(app)
        eventually(lambda: queue_length(app, letters.name) >= BOMBS, 30)
        peak = peak_rss_kib(worker.pid)
        started = time.monotonic()
        dead = {letter.id: letter for letter in letters.list()}
        listed_in = time.monotonic() - started
        states = {app.AsyncResult(i).state for i in ids}
        results.add(
            tasks=len(valid) + BOMBS,
            extra={
                "dead": len(dead),
                "rss_growth_mib": round((peak - baseline) / 1024),
                "bomb_kib": len(bomb) // 1024,
                "list_s": round(listed_in, 2),
            },
        )
        detail = f"{sorted(dead)}\n{worker.log()[-3000:]}"
        assert set(dead) == set(ids), detail
        for letter in dead.values():
            assert "inflates to more than task_max_message_size" in letter.reason, detail
            assert letter.body == bomb, detail  # the bytes as received, not inflated
            assert letter.headers["taskq_dead"]["compression"] == "application/x-gzip"
        assert states == {"FAILURE"}, detail
        # It never held an inflated body: a single one would have been 300 MB.
        assert peak - baseline < 100 * 1024, f"peak RSS grew {peak - baseline} KiB\n{detail}"
