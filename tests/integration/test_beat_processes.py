"""``taskq beat`` as real processes: three beats on one Redis send each due time of a 1 s
entry once, one of them SIGKILLed mid-way; ``taskq worker -B`` on the embedded default.

Runs are counted by due time, not by the clock: the ids the worker ran are matched to the
entry's due times (a task id is derived from its entry and due time), and every due time
from the first run to the last must have run exactly once.
"""

from __future__ import annotations

import itertools
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from taskq.beat import Entry
from taskq.beat_store import RedisBeatStore
from tests.integration.helpers import WorkerProcess, wait_for

pytestmark = pytest.mark.integration
APP = "tests.integration.beat_tasks"
ENTRY = Entry.from_dict("every-second", {"task": "beattest.note", "schedule": 1.0})


class BeatProcess(WorkerProcess):
    """``python -m taskq -A <module> beat ...``, logging like the worker helper's."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "taskq", "-A", self.app, "beat", "-l", "info", *self.args]


def ledger_ids(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def due_times_run(ids: list[str], last: float) -> list[float]:
    """The due times (on the entry's one-second grid ending at ``last``) of the ids run."""
    by_id = {ENTRY.task_id(last - k): last - k for k in range(len(ids) + 600)}
    unknown = [i for i in ids if i not in by_id]
    assert not unknown, f"runs that are no due time of the entry: {unknown}"
    return sorted(by_id[i] for i in ids)


@pytest.fixture
def stopped() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for proc in started:
        proc.kill()


def test_three_beats_send_each_second_once_though_one_is_killed(
    redis_url: str, tmp_path: Path, stopped: list[WorkerProcess]
) -> None:
    db = redis_url.rsplit("/", 1)[0] + "/7"  # a database of its own: its state starts empty
    store = redis.Redis.from_url(db)
    store.flushdb()
    ledger = tmp_path / "ledger"
    env = {"BEAT_BROKER": db, "BEAT_LEDGER": str(ledger)}
    worker = WorkerProcess(APP, "-P", "prefork", "-c", "2", "-Q", "beattest", env=env).start()
    stopped.append(worker)
    beats = [BeatProcess(APP, env=env) for _ in range(3)]
    for beat in beats:
        stopped.append(beat.start(wait_ready=False))
    wait_for(lambda: len(ledger_ids(ledger)) >= 3, 60, "three runs")
    victim = beats[0]
    victim.signal(signal.SIGKILL)
    victim.wait(timeout=10)
    wait_for(lambda: len(ledger_ids(ledger)) >= 14, 90, "fourteen runs")
    for beat in beats[1:]:
        beat.signal(signal.SIGTERM)
        assert beat.wait(timeout=30) == 0, beat.log()
    assert worker.stop() == 0, worker.log()
    ids = ledger_ids(ledger)
    last = float(store.hget("taskq.beat:beattest:every-second", "last"))  # type: ignore[arg-type]
    dues = due_times_run(ids, last)
    detail = f"{Counter(ids).most_common(3)}\n" + "\n".join(b.log()[-2000:] for b in beats)
    assert len(set(ids)) == len(ids), detail  # no due time twice
    steps = {round(b - a, 3) for a, b in itertools.pairwise(dues)}
    assert steps == {1.0}, detail  # none skipped, from the first run to the last
    assert sum("Sending due task every-second" in b.log() for b in beats) >= 2  # they share


def test_worker_dash_b_runs_the_schedule_on_the_embedded_default(
    tmp_path: Path, stopped: list[WorkerProcess]
) -> None:
    ledger = tmp_path / "ledger"
    env = {"BEAT_DATA": str(tmp_path / "data"), "BEAT_LEDGER": str(ledger), "BEAT_BROKER": ""}
    worker = WorkerProcess(APP, "-P", "prefork", "-c", "1", "-Q", "beattest", "-B", env=env)
    stopped.append(worker.start())
    wait_for(lambda: len(ledger_ids(ledger)) >= 3, 60, "three runs")
    assert "beat:        1 periodic task(s) (-B)" in worker.log()
    assert worker.stop() == 0, worker.log()
    ids = ledger_ids(ledger)
    assert len(set(ids)) == len(ids)


def test_the_redis_store_claims_once_and_hands_over_abandoned_claims(redis_url: str) -> None:
    store = RedisBeatStore(redis_url, f"t{uuid.uuid4().hex[:6]}")
    try:
        assert store.start("e", 100.0) == 100.0 and store.start("e", 200.0) == 100.0
        assert store.claim("e", 101.0, "a", 0.3) and not store.claim("e", 101.0, "b", 0.3)
        assert store.claim("e", 101.0, "a", 0.3)  # its own claim, again
        # The lease runs out on the Redis server's clock.
        wait_for(lambda: store.abandoned("e") == [101.0], 10, "the claim to run out")
        assert store.claim("e", 101.0, "b", 30)  # taken over
        store.sent("e", 101.0)
        assert store.abandoned("e") == []
        assert not store.claim("e", 101.0, "c", 30)  # sent
        assert not store.claim("e", 100.5, "c", 30)  # before the mark, never claimed
        assert store.claim("e", 102.0, "c", 30)
        store.forget("e")
        assert store.start("e", 300.0) == 300.0
    finally:
        store.forget("e")
        store.close()


def test_on_rabbitmq_two_beats_keep_their_state_in_the_redis_result_backend(
    amqp_url: str, redis_url: str, tmp_path: Path, stopped: list[WorkerProcess]
) -> None:
    results = redis_url.rsplit("/", 1)[0] + "/8"
    store = redis.Redis.from_url(results)
    store.flushdb()
    ledger = tmp_path / "ledger"
    env = {"BEAT_BROKER": amqp_url, "BEAT_BACKEND": results, "BEAT_LEDGER": str(ledger)}
    worker = WorkerProcess(APP, "-P", "prefork", "-c", "1", "-Q", "beattest", env=env).start()
    stopped.append(worker)
    beats = [BeatProcess(APP, env=env) for _ in range(2)]
    for beat in beats:
        stopped.append(beat.start(wait_ready=False))
    wait_for(lambda: len(ledger_ids(ledger)) >= 5, 60, "five runs")
    for beat in beats:
        beat.signal(signal.SIGTERM)
        assert beat.wait(timeout=30) == 0, beat.log()
    assert "state:  RedisBeatStore" in beats[0].log()
    last = float(store.hget("taskq.beat:beattest:every-second", "last"))  # type: ignore[arg-type]
    assert worker.stop() == 0, worker.log()
    ids = ledger_ids(ledger)
    assert len(set(ids)) == len(ids)
    dues = due_times_run(ids, last)
    assert {round(b - a, 3) for a, b in itertools.pairwise(dues)} == {1.0}
