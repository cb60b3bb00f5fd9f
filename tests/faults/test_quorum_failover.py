"""F21: a quorum queue on a 3-node RabbitMQ cluster; the node that holds the queue's
leader, and the worker's and the client's connections, is killed with SIGKILL mid-run and
restarted. Every publish that returned ran at least once; every other one raised; the
worker fails over to another node and goes on.

Slow (a cluster takes ~25 s to form on this machine): marked ``cluster``, run by
``make test-cluster``, not by ``make test``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import RabbitCluster
from tests.faults.harness import Publisher, eventually, make_setup, scenario
from tests.faults.report import Results
from tests.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.cluster]

TOTAL = 1000  # tasks published with confirms
KILL_AFTER = 300  # completions before the leader's node is killed


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    yield from serve(RabbitCluster, "a 3-node RabbitMQ cluster")


@pytest.mark.parametrize("kind", ["amqp"])
@pytest.mark.timeout(600)
def test_f21_quorum_leader_node_killed(
    kind: str,
    cluster: RabbitCluster,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    results: Results,
) -> None:
    """F21: the node holding a quorum queue's leader is SIGKILLed mid-run and restarted."""
    setup = make_setup(kind, request, tmp_path, "f21", broker=cluster.url,
                       task_default_queue_type="quorum")  # fmt: skip
    ledger = setup.ledger
    with scenario(setup) as app:
        worker = setup.worker()
        # The worker declared the queue from the first node it reached: the leader is
        # there (RabbitMQ's client-local placement), with the worker's connection.
        leader = cluster.leader_of(setup.queue)
        publisher = Publisher(app)
        thread = threading.Thread(target=publisher.run, name="publisher", daemon=True)
        thread.start()
        try:
            assert eventually(lambda: len(ledger.completions()) >= KILL_AFTER, 120), setup.logs()
            leader.kill()
            killed_at = time.monotonic()  # once it is gone: publishes before it prove nothing
            # Failover: from the kill to the first run of a task published after it (one the
            # worker had taken before would prove nothing): the client and the worker both
            # moved to another node, and the queue has a new leader.
            failed_over = eventually(lambda: publisher.resumed(ledger, killed_at), 120)
            failover_s = publisher.resumed(ledger, killed_at)
            new_leader = cluster.leader_of(setup.queue)
            leader.start()  # from this thread: a node dies with the thread that started it
            cluster.wait_clustered(120)  # it rejoined, and took its place among the members
            eventually(lambda: len(publisher.returned) + len(publisher.raised) >= TOTAL, 300)
        finally:
            publisher.stop.set()
            thread.join(60)
        report = publisher.settle(ledger, 180)
        raised_ran = publisher.raised_that_ran(ledger)
        sent = publisher.returned
        results.add(
            tasks=len(sent),
            lost=len(report.lost),
            duplicates=report.duplicates,
            concurrent=len(report.concurrent),
            recovery_s=failover_s,
            extra={"raised": len(publisher.raised), "raised_ran": raised_ran,
                   "leader": f"{leader.nodename}->{new_leader.nodename}"},
        )  # fmt: skip
        detail = (
            f"{report.summary()} failover={failover_s} raised={publisher.raised[:3]}\n"
            f"{setup.logs(3000)}"
        )
        assert failed_over, f"no task ran after the leader's node was killed: {detail}"
        assert new_leader.nodename != leader.nodename, detail
        assert not publisher.unexpected, publisher.unexpected[:3]
        assert not report.lost, detail  # every publish that returned ran
        assert not report.concurrent, detail
        assert worker.proc is not None and worker.proc.poll() is None, detail
    print(f"\nF21: failover {failover_s:.1f} s; {len(sent)} confirmed, "  # type: ignore[str-format]
          f"{len(publisher.raised)} raised ({raised_ran} of them ran anyway), "
          f"{report.duplicates} duplicates")  # fmt: skip
