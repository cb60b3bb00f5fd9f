"""The client side of one benchmark run, in a process of its own.

``python -m benchmarks.client {taskq|celery} {enqueue|results|latency} --n N [--size BYTES]``
prints one JSON object on stdout. It runs under whichever interpreter has the framework
(.venv for taskq, benchmarks/.venv-celery for Celery), so both clients pay the same process
and import costs, outside the timed part.

The first call of every scenario is a warm-up outside the timing: it opens the broker
connection (and, for results/latency, waits until the worker answers).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from typing import Any

MODULES = {"taskq": "benchmarks.bench_tasks", "celery": "benchmarks.celery_tasks"}
WARMUP_TIMEOUT = 120.0  # the first get() waits for a worker that may still be booting
GET_TIMEOUT = 60.0  # any later get(): a worker that stopped answering must end the run


def arguments(i: int, size: int) -> tuple[Any, Any]:
    """``add``'s arguments: two ints, or a string of ``size`` bytes and an empty one."""
    if size <= 0:
        return i, i
    return "x" * size, ""


def enqueue(add: Any, n: int, size: int) -> dict[str, Any]:
    add.delay(*arguments(0, size))
    x, y = arguments(1, size)  # built once: the payload's construction is not the client's cost
    began = time.perf_counter()
    for _ in range(n - 1):
        add.delay(x, y)
    return {"rate": (n - 1) / (time.perf_counter() - began)}


def results(add: Any, n: int, size: int) -> dict[str, Any]:
    add.delay(*arguments(0, size)).get(timeout=WARMUP_TIMEOUT)
    x, y = arguments(1, size)
    began = time.perf_counter()
    pending = [add.delay(x, y) for _ in range(n)]
    for result in pending:
        result.get(timeout=GET_TIMEOUT)
    return {"rate": n / (time.perf_counter() - began)}


def latency(add: Any, n: int, size: int) -> dict[str, Any]:
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


SCENARIOS = {"enqueue": enqueue, "results": results, "latency": latency}


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
    out = SCENARIOS[args.scenario](module.add, args.n, args.size)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
