"""Turn the samples of a run into the printed table and the JSON file.

Each cell is the median of the repetitions with min-max after it. The ratio is
median(taskq) / median(Celery) whatever the direction, so for throughput more is better and
for time and memory less is better. Drain rows also give each framework's share of the
prefork-shape ceiling (the bare loop that only pops, decodes, calls ``add`` and counts).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FRAMEWORKS = ("taskq", "celery")


@dataclass(frozen=True)
class Row:
    key: str  # the metric's name in the samples
    label: str
    unit: str  # "tasks/s", "s", "ms", "MB" or "%"
    vs_ceiling: bool = False  # a drain rate: show it as a share of the ceiling
    # A Celery-only variant (its default start-up flags): taskq's column shows this metric
    # of taskq's, which has no such variant, so the ratio still compares like with like.
    taskq_key: str | None = None
    # A taskq-only variant (RabbitMQ without publisher confirms): Celery's column shows
    # this metric of Celery's, which sends that way anyway.
    celery_key: str | None = None


Samples = dict[str, dict[str, list[float]]]  # framework -> metric -> one value per repetition


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def number(value: float, unit: str) -> str:
    if unit in ("tasks/s", "MB"):
        return f"{value:,.0f}"
    if unit == "%":
        return f"{value:+.1f}"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def cell(s: dict[str, float] | None, unit: str) -> str:
    if s is None:
        return "—"
    text = number(s["median"], unit)
    if s["n"] > 1:
        text += f" ({number(s['min'], unit)}-{number(s['max'], unit)})"
    return text


def metric(row: Row, fw: str) -> str:
    """The metric behind ``fw``'s column of ``row``: taskq's may be ``taskq_key``, Celery's
    ``celery_key``."""
    return (row.taskq_key or row.key) if fw == "taskq" else (row.celery_key or row.key)


def measured(row: Row, samples: Samples) -> dict[str, dict[str, float] | None]:
    """framework -> summary of ``row``; the table and the JSON both read it, so they agree."""
    return {fw: summary(samples.get(fw, {}).get(metric(row, fw), [])) for fw in FRAMEWORKS}


def ratio(a: dict[str, float] | None, b: dict[str, float] | None, unit: str) -> str:
    if a is None or b is None or unit == "%" or b["median"] == 0:
        return "—"
    return f"{a['median'] / b['median']:.2f}x"


def share(s: dict[str, float] | None, ceiling: dict[str, float] | None) -> str:
    if s is None or ceiling is None:
        return ""
    return f"{100 * s['median'] / ceiling['median']:.1f}%"


def table(rows: list[Row], samples: Samples, ceiling: dict[str, list[float]]) -> str:
    """The Markdown table of every row, then the ceiling rows under it."""
    prefork = summary(ceiling.get("ceiling_prefork", []))
    lines = [
        "| scenario | unit | taskq | Celery 5.7 | taskq/Celery | % of prefork ceiling "
        "(taskq / Celery) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = measured(row, samples)
        ours, theirs = cells["taskq"], cells["celery"]
        if (theirs is None and (ours is None or row.taskq_key)) or (
            ours is None and row.celery_key
        ):
            continue  # not measured in this run (--only, --frameworks, the broker)
        shares = ""
        if row.vs_ceiling and prefork is not None:
            shares = f"{share(ours, prefork) or '—'} / {share(theirs, prefork) or '—'}"
        lines.append(
            f"| {row.label} | {row.unit} | {cell(ours, row.unit)} | {cell(theirs, row.unit)} "
            f"| {ratio(ours, theirs, row.unit)} | {shares} |"
        )
    for key, label in (
        ("ceiling_bare", "ceiling: bare loop, 2 processes, RPOP 100 (no framework)"),
        ("ceiling_prefork", "ceiling: prefork shape, 1 parent + 2 children (no framework)"),
    ):
        if not ceiling.get(key):
            continue
        value = cell(summary(ceiling[key]), "tasks/s")
        lines.append(f"| {label} | tasks/s | {value} | {value} | | |")
    return "\n".join(lines)


def rows_json(rows: list[Row], samples: Samples) -> list[dict[str, Any]]:
    """The table's cells as numbers; every row, null where a framework was not measured."""
    return [
        {
            "key": row.key,
            "label": row.label,
            "unit": row.unit,
            **measured(row, samples),
        }
        for row in rows
    ]


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
