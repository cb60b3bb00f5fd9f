"""The dashboard's state: events in, rows out, in bounded memory, whatever the order."""

from __future__ import annotations

from typing import Any

import pytest

from taskq.dashboard.series import SLOT, SPAN, Series, percentile
from taskq.dashboard.state import HIDDEN, OTHER, FleetState, Limits
from taskq.metrics import RUNTIME_BUCKETS


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def ev(kind: str, uuid: str = "t1", ts: float = 1.0, host: str = "w1@h", **fields: Any) -> dict:
    return {"type": kind, "uuid": uuid, "timestamp": ts, "hostname": host, **fields}


def received(uuid: str = "t1", ts: float = 1.0, name: str = "proj.add", **fields: Any) -> dict:
    return ev("task-received", uuid, ts, **{"name": name, "args": "(1, 2)", "kwargs": "{}",
                                           "retries": 0, **fields})  # fmt: skip


def test_a_task_goes_through_its_states() -> None:
    state = FleetState()
    state.apply(received())
    state.apply(ev("task-started", ts=2.0))
    state.apply(ev("task-succeeded", ts=3.0, result="3", runtime=0.25))
    row = state.task_detail("t1")
    assert row is not None
    assert (row["state"], row["name"], row["worker"]) == ("SUCCESS", "proj.add", "w1@h")
    assert (row["received"], row["started"], row["finished"]) == (1.0, 2.0, 3.0)
    assert (row["args"], row["result"], row["runtime"]) == ("(1, 2)", "3", 0.25)
    assert [e["type"] for e in row["events"]] == ["task-received", "task-started",
                                                  "task-succeeded"]  # fmt: skip


def test_a_late_event_does_not_move_a_task_back() -> None:
    state = FleetState()
    state.apply(received(ts=1.0))
    state.apply(ev("task-succeeded", ts=3.0, result="3", runtime=0.1))
    state.apply(ev("task-started", ts=2.0))  # came late, from another batch
    row = state.task_detail("t1")
    assert row is not None and row["state"] == "SUCCESS" and row["started"] == 2.0


def test_events_with_one_timestamp_keep_their_order() -> None:
    state = FleetState()
    state.apply(received(ts=5.0))
    state.apply(ev("task-started", ts=5.0))
    assert state.task_detail("t1")["state"] == "STARTED"  # type: ignore[index]


def test_a_retried_task_is_received_again() -> None:
    state = FleetState()
    state.apply(received(ts=1.0))
    state.apply(ev("task-retried", ts=2.0, exception="ValueError('x')", traceback="Traceback"))
    assert state.task_detail("t1")["state"] == "RETRY"  # type: ignore[index]
    state.apply(received(ts=3.0, retries=1))
    row = state.task_detail("t1")
    assert row is not None and (row["state"], row["retries"]) == ("RECEIVED", 1)
    assert row["traceback"] == "Traceback"


def test_tasks_beyond_the_limit_are_forgotten_stalest_first() -> None:
    state = FleetState(Limits(max_tasks=3))
    for i in range(3):
        state.apply(received(f"t{i}", ts=float(i)))
    state.apply(ev("task-started", "t0", ts=10.0))  # t0 changed last: t1 is the stalest
    state.apply(received("t3", ts=11.0))
    assert [r["id"] for r in state.task_rows()[0]] == ["t3", "t0", "t2"]
    assert state.task_detail("t1") is None


def test_changed_since_gives_only_the_rows_changed_after_a_version() -> None:
    state = FleetState()
    state.apply(received("a"))
    state.apply(received("b"))
    seen = state.version
    state.apply(ev("task-started", "a", ts=2.0))
    state.apply(received("c"))
    assert [r["id"] for r in state.changed_since(seen)] == ["c", "a"]
    assert state.changed_since(state.version) == []
    assert [r["id"] for r in state.changed_since(0, limit=2)] == ["c", "a"]


def test_filters_and_totals() -> None:
    state = FleetState()
    state.apply(received("a", name="proj.add"))
    state.apply(received("b", name="proj.mul"))
    state.apply(ev("task-started", "b", ts=2.0, host="w2@h"))
    rows, total = state.task_rows(name="proj.mul")
    assert ([r["id"] for r in rows], total) == (["b"], 1)
    assert [r["id"] for r in state.task_rows(state="RECEIVED")[0]] == ["a"]
    assert [r["id"] for r in state.task_rows(worker="w2@h")[0]] == ["b"]
    assert state.task_rows(limit=1)[1] == 2
    assert state.task_names() == ["proj.add", "proj.mul"]


def test_hide_args_keeps_no_argument_or_result() -> None:
    state = FleetState(Limits(hide_args=True))
    state.apply(received(args="('secret',)"))
    state.apply(ev("task-succeeded", ts=2.0, result="'token-123'", runtime=0.1))
    row = state.task_detail("t1")
    assert row is not None
    assert (row["args"], row["kwargs"], row["result"]) == (HIDDEN, HIDDEN, HIDDEN)
    assert "secret" not in repr(state.tasks) and "token-123" not in repr(state.tasks)


def test_workers_online_by_heartbeat_and_offline_by_silence_or_goodbye() -> None:
    clock = Clock()
    state = FleetState(clock=clock)
    beat = {"type": "worker-heartbeat", "hostname": "w1@h", "freq": 2.0, "active": 1,
            "processed": 7, "loadavg": [0.5, 0.4, 0.3], "timestamp": clock.now,
            "sw_ident": "py-taskq", "sw_ver": "1.0", "pid": 42}  # fmt: skip
    state.apply(beat)
    (worker,) = state.worker_rows()
    assert worker["online"] and (worker["active"], worker["processed"], worker["pid"]) == (1, 7, 42)
    clock.now += 2.0 * 2 + 6  # two missed beats and more than the margin
    assert not state.worker_rows()[0]["online"]
    state.apply(beat)
    assert state.online_workers() == ["w1@h"]
    state.apply({**beat, "type": "worker-offline"})
    assert not state.worker_rows()[0]["online"]


def test_remote_control_info_reaches_a_known_worker_only() -> None:
    state = FleetState()
    state.set_worker_info("ghost@h", 4, ["q"])
    assert state.worker_rows() == []
    state.apply({"type": "worker-online", "hostname": "w1@h", "timestamp": 1.0})
    before = state.workers_version
    state.set_worker_info("w1@h", 4, ["celery", "math"])
    (worker,) = state.worker_rows()
    assert (worker["pool_size"], worker["queues"]) == (4, ["celery", "math"])
    assert state.workers_version > before


def test_workers_are_bounded_forgetting_the_departed_first() -> None:
    clock = Clock()
    state = FleetState(Limits(max_workers=2), clock=clock)
    state.apply({"type": "worker-offline", "hostname": "gone@h"})
    clock.now += 1
    state.apply({"type": "worker-heartbeat", "hostname": "w1@h"})
    state.apply({"type": "worker-heartbeat", "hostname": "w2@h"})
    assert [w["hostname"] for w in state.worker_rows()] == ["w1@h", "w2@h"]


def test_counters_stop_growing_at_max_names() -> None:
    state = FleetState(Limits(max_names=2))
    for i, name in enumerate(["a", "b", "c", "d"]):
        state.apply(received(f"t{i}", name=name))
    counts, _ = state.counters()
    assert counts == {("a", "received"): 1, ("b", "received"): 1, (OTHER, "received"): 2}


def test_runtime_histogram_and_chart_count_what_finished() -> None:
    clock = Clock()
    state = FleetState(clock=clock)
    for i, runtime in enumerate([0.004, 0.2, 0.2, 7.0]):
        state.apply(received(f"t{i}"))
        state.apply(ev("task-succeeded", f"t{i}", ts=2.0, result="1", runtime=runtime))
    state.apply(received("bad"))
    state.apply(ev("task-failed", "bad", ts=2.0, exception="ValueError()", traceback="tb"))
    _, runtimes = state.counters()
    buckets = runtimes["proj.add"]
    assert sum(buckets[:-1]) == 4 and buckets[-1] == round(7.404 * 1e6)
    assert buckets[RUNTIME_BUCKETS.index(0.005)] == 1 and buckets[RUNTIME_BUCKETS.index(10)] == 1
    last = state.chart(60)[-1]
    assert (last.succeeded, last.failed) == (4, 1)
    assert last.p50 == pytest.approx(0.2, rel=0.16) and last.p99 == pytest.approx(7.0, rel=0.16)


def test_series_keeps_one_hour_and_forgets_the_rest() -> None:
    series = Series()
    start = 1_800_000_000.0
    series.add(start, True, 0.1)
    series.add(start + SPAN + SLOT, False, None)  # the same ring slot, an hour on
    points = series.points(start + SPAN + SLOT, step=60)
    assert len(points) == SPAN // 60
    assert sum(p.succeeded for p in points) == 0 and sum(p.failed for p in points) == 1
    assert [p.t for p in points] == sorted(p.t for p in points)


def test_percentile_of_buckets() -> None:
    assert percentile([0, 0, 0], 0.5) is None
    assert percentile([1, 0, 0], 0.99) == pytest.approx(1e-4)


def test_malformed_events_are_ignored() -> None:
    state = FleetState()
    for event in [{}, {"type": "task-started"}, {"type": "task-started", "uuid": 5},
                  {"type": "worker-heartbeat"}, {"type": "worker-heartbeat", "hostname": ""},
                  {"type": "made-up", "uuid": "x"}]:  # fmt: skip
        state.apply(event)
    assert state.task_rows() == ([], 0) and state.worker_rows() == []
    assert state.events_seen == 6
