"""The chord join's rules (backends/chords.py) on the memory and SQLite backends, and what
ends a chord besides success: a failed, revoked or expired member."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from taskq import ChordError, Taskq, chord
from taskq.backends.chords import KeyValueChords
from taskq.backends.memory import MemoryBackend
from taskq.backends.sqlite import SqliteBackend

Start = Callable[..., Any]


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueChords]:
    made: KeyValueChords
    if request.param == "memory":
        made = MemoryBackend()
    else:
        made = SqliteBackend(str(tmp_path / "results.db"))
    yield made
    made.close()  # type: ignore[attr-defined]


def entry(i: int) -> str:
    return f'[1, "t{i}", "SUCCESS", {i}]'


def test_each_member_counts_once_and_only_the_last_claims(backend: KeyValueChords) -> None:
    backend.set_chord_size("g", 3)
    first = backend.chord_part("g", "t0:0", 0, entry(0), "a", 6)
    again = backend.chord_part("g", "t0:0", 0, entry(0), "b", 6)  # the same member, rerun
    second = backend.chord_part("g", "t1:1", 1, entry(1), "c", 6)
    assert (first.count, again.count, second.count) == (1, 1, 2)
    assert not (first.claimed or again.claimed or second.claimed)
    last = backend.chord_part("g", "t2:2", 2, entry(2), "d", 6)
    assert last.complete and last.claimed
    # A member run again now sees the chord complete, but the claim is held.
    late = backend.chord_part("g", "t1:1", 1, entry(1), "e", 6)
    assert late.complete and not late.claimed
    assert backend.chord_entries("g") == [entry(0), entry(1), entry(2)]
    assert backend.chord_claim_body("g", "d", 60) == "go"
    assert backend.chord_cleanup("g", "d", 300)
    assert backend.chord_part("g", "t1:1", 1, entry(1), "f", 6).done


def test_a_dead_claim_runs_out_and_a_new_body_copy_supersedes_the_old(
    backend: KeyValueChords,
) -> None:
    backend.set_chord_size("g", 1)
    assert backend.chord_part("g", "t0:0", 0, entry(0), "old", 1).claimed
    assert backend.chord_claim_body("g", "old", 1) == "go"  # sent, then its worker died
    # Its claim runs out (1 s); the redelivered member takes over and sends a new copy.
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    part = backend.chord_part("g", "t0:0", 0, entry(0), "new", 6)
    while not part.claimed and datetime.now(UTC) < deadline:
        part = backend.chord_part("g", "t0:0", 0, entry(0), "new", 6)
    assert part.claimed
    assert backend.chord_claim_body("g", "new", 60) == "go"
    assert backend.chord_claim_body("g", "old", 60) == "lost"
    # The old copy is dropped when it comes; the new one runs (and may run again if its
    # own worker dies before the ack: a redelivery of the same copy).
    assert not backend.chord_body_starts("g", "old")
    assert backend.chord_body_starts("g", "new")
    assert backend.chord_body_starts("g", "new")
    assert not backend.chord_body_starts("g", "old")


def test_a_body_copy_that_started_is_never_sent_again(backend: KeyValueChords) -> None:
    backend.set_chord_size("g", 1)
    assert backend.chord_part("g", "t0:0", 0, entry(0), "first", 1).claimed
    assert backend.chord_claim_body("g", "first", 1) == "go"
    assert backend.chord_body_starts("g", "first")  # it ran; its worker died before cleanup
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    part = backend.chord_part("g", "t0:0", 0, entry(0), "second", 6)
    while not part.claimed and datetime.now(UTC) < deadline:
        part = backend.chord_part("g", "t0:0", 0, entry(0), "second", 6)
    assert part.claimed
    assert backend.chord_claim_body("g", "second", 60) == "ran"


def test_a_new_run_of_the_same_chord_starts_afresh(backend: KeyValueChords) -> None:
    backend.set_chord_size("g", 1)
    assert backend.chord_part("g", "t0:0", 0, entry(0), "a", 6).claimed
    assert backend.chord_claim_body("g", "a", 60) == "go"
    assert backend.chord_body_starts("g", "a")
    assert backend.chord_cleanup("g", "a", 300)
    backend.set_chord_size("g", 1)  # a frozen chord applied again: same group id
    assert backend.chord_part("g", "t0:0", 0, entry(0), "b", 6).claimed
    assert backend.chord_claim_body("g", "b", 60) == "go"


def test_an_expired_member_fails_the_chord(app: Taskq, run_worker: Start) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def tsum(values: list[int]) -> int:
        return sum(values)

    run_worker()
    past = datetime.now(UTC) - timedelta(seconds=1)
    expired = add.si(2, 2).set(expires=past)
    result = chord([add.si(1, 1), expired], tsum.s()).delay()
    with pytest.raises(ChordError, match="TaskRevokedError"):
        result.get(timeout=10)
    assert result.parent.results[1].state == "REVOKED"
