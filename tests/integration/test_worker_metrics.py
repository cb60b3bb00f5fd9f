"""``taskq worker --metrics-port``: a real prefork worker on Redis serves Prometheus metrics
that prometheus_client's own parser reads, and the counters match the tasks sent."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskq import Taskq
from tests.integration.helpers import WorkerProcess, wait_for
from tests.integration.worker_tasks import itest_env, make_app

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(redis_url: str, redis_backend_url: str) -> Iterator[tuple[Taskq, WorkerProcess]]:
    env = itest_env(redis_url, redis_backend_url, None)
    worker = WorkerProcess("tests.integration.worker_tasks", "-P", "prefork", "-c", "2",
                           "-Q", "taskq,math", "-n", "metered@%h", "--metrics-port", "0",
                           env=env).start()  # fmt: skip
    app = make_app(redis_url, redis_backend_url, None)
    try:
        yield app, worker
    finally:
        app.close()
        assert worker.stop() == 0, worker.log()


def scrape(worker: WorkerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = re.search(r"Metrics on (http://[\d.]+:\d+/metrics)", worker.log())
    assert found, worker.log()
    with urllib.request.urlopen(found.group(1), timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:  # fmt: skip
    return samples.get((name, tuple(sorted(labels.items()))))


def test_counters_match_the_tasks_sent(fleet: tuple[Taskq, WorkerProcess]) -> None:
    app, worker = fleet
    added = [app.tasks["itest.add"].delay(i, i) for i in range(5)]
    failed = [app.tasks["itest.fail"].delay("x") for _ in range(2)]
    flaky = app.tasks["itest.flaky"].delay()
    assert [r.get(timeout=30) for r in added] == [0, 2, 4, 6, 8]
    assert flaky.get(timeout=30) == 2
    for result in failed:
        with pytest.raises(ValueError):
            result.get(timeout=30)
    expected = {
        ("taskq_tasks_succeeded_total", "itest.add"): 5,
        ("taskq_tasks_received_total", "itest.add"): 5,
        ("taskq_tasks_started_total", "itest.add"): 5,
        ("taskq_task_runtime_seconds_count", "itest.add"): 5,
        ("taskq_tasks_failed_total", "itest.fail"): 2,
        ("taskq_tasks_retried_total", "itest.flaky"): 2,
        ("taskq_tasks_succeeded_total", "itest.flaky"): 1,
        ("taskq_tasks_received_total", "itest.flaky"): 3,  # the first run and two retries
    }

    def counted() -> dict[tuple[str, str], float | None]:
        samples = scrape(worker)
        return {key: value(samples, key[0], task=key[1]) for key in expected}

    # The outcome is counted by the worker's main process once its child reports it,
    # which may be just after the result is stored.
    wait_for(lambda: counted() == expected, 30, f"the counters: {counted()}")
    samples = scrape(worker)
    assert value(samples, "taskq_worker_up", worker=worker_name(worker)) == 1.0
    assert value(samples, "taskq_tasks_running", worker=worker_name(worker)) == 0.0
    assert value(samples, "taskq_queue_depth", queue="taskq") == 0.0
    assert value(samples, "taskq_dead_letters", queue="taskq.dead") is not None
    assert value(samples, "taskq_broker_reconnects_total") == 0.0
    assert not any("id" in dict(labels) for _, labels in samples)  # never a task id


def worker_name(worker: WorkerProcess) -> str:
    found = re.search(r"(metered@\S+?)[);\s]", worker.log())
    assert found, worker.log()
    return found.group(1)
