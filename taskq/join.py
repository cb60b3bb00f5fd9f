"""The chord join, where a header member ends: count it, and the last one sends the body.

Used by the worker (the tracer, when a member ends) and by ``celery.chord_unlock``.

The counting and the claim are the backend's (backends/chords.py, Celery's rules, so
Celery and taskq workers join the same chord). Here: the member's entry, the wait when
another worker holds the claim (it may have died: its claim runs out, and this worker,
running a redelivered member, takes over), and sending the body once, or failing it with
a ``ChordError`` naming the member that failed.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import states
from .backends import Backend, decode_exception
from .backends.chords import Chords
from .exceptions import ChordError
from .signature import Signature

if TYPE_CHECKING:
    from .app import Taskq

logger = logging.getLogger(__name__)

CLAIM_S = 6  # Celery's claim: max(5, 2 x its 3 s join timeout)
SEND_CLAIM_S = 60  # the claim while the body is sent (broker retries included)
DONE_S = 300  # how long "done" turns away late copies of members
WAIT_STEP = 0.25
# On a body copy sent by a taskq worker: "<group id> <token>" (see chords.py).
BODY_HEADER = "taskq_chord"
JOIN_TIMEOUT_S = 30.0  # every member is counted, so stored: this is a bound, not a wait


def part_returned(
    app: Taskq,
    task_id: str,
    group_id: str | None,
    group_index: int | None,
    body: Mapping[str, Any] | None,
    state: str,
    result: Any,
    parent: tuple[str, str | None] | None = None,
    store: Callable[[], None] | None = None,
) -> None:
    """Count a header member that ended in ``state`` (SUCCESS, FAILURE or REVOKED), after
    ``store`` (the member's own result, stored with the count where the backend can)."""
    backend = app.backend
    if body is None or not group_id or not isinstance(backend, Chords):
        if store is not None:
            store()
        return
    # Celery's member key and score, so a member run by both kinds of worker counts once.
    member = f"{task_id}:{group_index if group_index is not None else '+inf'}"
    score = float(group_index) if group_index is not None else math.inf
    # In the result serializer, as Celery's entries are: workers of both join one chord.
    codec = backend.codec
    value = codec.encode_exception(result) if isinstance(result, BaseException) else result
    entry = codec.encode([1, task_id, state, value])
    token = uuid.uuid4().hex
    part = backend.chord_part(group_id, member, score, entry, token, CLAIM_S, store)
    deadline = time.monotonic() + CLAIM_S + SEND_CLAIM_S
    while part.complete and not part.claimed and not part.done:
        # All are in, and another worker holds the claim: it is sending the body, or it
        # died doing so and its claim will run out.
        if time.monotonic() > deadline:
            logger.warning("Chord %s: its body is still claimed by another worker", group_id)
            return
        time.sleep(WAIT_STEP)
        part = backend.chord_part(group_id, member, score, entry, token, CLAIM_S)
    if part.claimed:
        _send_body(app, backend, group_id, token, Signature.from_dict(body, app), parent)


def _send_body(
    app: Taskq,
    backend: Chords,
    group_id: str,
    token: str,
    body: Signature,
    parent: tuple[str, str | None] | None,
) -> None:
    verdict = backend.chord_claim_body(group_id, token, SEND_CLAIM_S)
    if verdict == "lost":
        logger.warning("Chord %s: another worker took over sending its body", group_id)
        return
    try:
        if verdict == "go":
            values, failure = _joined(app, backend, group_id)
            if failure is not None:
                backend.chord_body_starts(group_id, token)  # no copy of the body may run
                fail_body(app, body, failure)
            else:
                _publish(body, values, f"{group_id} {token}", parent)
    except ChordError as exc:
        fail_body(app, body, exc)
    except Exception as exc:
        logger.exception("Chord %s: could not send its body", group_id)
        fail_body(app, body, ChordError(f"Callback error: {exc!r}"))
    finally:
        if not backend.chord_cleanup(group_id, token, DONE_S):
            logger.warning("Chord %s: its claim ran out before it was marked done", group_id)


def _publish(
    body: Signature, values: list[Any], mark: str, parent: tuple[str, str | None] | None
) -> None:
    headers = {**dict(body.options.get("headers") or {}), BODY_HEADER: mark}
    extra: dict[str, Any] = {"headers": headers}
    if parent is not None:
        extra["parent_id"], extra["root_id"] = parent
    body.apply_async((values,), **extra)


def _joined(app: Taskq, backend: Chords, group_id: str) -> tuple[list[Any], ChordError | None]:
    """The header's values in order: nested as the header was, when the client saved its
    shape (a member whose result is a group); else from the join's entries."""
    saved = app.backend.restore_group(group_id)
    if saved is None:
        return _unpack(app.backend, backend.chord_entries(group_id))
    from .result import GroupResult, result_from_tuple

    header = result_from_tuple(saved, app)
    if not isinstance(header, GroupResult):
        return _unpack(app.backend, backend.chord_entries(group_id))
    try:
        values = header.join(timeout=JOIN_TIMEOUT_S, disable_sync_subtasks=False)
    except Exception as exc:
        failed = next((r.id for r in _flat(header) if r.failed()), group_id)
        return [], ChordError(f"Dependency {failed} raised {exc!r}")
    return list(values), None


def _flat(result: Any) -> Iterator[Any]:
    for member in getattr(result, "results", None) or [result]:
        if hasattr(member, "results"):
            yield from _flat(member)
        else:
            yield member


def _unpack(backend: Backend, entries: list[bytes | str]) -> tuple[list[Any], ChordError | None]:
    values: list[Any] = []
    for raw in entries:
        _, task_id, state, value = backend.codec.decode(raw)
        if state in states.PROPAGATE_STATES:
            exc = decode_exception(value)
            return [], ChordError(f"Dependency {task_id} raised {exc!r}")
        values.append(value)
    return values, None


def fail_body(app: Taskq, body: Signature, exc: BaseException) -> None:
    """The body will not run: its result (and what was to follow it) is this failure."""
    logger.error("Chord body %s[%s] not run: %s", body.task, body.id, exc)
    fail_signature(app, body, exc)


def fail_signature(
    app: Taskq, sig: Signature, exc: BaseException, tb: str | None = None, errbacks: bool = True
) -> None:
    """Store ``exc`` as the result of every task ``sig`` would have run (and count each one
    that belongs to a chord, so the chord ends too)."""
    for leaf in _leaves(sig):
        task_id = leaf.id
        if task_id is None:
            continue
        app.backend.store_result(task_id, exc, states.FAILURE, tb)
        opts = leaf.options
        part_returned(app, task_id, opts.get("group_id"), opts.get("group_index"),
                      opts.get("chord"), states.FAILURE, exc)  # fmt: skip
        for follow in opts.get("chain") or ():
            fail_signature(app, Signature.from_dict(follow, app), exc, tb, errbacks=False)
        if errbacks:
            for data in opts.get("link_error") or ():
                eb = Signature.from_dict(data, app)
                try:
                    eb.apply_async((task_id,), parent_id=task_id)
                except Exception:
                    logger.exception("Could not send errback %r of %s", eb.task, task_id)


def _leaves(sig: Signature) -> Iterator[Signature]:
    """The plain tasks a signature stands for: a group's members, a chord's header and
    body, a chain's steps."""
    kind = sig.subtask_type
    if kind in ("group", "chain"):
        for task in sig.kwargs.get("tasks") or ():
            yield from _leaves(Signature.from_dict(task, sig.app))
    elif kind == "chord":
        header = sig.kwargs.get("header") or ()
        for task in header if isinstance(header, list | tuple) else [header]:
            yield from _leaves(Signature.from_dict(task, sig.app))
        if sig.kwargs.get("body") is not None:
            yield from _leaves(Signature.from_dict(sig.kwargs["body"], sig.app))
    else:
        yield sig
