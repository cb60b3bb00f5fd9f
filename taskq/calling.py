"""The options of one ``apply_async``/``send_task`` call, checked, and the message they make."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .message import TaskMessage, new_id
from .serializers import serializer_name
from .signature import signature_dicts

if TYPE_CHECKING:
    from .context import Context
    from .task import Task


@dataclass(frozen=True)
class CallOptions:
    """Every option ``apply_async`` takes, Celery's names. Unknown names are an error."""

    task_id: str | None = None
    countdown: float | None = None
    eta: datetime | None = None
    expires: float | datetime | timedelta | None = None
    queue: Any = None
    exchange: Any = None
    routing_key: str | None = None
    priority: int | None = None
    headers: Mapping[str, Any] | None = None
    serializer: str | None = None
    compression: str | None = None
    link: Any = None
    link_error: Any = None
    ignore_result: bool | None = None
    retry: bool | None = None
    retry_policy: Mapping[str, Any] | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    shadow: str | None = None
    # Set by taskq itself when it re-sends a task (retry) or runs a workflow.
    retries: int = 0
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    chain: Any = None
    chord: Any = None
    origin: str | None = None
    reply_to: str | None = None
    add_to_parent: bool = True
    replaced_task_nesting: int = 0

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> CallOptions:
        if not options:
            return _NO_OPTIONS  # the common delay(): nothing to check, one shared value
        for name in options:
            if name not in OPTION_NAMES:
                close = difflib.get_close_matches(name, OPTION_NAMES, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"apply_async() got an unknown option {name!r}{hint}")
        call = cls(**options)
        if call.serializer is not None:
            try:
                serializer_name(call.serializer)
            except ValueError as exc:
                raise TypeError(f"serializer {call.serializer!r}: {exc}") from None
        if call.countdown is not None and call.eta is not None:
            raise TypeError("give countdown or eta, not both")
        if call.priority is not None and not 0 <= int(call.priority) <= 255:
            raise TypeError("priority must be between 0 and 255")
        return call

    def routing_options(self) -> dict[str, Any]:
        return {"queue": self.queue, "exchange": self.exchange, "routing_key": self.routing_key}


OPTION_NAMES = frozenset(f.name for f in fields(CallOptions))
_NO_OPTIONS = CallOptions()


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _absolute(value: float | datetime | timedelta | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, timedelta):
        return now + value
    return now + timedelta(seconds=float(value))


def expiration_seconds(expires: datetime | None) -> float | None:
    """The AMQP per-message TTL for ``expires`` (0 when already past), as Celery sets it."""
    if expires is None:
        return None
    return max(0.0, (expires - datetime.now(UTC)).total_seconds())


def build_message(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    call: CallOptions,
    task: Task[Any, Any] | None,
    parent: Context | None,
) -> TaskMessage:
    task_id = call.task_id or new_id()
    expires_in = call.expires
    if expires_in is None and task is not None:
        expires_in = task.options.expires
    eta = expires = None
    if call.eta or call.countdown is not None or expires_in is not None:
        now = datetime.now(UTC)  # one clock reading for both, so they agree
        eta = _utc(call.eta) if call.eta else _absolute(call.countdown, now)
        expires = _absolute(expires_in, now)
    ignore_result = call.ignore_result
    if ignore_result is None and task is not None:
        ignore_result = task.ignore_result
    inherit = parent is not None and call.add_to_parent and call.parent_id is None
    root_id = call.root_id or (parent.root_id if inherit and parent else None) or task_id
    parent_id = call.parent_id or (parent.id if inherit and parent else None)
    chord = signature_dicts(call.chord)[0] if call.chord else None
    return TaskMessage(
        id=task_id,
        task=name,
        args=args,
        kwargs=kwargs,
        eta=eta,
        expires=expires,
        retries=call.retries,
        time_limit=call.time_limit,
        soft_time_limit=call.soft_time_limit,
        root_id=root_id,
        parent_id=parent_id,
        group=call.group_id,
        group_index=call.group_index,
        shadow=call.shadow,
        origin=call.origin,
        ignore_result=ignore_result,
        callbacks=signature_dicts(call.link),
        errbacks=signature_dicts(call.link_error),
        chain=signature_dicts(call.chain),
        chord=chord,
        replaced_task_nesting=call.replaced_task_nesting,
        custom_headers=dict(call.headers or {}),
    )
