"""The client side of one benchmark run, in a process of its own.

``python -m benchmarks.client {taskq|celery} {enqueue|results|latency|chord} --n N
[--size BYTES]`` prints one JSON object on stdout. It runs under whichever interpreter has
the framework (.venv for taskq, benchmarks/.venv-celery for Celery), so both clients pay the
same process and import costs, outside the timed part.

The first call of every scenario is a warm-up outside the timing: it opens the broker
connection (and, for results/latency/chord, waits until the worker answers).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

MODULES = {"taskq": "benchmarks.bench_tasks", "celery": "benchmarks.celery_tasks"}
WARMUP_TIMEOUT = 120.0  # the first get() waits for a worker that may still be booting
GET_TIMEOUT = 60.0  # any later get(): a worker that stopped answering must end the run


@dataclass(frozen=True)
class Tasks:
    """What the scenarios call, all from the framework's own environment."""

    add: Any  # bench.add
    tsum: Any  # bench.tsum, the chord's body
    chord: Any  # the framework's own canvas class: taskq.chord or celery.chord


def arguments(i: int, size: int) -> tuple[Any, Any]:
    """``add``'s arguments: two ints, or a string of ``size`` bytes and an empty one."""
    if size <= 0:
        return i, i
    return "x" * size, ""


def enqueue(tasks: Tasks, n: int, size: int) -> dict[str, Any]:
    add = tasks.add
    add.delay(*arguments(0, size))
    x, y = arguments(1, size)  # built once: the payload's construction is not the client's cost
    began = time.perf_counter()
    for _ in range(n - 1):
        add.delay(x, y)
    return {"rate": (n - 1) / (time.perf_counter() - began)}


def results(tasks: Tasks, n: int, size: int) -> dict[str, Any]:
    add = tasks.add
    add.delay(*arguments(0, size)).get(timeout=WARMUP_TIMEOUT)
    x, y = arguments(1, size)
    began = time.perf_counter()
    pending = [add.delay(x, y) for _ in range(n)]
    for result in pending:
        result.get(timeout=GET_TIMEOUT)
    return {"rate": n / (time.perf_counter() - began)}


def latency(tasks: Tasks, n: int, size: int) -> dict[str, Any]:
    add = tasks.add
    x, y = arguments(1, size)
    add.delay(x, y).get(timeout=WARMUP_TIMEOUT)
    for _ in range(4):
        add.delay(x, y).get(timeout=GET_TIMEOUT)
    samples: list[float] = []
    for _ in range(n):
        began = time.perf_counter()
        add.delay(x, y).get(timeout=GET_TIMEOUT)
        samples.append((time.perf_counter() - began) * 1000.0)
    return {"latencies_ms": samples}


def chord(tasks: Tasks, n: int, size: int) -> dict[str, Any]:
    """One chord of ``n`` x ``add(i, i)`` whose body sums the list: the time from the
    ``chord(header)(body)`` call to the body's value, and the time that call alone took
    (freezing the parts, the chord's size, and publishing the ``n`` members)."""
    # Warm-up: waits for the worker, and runs the join once on each side (result keys,
    # the body's first send) outside the timing.
    for timeout in (WARMUP_TIMEOUT, GET_TIMEOUT):
        tasks.chord([tasks.add.s(1, 1), tasks.add.s(2, 2)])(tasks.tsum.s()).get(timeout=timeout)
    header = [tasks.add.s(i, i) for i in range(n)]  # built before the clock, as in enqueue
    body = tasks.tsum.s()
    began = time.perf_counter()
    result = tasks.chord(header)(body)
    published = time.perf_counter()
    value = result.get(timeout=GET_TIMEOUT)
    ended = time.perf_counter()
    if value != n * (n - 1):  # the sum of 2i for i < n: a wrong join must not pass as fast
        raise SystemExit(f"the chord's body returned {value!r}, not {n * (n - 1)}")
    return {"chord_ms": (ended - began) * 1000.0, "publish_ms": (published - began) * 1000.0}


SCENARIOS = {"enqueue": enqueue, "results": results, "latency": latency, "chord": chord}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client")
    parser.add_argument("framework", choices=sorted(MODULES))
    parser.add_argument("scenario", choices=list(SCENARIOS))
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--size", type=int, default=0, help="argument size in bytes (0: ints)")
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error("--n must be at least 2 (the first call is a warm-up)")

    module = importlib.import_module(MODULES[args.framework])
    # The framework's package is named as the framework: taskq.chord, celery.chord.
    canvas = importlib.import_module(args.framework)
    tasks = Tasks(module.add, module.tsum, canvas.chord)
    out = SCENARIOS[args.scenario](tasks, args.n, args.size)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
