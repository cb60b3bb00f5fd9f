"""The Markdown tables and the JSON file of ``python -m benchmarks.scaling``.

Each row is one fleet size. "per worker" divides the broker's figure by the number of
workers, so a flat column means a cost that grows linearly with the fleet. The load
average (1 minute, at the window's start and end) and the CPU used meanwhile by processes
that are neither the broker, the workers nor this harness ("others") say how quiet the
machine was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOP_COMMANDS = 12  # rows of the per-command breakdown


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")


def _load(w: dict[str, Any]) -> str:
    mark = "" if w.get("quiet", True) else " (busy)"
    return f"{w['load_start'][0]:.2f} → {w['load_end'][0]:.2f}{mark}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _common(n: int, w: dict[str, Any]) -> list[str]:
    return [
        f"{n}",
        _load(w),
        f"{w['others_cpu_pct']:.0f}",
        f"{w['workers_cpu_pct']:.1f}",
        f"{w['broker_cpu_pct']:.2f}",
        f"{w['broker_cpu_pct'] / n:.3f}",
    ]


COMMON = ["workers", "load 1 min", "others' CPU %", "workers' CPU %", "broker CPU %",
          "broker CPU % per worker"]  # fmt: skip


def idle_table(broker: str, steps: list[dict[str, Any]]) -> str:
    rows = []
    for s in steps:
        w, n = s.get("idle"), s["workers"]
        if w is None:
            continue
        if broker == "redis":
            r = w["redis"]
            extra = [
                f"{r['commands_per_s']:,.1f}",
                f"{r['commands_per_s'] / n:.2f}",
                f"{r['net_in_kb_s']:.1f}",
                f"{r['clients']}",
            ]
        else:
            extra = [
                f"{w['reads_per_s']:.1f}",
                f"{w['writes_per_s']:.1f}",
                f"{w['connections']}",
                f"{w['channels']}",
                f"{w['queues']}",
                f"{w['consumers']}",
            ]
        rows.append([*_common(n, w), *extra, f"{w['broker_rss_mb']:.0f}"])
    if broker == "redis":
        header = [*COMMON, "commands/s", "per worker", "net in KB/s", "clients"]
    else:
        header = [*COMMON, "socket reads/s", "socket writes/s", "connections", "channels",
                  "queues", "consumers"]  # fmt: skip
    return _table([*header, "broker RSS MB"], rows)


def busy_table(broker: str, steps: list[dict[str, Any]]) -> str:
    rows = []
    for s in steps:
        w, n = s.get("busy"), s["workers"]
        if w is None:
            continue
        done = max(w["done_per_s"], 1e-9)
        cpu_per_task = 1e4 * w["broker_cpu_pct"] / done  # µs of broker CPU per task
        if broker == "redis":
            cmds = w["redis"]["commands_per_s"]
            extra = [f"{cmds:,.0f}", f"{cmds / done:.1f}"]
        else:
            extra = [f"{w['reads_per_s']:,.0f}", f"{w['writes_per_s']:,.0f}"]
        rows.append([
            *_common(n, w), f"{w['sent_per_s']:.0f}", f"{w['done_per_s']:.0f}",
            f"{w['depth_end']}", f"{cpu_per_task:.0f}", *extra,
        ])  # fmt: skip
    header = [*COMMON, "sent/s", "done/s", "depth at end", "broker CPU µs per task"]
    if broker == "redis":
        header += ["commands/s", "commands per task"]
    else:
        header += ["socket reads/s", "socket writes/s"]
    return _table(header, rows)


def breakdown(steps: list[dict[str, Any]], which: str) -> str:
    """Redis calls a second per worker (idle) or per task (busy), command by command."""
    measured = [s for s in steps if which in s]
    if not measured:
        return ""
    last = measured[-1][which]["redis"]["per_command"]
    names = [name for name in last if name != "info"][:TOP_COMMANDS]
    for s in measured:  # a command busy only at small sizes still gets a row
        for name in s[which]["redis"]["per_command"]:
            if name not in names and name != "info" and len(names) < TOP_COMMANDS + 4:
                names.append(name)
    rows = []
    for name in names:
        row = [name]
        for s in measured:
            stats = s[which]["redis"]["per_command"].get(name)
            per = s["workers"] if which == "idle" else max(s[which]["done_per_s"], 1e-9)
            row.append("" if stats is None else f"{stats['per_s'] / per:.3f}")
        rows.append(row)
    unit = "calls/s per worker" if which == "idle" else "calls per task done"
    header = [f"command ({unit})", *(f"N={s['workers']}" for s in measured)]
    return _table(header, rows)


def tables(broker: str, meta: dict[str, Any], steps: list[dict[str, Any]], rate: float) -> str:
    name = {"redis": "Redis", "amqp": "RabbitMQ"}[broker]
    parts = [
        f"\n## {name}: idle workers ({meta['date']}, {meta['cpus']} CPUs, {meta['seconds']} s)",
        f"\nworker: `{meta['worker_argv']}`\n",
        idle_table(broker, steps),
        f"\n## {name}: busy workers, {rate:.0f} tasks/s published\n",
        busy_table(broker, steps),
    ]
    if broker == "redis":
        parts += [
            "\n### Redis commands, idle\n",
            breakdown(steps, "idle"),
            "\n### Redis commands, busy\n",
            breakdown(steps, "busy"),
        ]
    for s in steps:
        if "error" in s:
            parts.append(f"\nFAILED with {s['workers']} workers: {s['error']}")
    return "\n".join(parts)
