"""The ledger: what really ran, kept outside the broker, and the checker that reads it.

Each process appends one line per event to a file of its own (``<pid>.log``) with a single
``os.write`` on an ``O_APPEND`` descriptor, so no locking is needed and a process killed
with SIGKILL leaves whole lines behind. Events:

- ``start`` / ``end``: a task execution began / returned (written by the task itself);
- ``die``: a task is about to kill its own process (so the execution has an end time);
- ``kill``: the test killed a whole worker at that moment (written by the test).

Times are ``time.monotonic()`` (CLOCK_MONOTONIC is one clock for every process on the
machine, so starts and ends from different processes compare) plus wall time for ETAs.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def record(folder: str | Path, event: str, task_id: str | None, **extra: Any) -> None:
    """Append one event; safe from any process, at any moment."""
    line = {
        "event": event,
        "id": task_id,
        "pid": os.getpid(),
        "t": time.monotonic(),
        "wall": time.time(),
        **extra,
    }
    data = (json.dumps(line) + "\n").encode()
    fd = os.open(Path(folder) / f"{os.getpid()}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, data)  # one write: whole lines even if the process dies right after
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Execution:
    """One run of one task id, in one process."""

    id: str
    pid: int
    start: float
    wall_start: float
    end: float | None  # when it stopped, if known (a task noting its own death included)
    completed: bool  # the task returned
    attempt: int | None  # the ``taskq_deliveries`` header, when the worker sent one


@dataclass(frozen=True)
class Report:
    """What the checker found for a set of expected task ids."""

    expected: int
    executions: int  # every start, completed or not
    completed: int  # ids with at least one completed execution
    lost: tuple[str, ...]  # expected ids never completed
    duplicated: dict[str, int]  # id -> completed executions, where more than one
    concurrent: tuple[str, ...]  # ids with two executions overlapping in time
    cut: int  # executions that never ended (killed with their process)
    unexpected: tuple[str, ...] = field(default=())  # ran, but nobody asked for them

    @property
    def duplicates(self) -> int:
        """Completed executions beyond the first, summed over ids."""
        return sum(n - 1 for n in self.duplicated.values())

    def summary(self) -> str:
        dup = dict(list(self.duplicated.items())[:5])
        return (
            f"expected={self.expected} completed={self.completed} lost={len(self.lost)} "
            f"{list(self.lost[:5])} duplicates={self.duplicates} {dup} "
            f"concurrent={list(self.concurrent[:5])} cut={self.cut} runs={self.executions} "
            f"unexpected={list(self.unexpected[:5])}"
        )


class Ledger:
    """Reads every process's file in ``folder``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path in self.folder.glob("*.log"):
            # Only whole lines: a reader can see another process's write half done.
            text = path.read_text()
            for line in text[: text.rfind("\n") + 1].splitlines():
                if line.strip():
                    out.append(json.loads(line))
        out.sort(key=lambda e: e["t"])
        return out

    def kill(self, what: str) -> float:
        """Note that the test killed something now; returns the time noted."""
        record(self.folder, "kill", None, what=what)
        return time.monotonic()

    def executions(self, events: list[dict[str, Any]] | None = None) -> list[Execution]:
        """Pair each start with the end (or self-inflicted death) of the same id and pid."""
        open_runs: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        closed: list[Execution] = []
        for e in self.events() if events is None else events:
            if e["event"] == "start":
                open_runs[(e["id"], e["pid"])].append(e)
            elif e["event"] in ("end", "die"):
                runs = open_runs.get((e["id"], e["pid"]))
                if runs:
                    closed.append(_execution(runs.pop(0), e["t"], e["event"] == "end"))
        for runs in open_runs.values():
            closed.extend(_execution(s, None, False) for s in runs)
        return sorted(closed, key=lambda x: x.start)

    def completions(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for e in self.events():
            if e["event"] == "end":
                counts[e["id"]] += 1
        return counts

    def ends_between(self, t0: float, t1: float, ids: set[str] | None = None) -> int:
        return sum(
            1
            for e in self.events()
            if e["event"] == "end" and t0 <= e["t"] < t1 and (ids is None or e["id"] in ids)
        )

    def check(self, expected: list[str] | set[str]) -> Report:
        wanted = set(expected)
        events = self.events()  # read once: every figure below comes from the same snapshot
        runs = self.executions(events)
        by_id: dict[str, list[Execution]] = defaultdict(list)
        for run in runs:
            by_id[run.id].append(run)
        done = {i: sum(r.completed for r in rs) for i, rs in by_id.items()}
        kills = [e["t"] for e in events if e["event"] == "kill"]
        concurrent = sorted(i for i, rs in by_id.items() if _overlap(rs, kills))
        return Report(
            expected=len(wanted),
            executions=len(runs),
            completed=sum(1 for i in wanted if done.get(i, 0) > 0),
            lost=tuple(sorted(i for i in wanted if done.get(i, 0) == 0)),
            duplicated={i: n for i, n in done.items() if n > 1},
            concurrent=tuple(concurrent),
            cut=sum(1 for r in runs if not r.completed),
            unexpected=tuple(sorted(set(by_id) - wanted)),
        )


def _execution(start: dict[str, Any], end: float | None, completed: bool) -> Execution:
    return Execution(
        id=start["id"],
        pid=start["pid"],
        start=start["t"],
        wall_start=start["wall"],
        end=end,
        completed=completed,
        attempt=start.get("attempt"),
    )


def _overlap(runs: list[Execution], kills: list[float]) -> bool:
    """Two runs of one id overlapping in time.

    A run with no end record died at the latest at the first kill the test noted after
    its start (the test notes a kill only once the processes are gone); with no such kill
    it is counted as still running, which overlaps anything that started after it.
    """
    spans = []
    for r in runs:
        if r.end is not None:
            end = r.end
        else:
            end = min((k for k in kills if k >= r.start), default=float("inf"))
        spans.append((r.start, end))
    spans.sort()
    return any(nxt[0] < prev[1] for prev, nxt in itertools.pairwise(spans))
