"""``make bench``: taskq and Celery 5.7 side by side, same machine, broker and task.

    python -m benchmarks.run [--broker redis|amqp|both] [--quick] [--reps N] [--only ...]

Starts a private Redis (and RabbitMQ for amqp) on free loopback ports, runs every scenario
for taskq then Celery, repetition after repetition, prints one Markdown table per broker and
writes the samples to benchmarks/results/<timestamp>-<broker>.json. docs/performance.md says
what each row measures. Nothing here asserts a timing: it measures and reports.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime
import functools
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.servers import (  # plain Python, no pytest
    RabbitServer,
    RedisServer,
    ServerError,
    find_binary,
)

from . import report, scenarios
from .procs import BenchError
from .report import Row
from .scenarios import Bench, Framework

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CELERY_PYTHON = ROOT / "benchmarks" / ".venv-celery" / "bin" / "python"
STEPS = (
    "main", "defaults", "results", "unconfirmed", "concurrency", "sizes", "chord", "events",
    "big", "ceiling",
)  # fmt: skip
KB, MB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """How many tasks each scenario sends; ``--quick`` divides them for a smoke run."""

    reps: int = 3
    big_reps: int = 1  # the N=100,000 run takes minutes per framework: once by default
    main: int = 10_000
    results: int = 2_000
    latency: int = 300
    concurrency: int = 10_000
    small: int = 2_000  # 100 B and 10 KB arguments
    huge: int = 50  # 1 MB arguments
    big: int = 100_000
    celery_default: int = 2_000  # Celery with its default start-up flags
    chord: int = 1_000  # members of the chord's header
    ceiling: int = 200_000


QUICK = Plan(
    reps=1, main=1_000, results=300, latency=50, concurrency=1_000, small=300, huge=5,
    big=3_000, celery_default=300, chord=200, ceiling=20_000,
)  # fmt: skip


def rows(p: Plan) -> list[Row]:
    return [
        Row("enqueue", f"1 enqueue: {p.main:,} delay(), results off", "tasks/s"),
        Row("drain", f"2 drain: {p.main:,} queued, -c 2", "tasks/s", vs_ceiling=True),
        Row("startup", "2 start-up: spawn → first task done", "s"),
        Row("drain_default", f"2 drain, Celery with gossip/mingle/heartbeat on: "
            f"{p.celery_default:,} queued", "tasks/s", vs_ceiling=True, taskq_key="drain"),
        Row("startup_default", "2 start-up, Celery with gossip/mingle/heartbeat on", "s",
            taskq_key="startup"),
        Row("rss_peak", "2 worker peak RSS, parent + children", "MB"),
        Row("results", f"3 results: {p.results:,} delay(), then get() each", "tasks/s"),
        Row("latency_p50", f"4 latency p50: {p.latency} x delay().get()", "ms"),
        Row("latency_p99", f"4 latency p99: {p.latency} x delay().get()", "ms"),
        Row("results_unconfirmed", f"3 results, taskq without publisher confirms (as Celery "
            f"sends): {p.results:,}", "tasks/s", celery_key="results"),
        Row("latency_p50_unconfirmed", "4 latency p50, taskq without publisher confirms", "ms",
            celery_key="latency_p50"),
        Row("drain_c1", f"5 drain -c 1: {p.concurrency:,} queued", "tasks/s", vs_ceiling=True),
        Row("drain_c4", f"5 drain -c 4: {p.concurrency:,} queued", "tasks/s", vs_ceiling=True),
        Row("drain_100b", f"5 drain, 100 B argument: {p.small:,} queued", "tasks/s"),
        Row("drain_10kb", f"5 drain, 10 KB argument: {p.small:,} queued", "tasks/s"),
        Row("drain_1mb", f"5 drain, 1 MB argument: {p.huge:,} queued", "tasks/s"),
        Row("enqueue_big", f"5 enqueue: {p.big:,} delay()", "tasks/s"),
        Row("drain_big", f"5 drain: {p.big:,} queued, -c 2", "tasks/s", vs_ceiling=True),
        Row("rss_peak_big", f"5 worker peak RSS over the {p.big:,} drain", "MB"),
        Row("rss_10pct", f"5 worker RSS at 10% of the {p.big:,} drain", "MB"),
        Row("rss_end", f"5 worker RSS at the end of the {p.big:,} drain", "MB"),
        Row("rss_growth_pct", "5 RSS growth, 10% → end", "%"),
        Row("chord", f"6 chord: {p.chord:,} x add, body sums them; call → body's get()", "ms"),
        Row("chord_publish", f"6 chord: the chord(...)(body) call alone ({p.chord:,} sent)",
            "ms"),
        Row("chord_unconfirmed", f"6 chord, taskq without publisher confirms (as Celery "
            f"sends): {p.chord:,}", "ms", celery_key="chord"),
        Row("chord_publish_unconfirmed", "6 chord, the call alone, taskq without publisher "
            "confirms", "ms", celery_key="chord_publish"),
        Row("drain_events", f"7 drain with task events (-E): {p.main:,} queued, -c 2",
            "tasks/s", vs_ceiling=True),
    ]  # fmt: skip


Step = tuple[str, Callable[[Framework], dict[str, float]], str | None]


def steps(bench: Bench, p: Plan, only: set[str]) -> list[Step]:
    """(description, run, only-this-framework) in run order; taskq and Celery alternate."""

    def renamed(out: dict[str, Any], **names: str) -> dict[str, float]:
        return {new: float(out[old]) for new, old in names.items()}

    def drain_as(key: str, **kw: Any) -> Callable[[Framework], dict[str, float]]:
        return lambda fw: renamed(scenarios.drain(bench, fw, **kw), **{key: "drain"})

    out: list[Step] = []
    if "main" in only:
        out.append(("enqueue + drain", lambda fw: scenarios.drain(bench, fw, p.main), None))

    def celery_defaults(fw: Framework) -> dict[str, float]:
        out = scenarios.drain(bench, fw, p.celery_default, celery_defaults=True)
        return renamed(out, startup_default="startup", drain_default="drain")

    def results(fw: Framework) -> dict[str, float]:
        return scenarios.results_and_latency(bench, fw, p.results, p.latency)

    if "defaults" in only:
        out.append(("start-up with Celery's defaults", celery_defaults, "celery"))
    if "results" in only:
        out.append(("results + latency", results, None))
    if "unconfirmed" in only and bench.broker_url.startswith("amqp"):
        # Celery publishes without confirms; taskq's default waits for one per delay().
        def unconfirmed(fw: Framework) -> dict[str, float]:
            out = scenarios.results_and_latency(bench, fw, p.results, p.latency, confirm=False)
            return renamed(
                out, results_unconfirmed="results", latency_p50_unconfirmed="latency_p50"
            )

        out.append(("results + latency without publisher confirms", unconfirmed, "taskq"))
    if "concurrency" in only:
        for c in (1, 4):
            run = drain_as(f"drain_c{c}", n=p.concurrency, concurrency=c)
            out.append((f"drain -c {c}", run, None))
    if "sizes" in only:
        sizes = (("100b", 100, p.small), ("10kb", 10 * KB, p.small), ("1mb", MB, p.huge))
        for key, size, n in sizes:
            out.append((f"drain {key}", drain_as(f"drain_{key}", n=n, size=size), None))
    if "chord" in only:
        out.append((f"chord of {p.chord:,}", lambda fw: scenarios.chord(bench, fw, p.chord), None))
    if "chord" in only and bench.broker_url.startswith("amqp"):
        # As for rows 3 and 4: the header's members are sent the way Celery sends them.
        def chord_unconfirmed(fw: Framework) -> dict[str, float]:
            out = scenarios.chord(bench, fw, p.chord, confirm=False)
            return renamed(
                out, chord_unconfirmed="chord", chord_publish_unconfirmed="chord_publish"
            )

        out.append(("chord without publisher confirms", chord_unconfirmed, "taskq"))
    if "events" in only:
        out.append(("drain with -E", drain_as("drain_events", n=p.main, events=True), None))
    return out


def big(bench: Bench, fw: Framework, n: int, series: dict[str, Any]) -> dict[str, float]:
    out = scenarios.drain(bench, fw, n, series=True)
    series.setdefault(fw.name, []).append(out.pop("rss_series"))
    names = {"enqueue": "enqueue_big", "drain": "drain_big", "rss_peak": "rss_peak_big"}
    return {names.get(k, k): float(v) for k, v in out.items() if k != "startup"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_broker(
    broker: str, fws: list[Framework], p: Plan, only: set[str], keep_logs: bool, redis_binary: str
) -> dict[str, Any]:
    samples: report.Samples = {fw.name: {} for fw in fws}
    ceiling: dict[str, list[float]] = {}
    series: dict[str, Any] = {}
    errors: list[str] = []

    def attempt(
        into: dict[str, list[float]], what: str, run: Callable[[], dict[str, float]]
    ) -> None:
        # One failed run (a worker that hangs or dies) costs its own sample, not the
        # minutes of samples around it: it is reported under the table instead.
        try:
            record(into, run(), what)
        except BenchError as exc:
            log(f"{what}: FAILED: {exc}")
            errors.append(f"{what}: {exc}")

    workdir = Path(tempfile.mkdtemp(prefix=f"taskq-bench-{broker}-"))
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer(binary=redis_binary))
        broker_url = redis_server.url
        if broker == "amqp":
            log("starting RabbitMQ (about 10 s)")
            broker_url = stack.enter_context(RabbitServer()).url
        bench = Bench(broker_url, redis_server.port, workdir)
        log(f"broker {broker_url}; worker logs in {workdir}")
        for rep in range(p.reps):
            for what, run, only_fw in steps(bench, p, only):
                for fw in fws:
                    if only_fw in (None, fw.name):
                        label = f"rep {rep + 1}/{p.reps} {fw.name} {what}"
                        attempt(samples[fw.name], label, functools.partial(run, fw))
            if "ceiling" in only:
                attempt(
                    ceiling, f"rep {rep + 1} ceiling", lambda: scenarios.ceiling(bench, p.ceiling)
                )
        for rep in range(p.big_reps if "big" in only else 0):
            for fw in fws:
                label = f"big {rep + 1}/{p.big_reps} {fw.name}"
                attempt(samples[fw.name], label, functools.partial(big, bench, fw, p.big, series))
    if errors or keep_logs:
        log(f"worker logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.monotonic() - began
    return {
        "samples": samples,
        "ceiling": ceiling,
        "rss_series_big": series,
        "errors": errors,
        "seconds": seconds,
    }


def record(into: dict[str, list[float]], out: dict[str, float], what: str) -> None:
    shown = ", ".join(f"{k}={v:,.2f}" for k, v in out.items())
    log(f"{what}: {shown}")
    for key, value in out.items():
        into.setdefault(key, []).append(value)


def version(python: str, module: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({module!r}))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or "?"


def find_redis() -> str:
    """The redis-server to run, chosen once: run_broker starts it and meta reports it."""
    return find_binary("redis-server", "/usr/bin/redis-server")  # RedisServer's own default


def environment(fws: list[Framework], redis_binary: str) -> dict[str, Any]:
    """The machine and the software, the same for every broker: looked up once per run."""
    redis_version = subprocess.run(
        [redis_binary, "--version"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": redis_version,
        "versions": {
            fw.name: {m: version(fw.python, m) for m in (fw.name, "kombu", "billiard", "redis")}
            for fw in fws
        },
        "workers": {fw.name: " ".join(fw.worker_argv(2)[1:]) for fw in fws},
    }


def meta(broker: str, p: Plan, quick: bool, env: dict[str, Any]) -> dict[str, Any]:
    return {
        **env,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "broker": broker,
        "quick": quick,
        "plan": asdict(p),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


@dataclass(frozen=True)
class Options:
    """What main() parsed: the same for every broker."""

    fws: list[Framework]
    plan: Plan
    only: set[str]
    quick: bool
    keep_logs: bool
    out: Path


def parse(argv: list[str] | None) -> tuple[Options, list[str]]:
    """The options, and the brokers to run in order."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--broker", choices=["redis", "amqp", "both"], default="redis")
    parser.add_argument("--quick", action="store_true", help="small N, one repetition")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument("--only", default=",".join(STEPS), help=f"subset of {','.join(STEPS)}")
    parser.add_argument("--frameworks", default="taskq,celery", help="taskq,celery or one")
    parser.add_argument("--celery-python", default=str(CELERY_PYTHON))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only - set(STEPS):
        parser.error(f"--only: unknown {sorted(only - set(STEPS))}; choose from {STEPS}")
    p = QUICK if args.quick else Plan()
    if args.reps:
        p = Plan(**{**asdict(p), "reps": args.reps})
    chosen = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    if not chosen or set(chosen) - set(report.FRAMEWORKS):
        parser.error(f"--frameworks: choose from {','.join(report.FRAMEWORKS)}")
    if "celery" in chosen and not Path(args.celery_python).exists():
        parser.error(f"{args.celery_python} missing: `make bench` creates the Celery venv")
    pythons = {"taskq": sys.executable, "celery": args.celery_python}
    fws = [Framework(name, pythons[name]) for name in report.FRAMEWORKS if name in chosen]
    brokers = ["redis", "amqp"] if args.broker == "both" else [args.broker]
    return Options(fws, p, only, args.quick, args.keep_logs, args.out), brokers


def bench_broker(broker: str, opts: Options, env: dict[str, Any], redis_binary: str) -> bool:
    """Run every step on ``broker``, print its table, write its JSON; True if a run failed."""
    p = opts.plan
    info = meta(broker, p, opts.quick, env)
    measured = run_broker(broker, opts.fws, p, opts.only, opts.keep_logs, redis_binary)
    info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    info["seconds"] = round(measured.pop("seconds"))
    table = report.table(rows(p), measured["samples"], measured["ceiling"])
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = opts.out / f"{stamp}-{broker}{'-quick' if opts.quick else ''}.json"
    summary = report.rows_json(rows(p), measured["samples"])
    report.write_json(path, {"meta": info, "rows": summary, **measured})
    print(f"\n## {broker}: taskq vs Celery 5.7, median (min-max) of {p.reps} repetition(s)")
    load = f"{' '.join(info['loadavg_start'])} at start, {' '.join(info['loadavg_end'])} at end"
    print(f"{info['date']}, {info['cpus']} CPUs, load average {load}, {info['seconds']} s\n")
    print(table)
    for error in measured["errors"]:
        print(f"\nFAILED (left out of the table): {error}")
    print(f"\nsamples: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return bool(measured["errors"])


# Each framework's installed packages, compiled by its own interpreter.
COMPILE_SITE = (
    "import compileall, sysconfig; "
    "compileall.compile_dir(sysconfig.get_paths()['purelib'], quiet=2)"
)


def compile_sources(fws: list[Framework]) -> None:
    """Byte-compile everything the workers import, as pip does when it installs a package.

    Where the environment sets PYTHONDONTWRITEBYTECODE (the machines here do), nothing is
    compiled on import, and a module without its compiled file is compiled again at every
    start: 25-35 ms of taskq's start-up row for its editable source tree, more for Celery
    when its venv lacks them. So both frameworks start from compiled files: taskq's tree,
    the benchmark's modules, and each venv's packages. Stale files are never used: Python
    checks each against its source.
    """
    for package in (ROOT / "taskq", ROOT / "benchmarks"):
        compileall.compile_dir(package, quiet=1, rx=re.compile(r"/\.venv"))
    for fw in fws:
        subprocess.run([fw.python, "-c", COMPILE_SITE], check=True, timeout=600)


def main(argv: list[str] | None = None) -> int:
    opts, brokers = parse(argv)
    failed = False
    try:
        compile_sources(opts.fws)
        redis_binary = find_redis()
        env = environment(opts.fws, redis_binary)
        for broker in brokers:
            failed = bench_broker(broker, opts, env, redis_binary) or failed
    except (BenchError, ServerError) as exc:  # the servers themselves: nothing measured
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
