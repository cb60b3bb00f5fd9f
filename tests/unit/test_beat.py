"""The scheduler's logic on a clock the test moves: entries, claims shared by several beats,
a beat that dies holding a claim, missed runs, and the stores (SQLite and in memory).

Tasks go to kombu's memory broker; the test reads them back off the queue.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from taskq import Taskq
from taskq.beat import Beat, Entry, check_tasks, entries_of, make_beat, open_store
from taskq.beat_store import MemoryBeatStore, SqliteBeatStore
from taskq.exceptions import ConfigurationError
from taskq.schedules import crontab, schedule

START = datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = START):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def app() -> Iterator[Taskq]:
    queue = f"beat-{uuid.uuid4().hex[:8]}"
    app = Taskq("beatapp", broker="memory://", backend="memory://", task_default_queue=queue,
                set_as_current=False)  # fmt: skip

    @app.task(name="beat.ping")
    def ping(n: int = 0) -> int:
        return n

    yield app
    app.close()


def sent_ids(app: Taskq) -> list[str]:
    """The task ids on the app's queue, in order (the queue is emptied)."""
    found = []
    with Connection("memory://") as conn, conn.SimpleQueue(app.conf.task_default_queue) as q:
        while True:
            try:
                message = q.get(block=False)
            except q.Empty:
                return found
            found.append(message.headers["id"])
            message.ack()


def every_second() -> Entry:
    return Entry.from_dict("tick", {"task": "beat.ping", "schedule": 1.0, "args": (1,)})


def test_entries_read_as_celerys_and_bad_ones_say_why(app: Taskq) -> None:
    app.conf.beat_schedule = {
        "nightly": {"task": "beat.ping", "schedule": crontab(hour=3, minute=0), "args": [7],
                    "options": {"queue": "reports", "expires": 3600}},
        "tick": {"task": "beat.ping", "schedule": 10.0, "relative": True},
    }  # fmt: skip
    app.add_periodic_task(30.0, app.tasks["beat.ping"].s(5), name="every 30")
    entries = {e.name: e for e in entries_of(app)}
    assert entries["nightly"].args == (7,) and entries["nightly"].options["queue"] == "reports"
    assert entries["tick"].schedule == schedule(10, relative=True)
    assert entries["every 30"].args == (5,) and entries["every 30"].schedule == schedule(30)
    for bad, message in [
        ({"x": {"schedule": 1}}, "'x': 'task' must be a task name"),
        ({"x": {"task": "t"}}, "'x': 'schedule' is missing"),
        ({"x": {"task": "t", "schedule": 1, "when": 2}}, "unknown key\\(s\\) when"),
        ({"x": {"task": "t", "schedule": "daily"}}, "schedule must be seconds"),
        ({"x": {"task": "t", "schedule": 1, "missed": "all"}}, "'missed' must be"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            app.conf.beat_schedule = bad
    unknown = [Entry.from_dict("typo", {"task": "beat.pong", "schedule": 1})]
    with pytest.raises(ConfigurationError, match=r"'typo' \(beat\.pong\)"):
        check_tasks(app, unknown)


def test_three_beats_send_each_due_time_once(app: Taskq) -> None:
    clock, store = Clock(), MemoryBeatStore()
    beats = [Beat(app, store, [every_second()], clock=clock, lease=5) for _ in range(3)]
    for beat in beats:
        beat.setup()
    for step in range(1, 101):  # 10 s in steps of 0.1 s; every beat looks at every step
        clock.now = START + step / 10
        for beat in beats:
            beat.tick()
    ids = sent_ids(app)
    assert len(ids) == 10 and len(set(ids)) == 10
    assert sum(b.sent for b in beats) == 10


def test_a_due_time_claimed_by_a_beat_that_died_is_sent_once_by_another(app: Taskq) -> None:
    clock = Clock()
    store = MemoryBeatStore(clock)
    doomed, survivor = (Beat(app, store, [every_second()], clock=clock, lease=3) for _ in "ab")
    doomed.setup()
    survivor.setup()
    clock.now += 1.0
    # The doomed beat claims the first due time and dies before sending it.
    due = doomed._due[0].next
    assert store.claim("tick", due, doomed.owner, doomed.lease)
    for step in range(1, 61):  # 6 s more; only the survivor looks now
        clock.now = START + 1.0 + step / 10
        survivor.tick()
    ids = sent_ids(app)
    expected = [every_second().task_id(START + n) for n in range(1, 8)]
    assert sorted(ids) == sorted(expected)  # the first one too, late, and once


def test_runs_missed_while_no_beat_ran_are_sent_once_or_skipped(app: Taskq) -> None:
    clock = Clock()
    store = MemoryBeatStore(clock)
    entries = [every_second(), Entry.from_dict("quiet", {"task": "beat.ping", "schedule": 1.0,
                                                         "missed": "skip"})]  # fmt: skip
    first = Beat(app, store, entries, clock=clock)
    first.setup()
    clock.now += 2.05
    first.tick()
    assert len(sent_ids(app)) == 4  # two each
    clock.now += 3600  # every beat down for an hour
    second = Beat(app, store, entries, clock=clock)
    second.setup()
    second.tick()
    ids = sent_ids(app)
    assert ids == [every_second().task_id(clock.now // 1 * 1)]  # the last missed one only


def test_a_crontab_entry_runs_on_the_wall_clock_of_the_timezone(app: Taskq) -> None:
    app.conf.timezone = "Europe/Paris"
    clock, store = Clock(datetime(2026, 3, 29, 0, 0, tzinfo=UTC).timestamp()), MemoryBeatStore()
    entry = Entry.from_dict("night", {"task": "beat.ping", "schedule": crontab(hour=2, minute=30)})
    beat = Beat(app, store, [entry], clock=clock)
    beat.setup()
    # 02:30 does not exist in Paris that night: the run is at 03:00 CEST, 01:00 UTC.
    assert beat._due[0].next == datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_stores_claim_once_and_hand_over_abandoned_claims(kind: str, tmp_path: Path) -> None:
    clock = Clock()
    store: Any = (
        SqliteBeatStore(tmp_path / "beat.sqlite3", clock)
        if kind == "sqlite"
        else MemoryBeatStore(clock)
    )
    assert store.start("e", 100.0) == 100.0 and store.start("e", 200.0) == 100.0
    assert store.claim("e", 101.0, "a", 5) and not store.claim("e", 101.0, "b", 5)
    assert store.claim("e", 101.0, "a", 5)  # its own claim, again
    assert store.abandoned("e") == []
    clock.now += 6
    assert store.abandoned("e") == [101.0]
    assert store.claim("e", 101.0, "b", 5)  # taken over
    store.sent("e", 101.0)
    assert not store.claim("e", 101.0, "c", 5)  # sent
    assert not store.claim("e", 100.5, "c", 5)  # before the mark, never claimed: skipped
    assert store.claim("e", 102.0, "c", 5)
    store.forget("e")
    assert store.start("e", 300.0) == 300.0
    store.close()


def test_the_store_follows_the_broker(app: Taskq, tmp_path: Path) -> None:
    assert isinstance(open_store(app), MemoryBeatStore)
    embedded = Taskq("e", embedded_data_dir=str(tmp_path), set_as_current=False)
    store = open_store(embedded)
    assert isinstance(store, SqliteBeatStore) and store.path.startswith(str(tmp_path))
    store.close()
    rabbit_only = Taskq("r", broker="amqp://localhost//", set_as_current=False)
    with pytest.raises(ConfigurationError, match="set result_backend to redis://"):
        open_store(rabbit_only)


def test_make_beat_imports_reads_and_checks_the_schedule(app: Taskq) -> None:
    @app.on_after_configure.connect
    def add(sender: Taskq, **_: Any) -> None:
        sender.add_periodic_task(5, sender.tasks["beat.ping"].s(), name="added")

    app.conf.beat_schedule = {"conf": {"task": "beat.ping", "schedule": 1}}
    beat = make_beat(app)
    assert [e.name for e in beat.entries] == ["added", "conf"]
    assert "added: beat.ping <every 5 s>" in beat.schedule_text()


class AwayAtFirst(MemoryBeatStore):
    """A store that fails its first calls, as a Redis still starting would."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures

    def start(self, entry: str, now: float) -> float:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store not up yet")
        return super().start(entry, now)


def test_a_store_away_at_start_is_waited_for(app: Taskq, caplog: pytest.LogCaptureFixture) -> None:
    store = AwayAtFirst(failures=2)
    beat = Beat(app, store, [every_second()], lease=0.02)
    stop = threading.Event()
    runner = threading.Thread(target=beat.run, args=(stop,))
    runner.start()
    try:
        wait_until(lambda: beat.sent >= 1, 30)
    finally:
        stop.set()
        runner.join(10)
    assert store.failures == 0 and sent_ids(app)
    assert "could not look at the schedule: " in caplog.text


def wait_until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
