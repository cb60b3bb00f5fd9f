"""What many workers cost the broker: ``python -m benchmarks.scaling``.

    python -m benchmarks.scaling [--broker redis|amqp|both] [--workers 1,10,50,100]
                                 [--window 20] [--rate 200] [--queues 1] [--worker-args ...]

Starts a private Redis and/or RabbitMQ (tests/servers.py). For each N in ``--workers`` it
starts N real ``python -m taskq -A benchmarks.scaling_tasks worker -P solo -c 1``
processes, in batches, waits until every one answers a remote-control ping, and measures
two windows:

* **idle**: nothing is published. Broker CPU (from /proc), and for Redis its commands a
  second with the share of each command (INFO commandstats); for RabbitMQ its socket
  reads and writes, connections, channels, queues and consumers (rabbitmqctl).
* **busy**: a publisher in this process sends ``scale.noop`` at a steady ``--rate``; the
  same figures plus the tasks a second the workers got through.

Before each window it waits (bounded) for the machine's load average to fall below
``--max-load``, and it reports the load and the CPU that other processes used during the
window, so a reader can judge the figures. The workers are stopped (SIGTERM, then SIGKILL
by pid) between steps. Markdown tables go to stdout, every sample to
benchmarks/results/<timestamp>-scaling-<broker>.json. Nothing is asserted: docs/scaling.md
reads the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskq import Taskq
from tests.servers import RabbitServer, RedisServer, ServerError

from . import scaling_report, scaling_tasks
from .brokerstats import (
    Rabbit,
    cpu_seconds,
    loadavg,
    machine_busy_seconds,
    redis_delta,
    redis_snapshot,
    rss_bytes,
    socket_rates,
)
from .procs import BenchError, Worker
from .run import RESULTS, ROOT, compile_sources

APP = "benchmarks.scaling_tasks"
TASK = "scale.noop"
UNACKED_KEY = "unacked"  # kombu's hash of the messages taken and not acked yet


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    brokers: list[str]
    workers: list[int]
    window: float
    rate: float
    queues: int
    batch: int
    max_load: float
    quiet_wait: float
    settle: float
    worker_args: list[str]
    transport_options: str  # JSON, for the workers' app (benchmarks/scaling_tasks.py)
    out: Path
    keep_logs: bool


# -- the fleet
def queue_names(opts: Options) -> list[str]:
    if opts.queues == 1:  # the app's default queue, as most fleets run
        return [scaling_tasks.app.conf.task_default_queue]
    return [f"q{i}" for i in range(opts.queues)]


def worker_argv(opts: Options, name: str) -> list[str]:
    argv = [sys.executable, "-m", "taskq", "-A", APP, "worker", "-P", "solo", "-c", "1"]
    argv += ["-l", "warning", "-n", name]
    if opts.queues > 1:
        argv += ["-Q", ",".join(queue_names(opts))]
    return argv + opts.worker_args


class Fleet:
    """N worker processes, started in batches and stopped together."""

    def __init__(self, app: Taskq, broker_url: str, opts: Options, logdir: Path):
        self.app = app
        self.opts = opts
        self.logdir = logdir
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SCALE_BROKER_URL": broker_url,
            "PYTHONDONTWRITEBYTECODE": "1",  # compile_sources() compiled them already
            "SCALE_TRANSPORT_OPTIONS": opts.transport_options,
        }
        self.workers: list[Worker] = []

    @property
    def queue_names(self) -> list[str]:
        return queue_names(self.opts)

    def start(self, n: int) -> None:
        """Start ``n`` workers, ``--batch`` at a time, each batch answering before the next."""
        began = time.monotonic()
        while len(self.workers) < n:
            for _ in range(min(self.opts.batch, n - len(self.workers))):
                name = f"w{len(self.workers):03d}@scale"
                log_path = self.logdir / f"{name}.log"
                argv = worker_argv(self.opts, name)
                self.workers.append(Worker(argv, self.env, ROOT, log_path))
            self.wait_answering(deadline=time.monotonic() + 60 + len(self.workers))
        log(f"{n} worker(s) answer pings ({time.monotonic() - began:.0f} s to start)")

    def wait_answering(self, deadline: float) -> None:
        want = {w.argv[w.argv.index("-n") + 1] for w in self.workers}
        seen: set[str] = set()
        while True:
            for worker in self.workers:
                worker.check_alive()
            replies = self.app.control.ping(timeout=2.0, limit=len(want - seen)) or []
            seen |= {node for reply in replies for node in reply}
            if want <= seen:
                return
            if time.monotonic() > deadline:
                missing = sorted(want - seen)
                raise BenchError(f"{len(missing)} worker(s) never answered a ping: {missing[:5]}")

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def stop(self) -> None:
        """SIGTERM every worker at once (a warm shutdown), then make sure each is gone."""
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                worker.popen.send_signal(signal.SIGTERM)
        for worker in self.workers:
            worker.stop(timeout=30)
        self.workers = []


# -- the publisher of the busy window
class Publisher:
    """A thread sending ``scale.noop`` at a steady rate, round-robin over the queues."""

    def __init__(self, app: Taskq, rate: float, queues: list[str]):
        self.app = app
        self.rate = rate
        self.queues = queues
        self.sent = 0
        self.late = 0.0  # the most it fell behind its schedule, in seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        due = time.monotonic()
        while not self._stop.is_set():
            self.app.send_task(TASK, queue=self.queues[self.sent % len(self.queues)])
            self.sent += 1
            due += interval
            now = time.monotonic()
            self.late = max(self.late, now - due)
            if due > now:
                self._stop.wait(due - now)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


# -- one broker
class Probe:
    """Snapshots of one broker and the machine, and their differences over a window."""

    def __init__(self, broker: str, server: Any, app: Taskq, queues: list[str]):
        self.broker = broker
        self.server = server
        self.app = app
        self.queues = queues
        self.rabbit = Rabbit(server) if broker == "amqp" else None
        self._redis: Any = None
        if broker == "redis":
            import redis

            self._redis = redis.Redis(port=server.port)

    def broker_pids(self) -> list[int]:
        return self.rabbit.pids() if self.rabbit else [self.server.pid]

    def depth(self) -> int:
        """Messages not yet done: in the queues and, on Redis, taken and not acked."""
        if self._redis is not None:
            pipe = self._redis.pipeline()
            for name in self.queues:
                pipe.llen(name)
            pipe.hlen(UNACKED_KEY)
            return sum(pipe.execute())
        with self.app.connection() as conn:
            channel = conn.default_channel
            return sum(channel.queue_declare(q, passive=True).message_count for q in self.queues)

    def reset(self) -> None:
        """Between steps: nothing left over from the last fleet."""
        if self._redis is not None:
            self._redis.flushall()
            self._redis.config_resetstat()
            return
        with self.app.connection() as conn:
            for name in self.queues:
                with contextlib.suppress(Exception):
                    conn.default_channel.queue_purge(name)

    @contextlib.contextmanager
    def window(self, fleet: Fleet, out: dict[str, Any]) -> Iterator[None]:
        """Measure what happens inside the ``with``; write the figures into ``out``."""
        rabbit = self.rabbit
        if rabbit is not None:
            out.update(rabbit.counts())
            sockets0, sockets_at0 = rabbit.socket_counts(), time.monotonic()
        broker_pids, me = self.broker_pids(), [os.getpid()]
        out["load_start"] = loadavg()
        machine0, mine0 = machine_busy_seconds(), cpu_seconds(me)
        workers0, broker0 = cpu_seconds(fleet.pids), cpu_seconds(broker_pids)
        snap0 = redis_snapshot(self._redis, self.server.pid) if self._redis else None
        began = time.monotonic()
        yield
        seconds = time.monotonic() - began
        snap1 = redis_snapshot(self._redis, self.server.pid) if self._redis else None
        broker = cpu_seconds(broker_pids) - broker0
        workers = cpu_seconds(fleet.pids) - workers0
        mine = cpu_seconds(me) - mine0
        machine = machine_busy_seconds() - machine0
        out["load_end"] = loadavg()
        out.update(
            seconds=seconds,
            broker_cpu_pct=100 * broker / seconds,
            workers_cpu_pct=100 * workers / seconds,
            harness_cpu_pct=100 * mine / seconds,
            others_cpu_pct=100 * max(0.0, machine - broker - workers - mine) / seconds,
            broker_rss_mb=rss_bytes(broker_pids) / 2**20,
            worker_rss_mb=rss_bytes(fleet.pids) / 2**20 / max(1, len(fleet.pids)),
        )
        if snap0 is not None and snap1 is not None:
            out["redis"] = redis_delta(snap0, snap1)
        if rabbit is not None:
            sockets1 = rabbit.socket_counts()
            span = time.monotonic() - sockets_at0
            out["reads_per_s"], out["writes_per_s"] = socket_rates(sockets0, sockets1, span)


def wait_quiet(opts: Options) -> dict[str, Any]:
    """Wait (bounded) until the 1-minute load average is under ``--max-load``."""
    began = time.monotonic()
    while os.getloadavg()[0] >= opts.max_load:
        if time.monotonic() - began > opts.quiet_wait:
            log(f"load {loadavg()} still >= {opts.max_load} after {opts.quiet_wait:.0f} s")
            return {"quiet": False, "quiet_wait_s": round(time.monotonic() - began)}
        time.sleep(2)
    return {"quiet": True, "quiet_wait_s": round(time.monotonic() - began)}


def step(probe: Probe, fleet: Fleet, n: int, opts: Options) -> dict[str, Any]:
    """One fleet size: start, idle window, busy window, stop."""
    result: dict[str, Any] = {"workers": n}
    try:
        fleet.start(n)
        time.sleep(opts.settle)  # the start-up's own traffic (connects, declares) ends
        idle: dict[str, Any] = wait_quiet(opts)
        with probe.window(fleet, idle):
            time.sleep(opts.window)
        result["idle"] = idle
        log(f"idle {n}: broker {idle['broker_cpu_pct']:.1f}% CPU, load {idle['load_end']}")
        busy: dict[str, Any] = wait_quiet(opts)
        with Publisher(probe.app, opts.rate, fleet.queue_names) as publisher:
            time.sleep(3)  # to a steady state
            # Counted from one depth reading to the other: on RabbitMQ the window is
            # bracketed by rabbitmqctl calls of a few seconds, when tasks flow too.
            depth0, sent0, t0 = probe.depth(), publisher.sent, time.monotonic()
            with probe.window(fleet, busy):
                time.sleep(opts.window)
            depth1, sent1 = probe.depth(), publisher.sent
            span = time.monotonic() - t0
        busy.update(
            sent_per_s=(sent1 - sent0) / span,
            done_per_s=(sent1 - sent0 - (depth1 - depth0)) / span,
            depth_end=depth1,
            publisher_late_s=publisher.late,
        )
        result["busy"] = busy
        log(f"busy {n}: {busy['done_per_s']:.0f} tasks/s, broker {busy['broker_cpu_pct']:.1f}%")
    except BenchError as exc:
        log(f"{n} workers: FAILED: {exc}")
        result["error"] = str(exc)
    finally:
        fleet.stop()
        probe.reset()
    return result


def run_broker(broker: str, opts: Options) -> dict[str, Any]:
    logdir = Path(tempfile.mkdtemp(prefix=f"taskq-scaling-{broker}-"))
    steps: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        if broker == "amqp":
            log("starting RabbitMQ (about 10 s)")
            server: Any = stack.enter_context(RabbitServer())
        else:
            server = stack.enter_context(RedisServer())
        app = Taskq("scale-harness", broker=server.url)
        app.conf.update(task_ignore_result=True, result_backend=None)
        fleet = Fleet(app, server.url, opts, logdir)
        stack.callback(fleet.stop)  # an interrupted run leaves no worker behind
        probe = Probe(broker, server, app, fleet.queue_names)
        log(f"{broker} at {server.url}; worker logs in {logdir}")
        for n in opts.workers:
            steps.append(step(probe, fleet, n, opts))
    failed = any("error" in s for s in steps)
    if failed or opts.keep_logs:
        log(f"worker logs kept in {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return {"steps": steps, "failed": failed}


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__)
    parser.add_argument("--broker", choices=["redis", "amqp", "both"], default="redis")
    parser.add_argument("--workers", default="1,10,50,100", help="fleet sizes, in order")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per window")
    parser.add_argument("--rate", type=float, default=200.0, help="tasks/s when busy")
    parser.add_argument("--queues", type=int, default=1, help="queues each worker consumes")
    parser.add_argument("--batch", type=int, default=10, help="workers started at a time")
    parser.add_argument("--max-load", type=float, default=1.0, help="quiet enough below this")
    parser.add_argument("--quiet-wait", type=float, default=90.0, help="longest wait for it")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after start-up")
    parser.add_argument("--worker-args", default="", help="more worker options, e.g. -E")
    parser.add_argument(
        "--transport-options", default="", help='the workers\' JSON, e.g. {"peek_timeout": 5}'
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    try:
        workers = [int(n) for n in args.workers.split(",") if n.strip()]
    except ValueError:
        parser.error("--workers: a comma-separated list of numbers")
    if not workers or min(workers) < 1 or args.queues < 1 or args.rate <= 0:
        parser.error("need --workers >= 1, --queues >= 1 and --rate > 0")
    brokers = ["redis", "amqp"] if args.broker == "both" else [args.broker]
    return Options(
        brokers, workers, args.window, args.rate, args.queues, max(1, args.batch),
        args.max_load, args.quiet_wait, args.settle, shlex.split(args.worker_args),
        args.transport_options, args.out, args.keep_logs,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    compile_sources([])
    failed = False
    for broker in opts.brokers:
        began = time.monotonic()
        meta = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "broker": broker,
            "cpus": os.cpu_count(),
            "options": {k: str(v) for k, v in vars(opts).items()},
            "worker_argv": " ".join(worker_argv(opts, "w000@scale")[1:]),
        }
        try:
            measured = run_broker(broker, opts)
        except ServerError as exc:
            print(f"{broker}: the broker did not start: {exc}", file=sys.stderr)
            return 1
        meta["seconds"] = round(time.monotonic() - began)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = opts.out / f"{stamp}-scaling-{broker}.json"
        scaling_report.write_json(path, {"meta": meta, **measured})
        print(scaling_report.tables(broker, meta, measured["steps"], opts.rate))
        print(f"\nsamples: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}\n")
        failed = failed or measured["failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
