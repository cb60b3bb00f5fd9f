"""F20: Redis behind Sentinel; the master is SIGKILLed mid-run and a replica takes over.

A master, one replica and three sentinels (quorum 2) on loopback; a prefork worker and a
publishing client reach them only through ``sentinel://`` URLs, for the broker and for
results. The master is killed with SIGKILL while tasks flow; the sentinels promote the
replica; the worker, the publishing client and a result read all go on with the new master.

Redis replicates asynchronously: a publish the old master acknowledged but had not yet sent
to the replica is gone with it. So the test counts, rather than forbids, lost tasks, and
checks that each of them was published in the moments before the kill; a task published
after the kill is never lost. The times (promotion, client, worker, result) are measured
and recorded in the results table, not asserted: the waits are generous bounds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from threading import Thread

import pytest

from tests.faults.fault_tasks import WORK
from tests.faults.harness import Publisher, eventually, locate, make_setup, scenario
from tests.faults.ledger import Ledger
from tests.faults.report import Results
from tests.integration.helpers import wait_for
from tests.servers import RedisServer, SentinelServer, replica_pair

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MASTER_NAME = "mymaster"
VT = 5.0  # visibility timeout: what the worker held on the old master comes back after it
FOLLOW_WITHIN = 30.0  # generous bound on each wait after the kill (the issue asks for 10 s)
# A lost task must have been published this close before the kill: older writes had long
# reached the replica (on loopback it reads the stream within milliseconds).
REPLICATION_WINDOW = 5.0
# Redis 7 waits 5 s before a diskless full sync, to gather replicas: none to gather here.


@dataclasses.dataclass
class Group:
    master: RedisServer
    replica: RedisServer
    sentinels: list[SentinelServer]

    def url(self, db: int) -> str:
        """The sentinel:// list, as a user writes it, for database ``db``."""
        return ";".join(f"{sentinel.url}/{db}" for sentinel in self.sentinels)

    def master_port(self) -> int | None:
        """The master's port, as the first sentinel that answers says."""
        for sentinel in self.sentinels:
            found = sentinel.master_address()
            if found is not None:
                return found[1]
        return None


def _ready(sentinel: SentinelServer) -> bool:
    # Each sentinel must know the replica and its two peers before a failover can be agreed.
    state = sentinel.master_state()
    return bool(
        state["num-other-sentinels"] == 2
        and not state["is_sdown"]
        and sentinel.promotable_replicas() == 1
    )


@pytest.fixture
def group() -> Iterator[Group]:
    with contextlib.ExitStack() as stack:
        try:
            master, replica = replica_pair(stack)
            sentinels = [
                stack.enter_context(SentinelServer(master.port, MASTER_NAME)) for _ in range(3)
            ]
            wait_for(lambda: all(_ready(s) for s in sentinels), 60, "the sentinels to agree")
        except Exception as exc:
            pytest.fail(f"cannot start the Sentinel group: {exc}", pytrace=False)
        yield Group(master, replica, sentinels)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["sentinel"])
def test_f19_sentinel_failover(
    kind: str, group: Group, request: pytest.FixtureRequest, tmp_path: Path, results: Results
) -> None:
    """F20: the Redis master SIGKILLed mid-run; the sentinels promote the replica; the worker
    and the client follow; only publishes not yet replicated can be lost, and are counted."""
    options = {"master_name": MASTER_NAME}
    setup = make_setup(
        "redis", request, tmp_path, "f19", broker=group.url(0), visibility_timeout=VT,
        result_backend_transport_options=options,
    )  # fmt: skip
    setup.settings["broker_transport_options"].update(options)
    setup = dataclasses.replace(setup, backend=group.url(1))
    ledger = setup.ledger
    with scenario(setup) as app:
        worker = setup.worker()
        publisher = Publisher(app)
        thread = Thread(target=publisher.run, name="publisher", daemon=True)
        thread.start()
        times: dict[str, float | None] = {}
        try:
            eventually(lambda: len(ledger.completions()) >= 50, 30)
            old = group.master.port
            group.master.kill()  # SIGKILL: no clean shutdown, no last writes sent
            killed_at = time.monotonic()  # gone: whatever returns after this, it did not take
            eventually(lambda: group.master_port() not in (None, old), FOLLOW_WITHIN, 0.05)
            times["promoted_s"] = _since(killed_at, group.master_port() == group.replica.port)
            eventually(lambda: _client_followed(publisher, killed_at) is not None, FOLLOW_WITHIN)
            times["client_s"] = _client_followed(publisher, killed_at)
            eventually(lambda: _worker_followed(ledger, publisher, killed_at), FOLLOW_WITHIN)
            times["worker_s"] = _worker_followed(ledger, publisher, killed_at)
            began = time.monotonic()
            got = app.tasks[WORK].delay(0.0).get(timeout=FOLLOW_WITHIN)
            times["result_s"] = time.monotonic() - began  # a fresh task, sent and read back
            done = len(ledger.completions())
            eventually(lambda: len(ledger.completions()) >= done + 30, 30)
        finally:
            publisher.stop.set()
            thread.join(30)
        sent = dict(publisher.returned)  # id -> when its publish returned
        report = publisher.settle(ledger, VT + 25)
        lost_ages = sorted(killed_at - sent[task_id] for task_id in report.lost)
        raised_ran = publisher.raised_that_ran(ledger)
        results.add(
            tasks=len(sent),
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            recovery_s=times.get("worker_s"),
            extra={
                **times,
                "raised": len(publisher.raised),
                "raised_ran": raised_ran,
                "lost_age_s": lost_ages,
            },
        )
        detail = (
            f"{report.summary()} times={times} lost ages={lost_ages} "
            f"on the broker: {locate(setup, app, report.lost)} raised={publisher.raised[:3]}\n"
            f"{worker.log()[-3000:]}"
        )
        print(f"\nF19 sentinel failover: {len(sent)} tasks, times {times}, lost {lost_ages}")
        assert got, detail
        assert not publisher.unexpected, publisher.unexpected[:3]
        # What asynchronous replication can lose: publishes the old master acknowledged just
        # before it died. Nothing published after the kill, nor long before it.
        assert all(0 <= age <= REPLICATION_WINDOW for age in lost_ages), detail
        assert worker.proc is not None and worker.proc.poll() is None, detail


def _since(start: float, happened: bool) -> float | None:
    return time.monotonic() - start if happened else None


def _client_followed(publisher: Publisher, killed_at: float) -> float | None:
    """Seconds from the kill to the first publish that returned after it."""
    after = [when for _, when in publisher.returned if when > killed_at]
    return min(after) - killed_at if after else None


def _worker_followed(ledger: Ledger, publisher: Publisher, killed_at: float) -> float | None:
    """Seconds from the kill to the first run of a task published after it: only the new
    master had that one, so the worker consumes from it."""
    fresh = {task_id for task_id, when in publisher.returned if when > killed_at}
    starts = [e["t"] for e in ledger.events() if e["event"] == "start" and e["id"] in fresh]
    return min(starts) - killed_at if starts else None
