"""Tasks for the canvas example: small steps a workflow composes."""

from __future__ import annotations

import os

from taskq import Taskq

# The embedded default (SQLite files, no server), in the folder workflow.py gives.
app = Taskq("canvas", embedded_data_dir=os.environ.get("CANVAS_DIR") or None)


@app.task
def fetch(page: int) -> list[int]:
    return list(range(page * 10, page * 10 + 10))  # stands in for an HTTP call


@app.task
def total(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def merge(totals: list[int]) -> int:
    return sum(totals)


@app.task
def double(x: int) -> int:
    return 2 * x


@app.task
def report(value: int, label: str) -> str:
    return f"{label}: {value}"
