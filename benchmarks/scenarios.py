"""One run of each scenario, for one framework, on the broker the harness started.

Every run starts from an empty broker and an empty counter, runs the client in its own
process (benchmarks/client.py) and the worker as its real command line, and stops that
worker in a ``finally``. Numbers come back as a flat ``{metric: value}`` dict.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.servers import tail

from .counter import COUNT_KEY, FIRST_KEY, LAST_KEY
from .procs import BenchError, Worker

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
# How often the harness looks whether the last task is done. The rates come from the
# completion times the tasks themselves store in Redis, so this only decides how soon the
# run ends after its last task, and keeps the harness's own load on Redis and the CPUs low.
POLL_INTERVAL = 0.1  # seconds
# Celery's start-up steps that a benchmark usually turns off; the defaults are run too.
CELERY_FAST_FLAGS = ("--without-gossip", "--without-mingle", "--without-heartbeat")


@dataclass(frozen=True)
class Framework:
    name: str  # "taskq" or "celery"
    python: str  # the interpreter of the environment that has it

    def worker_argv(
        self, concurrency: int, celery_defaults: bool = False, events: bool = False
    ) -> list[str]:
        common = ["worker", "-c", str(concurrency), "-l", "warning", *(["-E"] if events else [])]
        if self.name == "taskq":
            return [self.python, "-m", "taskq", "-A", "benchmarks.bench_tasks", *common]
        flags = [] if celery_defaults else list(CELERY_FAST_FLAGS)
        celery = [self.python, "-m", "celery", "-A", "benchmarks.celery_tasks"]
        return [*celery, *common, "-P", "prefork", *flags]


@dataclass(frozen=True)
class Bench:
    """Where the servers are and how long to wait; shared by every run."""

    broker_url: str  # redis://.../0 or amqp://...
    redis_port: int  # results (db 1) and the completion counter (db 2) live here
    workdir: Path  # worker logs
    sample_interval: float = 0.1  # RSS sampling period, seconds

    @property
    def backend_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/1"

    @property
    def counter_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/2"

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, db=2, socket_timeout=30)

    def env(self, results: bool, target: int, confirm: bool = True) -> dict[str, str]:
        env = dict(os.environ)
        # The repo root first, so `benchmarks` imports from both environments; nothing else
        # from the caller's PYTHONPATH, which could shadow one framework's packages.
        env["PYTHONPATH"] = str(ROOT)
        env.update(
            BENCH_BROKER_URL=self.broker_url,
            BENCH_BACKEND_URL=self.backend_url,
            BENCH_COUNTER_URL=self.counter_url,
            BENCH_RESULTS="1" if results else "0",
            BENCH_CONFIRM="1" if confirm else "0",
            BENCH_TARGET=str(target),
            PYTHONDONTWRITEBYTECODE="1",
        )
        return env

    def reset(self) -> None:
        """Empty every queue, result and counter, so no run sees another's leftovers."""
        self.redis().flushall()
        if self.broker_url.startswith("amqp"):
            from kombu import Connection

            with Connection(self.broker_url, connect_timeout=10) as conn:
                for queue in ("taskq", "celery"):
                    # A deleted queue is declared afresh by the next client or worker.
                    with contextlib.suppress(Exception), conn.channel() as channel:
                        channel.queue_delete(queue)

    def client(
        self,
        fw: Framework,
        scenario: str,
        n: int,
        size: int = 0,
        results: bool = False,
        confirm: bool = True,
    ) -> dict[str, Any]:
        argv = [fw.python, "-m", "benchmarks.client", fw.name, scenario, "--n", str(n)]
        argv += ["--size", str(size)]
        timeout = 120 + n / 50  # generous: a stuck client must still end the run
        try:
            done = subprocess.run(
                argv,
                cwd=ROOT,
                env=self.env(results=results, target=0, confirm=confirm),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{fw.name} client {scenario} n={n}: no answer in {timeout}s") from exc
        if done.returncode != 0:
            raise BenchError(
                f"{fw.name} client {scenario} n={n} failed (exit {done.returncode}):\n"
                + "\n".join(done.stderr.splitlines()[-25:])
            )
        try:
            result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError) as exc:
            raise BenchError(f"{fw.name} client {scenario}: no JSON in {done.stdout!r}") from exc
        return result

    def worker(
        self,
        fw: Framework,
        concurrency: int,
        results: bool,
        target: int,
        defaults: bool = False,
        events: bool = False,
    ) -> Worker:
        log = self.workdir / f"{fw.name}-worker.log"
        with open(log, "a") as f:
            f.write(f"\n=== {time.strftime('%H:%M:%S')} c={concurrency} target={target}\n")
        argv = fw.worker_argv(concurrency, celery_defaults=defaults, events=events)
        worker = Worker(argv, self.env(results=results, target=target), ROOT, log)
        worker.sample_memory(self.sample_interval)
        return worker

    def wait_for_count(self, worker: Worker, target: int) -> tuple[float, float]:
        """Block until ``target`` tasks completed; return (first, last) completion times."""
        client = self.redis()
        timeout = 60 + target / 100  # 100 tasks/s is far below any framework here
        deadline = time.monotonic() + timeout
        while True:
            # The task stamps LAST_KEY itself when it is the target-th; polling only has
            # to notice, so the coarse POLL_INTERVAL costs no precision.
            last = client.get(LAST_KEY)
            if last is not None:
                first = client.get(FIRST_KEY)
                assert first is not None
                return float(first), float(last)
            worker.check_alive()
            if time.monotonic() > deadline:
                done = int(client.get(COUNT_KEY) or 0)
                raise BenchError(
                    f"only {done} of {target} tasks done after {timeout:.0f}s: "
                    f"{' '.join(worker.argv)}; log {worker.log_path}, ending:\n"
                    + tail(worker.log_path, 8)
                )
            time.sleep(POLL_INTERVAL)


def drain(
    bench: Bench,
    fw: Framework,
    n: int,
    *,
    size: int = 0,
    concurrency: int = 2,
    celery_defaults: bool = False,
    series: bool = False,
    events: bool = False,
) -> dict[str, Any]:
    """Scenarios 1, 2, 5 and 7: enqueue ``n`` tasks (results off), then start a worker."""
    bench.reset()
    sent = bench.client(fw, "enqueue", n, size=size)
    worker = bench.worker(
        fw, concurrency, results=False, target=n, defaults=celery_defaults, events=events
    )
    try:
        first, last = bench.wait_for_count(worker, n)
        time.sleep(2 * bench.sample_interval)  # one more memory sample after the last task
    finally:
        worker.stop()
    out: dict[str, Any] = {
        "enqueue": sent["rate"],
        "drain": (n - 1) / max(last - first, 1e-9),  # n completions span n - 1 intervals
        "startup": first - worker.spawned_at,
        "rss_peak": worker.rss_peak / MB,
    }
    if series:
        start = first - worker.spawned_at  # seconds from spawn to the first completion
        out["rss_series"] = [(round(t - start, 3), rss) for t, rss in worker.rss_series]
        out.update(flatness(worker.rss_series, start, last - first))
    return out


def flatness(series: list[tuple[float, int]], start: float, span: float) -> dict[str, float]:
    """RSS near 10% and at 100% of the drain: a flat line means no per-task leak."""

    def at(fraction: float) -> float:
        moment = start + fraction * span
        before = [rss for t, rss in series if t <= moment]
        return (before[-1] if before else series[0][1]) / MB

    early, end = at(0.1), at(1.0)
    return {"rss_10pct": early, "rss_end": end, "rss_growth_pct": 100 * (end - early) / early}


def results_and_latency(
    bench: Bench, fw: Framework, n_results: int, n_latency: int, confirm: bool = True
) -> dict[str, float]:
    """Scenarios 3 and 4 against one running worker with the Redis result backend.

    ``confirm=False``: taskq's client publishes without RabbitMQ's publisher confirms.
    """
    bench.reset()
    worker = bench.worker(fw, 2, results=True, target=0)
    try:
        res = bench.client(fw, "results", n_results, results=True, confirm=confirm)
        lat = bench.client(fw, "latency", n_latency, results=True, confirm=confirm)
        worker.check_alive()
    finally:
        worker.stop()
    samples = sorted(lat["latencies_ms"])
    return {
        "results": res["rate"],
        "latency_p50": percentile(samples, 50),
        "latency_p99": percentile(samples, 99),
    }


def chord(bench: Bench, fw: Framework, n: int, confirm: bool = True) -> dict[str, float]:
    """Scenario 6: one chord of ``n`` x ``add`` summed by its body, against a running worker
    with the Redis result backend (the join is the backend's: Celery's keys on both sides).

    ``confirm=False``: taskq's client publishes without RabbitMQ's publisher confirms.
    """
    bench.reset()
    worker = bench.worker(fw, 2, results=True, target=0)
    try:
        out = bench.client(fw, "chord", n, results=True, confirm=confirm)
        worker.check_alive()
    finally:
        worker.stop()
    return {"chord": out["chord_ms"], "chord_publish": out["publish_ms"]}


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def ceiling(bench: Bench, n: int) -> dict[str, float]:
    """The bare redis-py loops (benchmarks/ceiling.py) on the same Redis, db 3."""
    argv = [sys.executable, "-m", "benchmarks.ceiling", "--n", str(n)]
    argv += ["--redis", f"redis://127.0.0.1:{bench.redis_port}/3"]
    done = subprocess.run(
        argv, cwd=ROOT, env=bench.env(False, 0), capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise BenchError(f"ceiling loop failed:\n{done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {"ceiling_bare": out["bare"], "ceiling_prefork": out["prefork"]}
