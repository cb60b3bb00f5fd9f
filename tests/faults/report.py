"""The figures each fault scenario records, and the table printed at the end of the run.

Each scenario calls ``results.add(...)`` *before* asserting, so the table shows the numbers
of failing scenarios too. The rows are also appended as JSON lines to the file named by
$TASKQ_FAULTS_RESULTS, when it is set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

RESULTS = pytest.StashKey[list[dict[str, Any]]]()
COLUMNS = (
    ("tasks", "tasks"),
    ("lost", "lost"),
    ("duplicates", "dup"),
    ("concurrent", "conc"),
    ("in_flight_bound", "dup bound"),
    ("runs", "runs"),
    ("recovery_s", "recovery s"),
    ("throughput_ratio", "ratio"),
    ("dead_lettered", "dead"),
    ("extra", "other"),
)


class Results:
    """Where one scenario on one broker writes its figures."""

    def __init__(self, config: pytest.Config, scenario: str, kind: str):
        self.rows = config.stash.setdefault(RESULTS, [])
        self.scenario = scenario
        self.kind = kind

    def add(self, **figures: Any) -> None:
        row = {"scenario": self.scenario, "broker": self.kind, **figures}
        self.rows.append(row)
        path = os.environ.get("TASKQ_FAULTS_RESULTS")
        if path:
            with Path(path).open("a") as out:
                out.write(json.dumps(row, default=str) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value) or "[]"
    return str(value).replace("|", "/")


def table(config: pytest.Config) -> list[str]:
    """The rows as a Markdown table, scenario by scenario."""
    rows = config.stash.get(RESULTS, [])
    if not rows:
        return []
    header = ["scenario", "broker", *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in sorted(rows, key=lambda r: (r["scenario"], r["broker"])):
        cells = [row["scenario"], row["broker"], *(_cell(row.get(key)) for key, _ in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
