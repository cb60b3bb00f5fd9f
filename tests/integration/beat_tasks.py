"""The app of the scheduler tests: one periodic task that notes each run in a ledger file.

Configured from the environment the tests set on the beat and worker processes:
BEAT_BROKER (empty: the embedded default in BEAT_DATA), BEAT_LEDGER (a file).
"""

from __future__ import annotations

import os

from taskq import Taskq

app = Taskq(
    "beattest",
    broker=os.environ.get("BEAT_BROKER") or None,
    backend=os.environ.get("BEAT_BACKEND") or None,
    embedded_data_dir=os.environ.get("BEAT_DATA") or None,
    task_default_queue="beattest",
    beat_claim_lease=3.0,
    beat_schedule={"every-second": {"task": "beattest.note", "schedule": 1.0}},
)


@app.task(name="beattest.note", bind=True)
def note(self: object) -> str:
    task_id = self.request.id  # type: ignore[attr-defined]
    # One short line per run, appended whole (O_APPEND): the processes share the file.
    with open(os.environ["BEAT_LEDGER"], "a") as ledger:
        ledger.write(f"{task_id}\n")
    return str(task_id)
