"""Celery's task message, protocol v2 (and reading v1): build and parse, pure, no I/O.

A message is headers (all task metadata), properties (AMQP basic properties) and a body
``[args, kwargs, embed]`` serialized with kombu's JSON dialect. docs/celery-compatibility.md
gives the field-by-field contract; docs/architecture.md shows where this module sits.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.serialization import loads
from kombu.utils import json as kombu_json

from .exceptions import MalformedMessage

JSON = "application/json"
UTF8 = ("utf-8", "utf8")
REPR_LIMIT = 1024
EMBED_KEYS = ("callbacks", "errbacks", "chain", "chord")
# Every header a Celery 5.7 client sends; anything else the caller passed is "custom".
STANDARD_HEADERS = frozenset(
    {
        "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
        "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin",
        "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps",
    }
)  # fmt: skip


@dataclass(frozen=True)
class TaskMessage:
    """One task call as it travels: what the client builds and what the worker parses."""

    id: str
    task: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    eta: datetime | None = None
    expires: datetime | None = None
    retries: int = 0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    shadow: str | None = None
    origin: str | None = None
    ignore_result: bool | None = None
    callbacks: tuple[dict[str, Any], ...] = ()
    errbacks: tuple[dict[str, Any], ...] = ()
    chain: tuple[dict[str, Any], ...] = ()
    chord: dict[str, Any] | None = None
    replaced_task_nesting: int = 0
    stamped_headers: tuple[str, ...] | None = None
    stamps: Mapping[str, Any] = field(default_factory=dict)
    custom_headers: Mapping[str, Any] = field(default_factory=dict)
    argsrepr: str | None = None
    kwargsrepr: str | None = None


def new_id() -> str:
    """A random (version 4) UUID as text, like ``str(uuid.uuid4())`` at half its cost."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def origin_name() -> str:
    return _origin(os.getpid())


@functools.cache
def _origin(pid: int) -> str:
    return f"gen{pid}@{socket.gethostname()}"  # gethostname is a system call


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


def args_repr(msg: TaskMessage) -> str:
    """The arguments as logs and monitors show them (the sender's own repr when it sent one)."""
    return msg.argsrepr if msg.argsrepr is not None else _short_repr(msg.args)


def kwargs_repr(msg: TaskMessage) -> str:
    return msg.kwargsrepr if msg.kwargsrepr is not None else _short_repr(dict(msg.kwargs))


def to_headers(msg: TaskMessage) -> dict[str, Any]:
    """The protocol-2 header table, in the order and shape a Celery 5.7 client sends."""
    headers: dict[str, Any] = {
        "lang": "py",
        "task": msg.task,
        "id": msg.id,
        "shadow": msg.shadow,
        "eta": _iso(msg.eta),
        "expires": _iso(msg.expires),
        "group": msg.group,
        "group_index": msg.group_index,
        "retries": msg.retries,
        "timelimit": [msg.time_limit, msg.soft_time_limit],
        "root_id": msg.root_id or msg.id,
        "parent_id": msg.parent_id,
        "argsrepr": args_repr(msg),
        "kwargsrepr": kwargs_repr(msg),
        "origin": msg.origin or origin_name(),
        "ignore_result": msg.ignore_result,
        "replaced_task_nesting": msg.replaced_task_nesting,
        "stamped_headers": list(msg.stamped_headers) if msg.stamped_headers is not None else None,
        "stamps": dict(msg.stamps),
    }
    for key, value in msg.custom_headers.items():
        headers.setdefault(key, value)
    return headers


def to_body(msg: TaskMessage) -> list[Any]:
    embed = {
        "callbacks": list(msg.callbacks) or None,
        "errbacks": list(msg.errbacks) or None,
        "chain": list(msg.chain) or None,
        "chord": msg.chord,
    }
    return [list(msg.args), dict(msg.kwargs), embed]


# ---------------------------------------------------------------------------- parsing


def json_loads(text: bytes | bytearray | memoryview | str) -> Any:
    """Read kombu's JSON dialect; at the C decoder's speed when nothing needs kombu's hook.

    kombu's decoder calls a Python hook on every object to revive its typed values
    (``{"__type__": "datetime", ...}``), which triples the cost of a task message. Text
    that cannot hold such a key, not even spelled with escapes, skips the hook.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    elif not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    # One character first: found at memory speed, where the longer needles alone cost
    # 0.4 and 0.9 ms per MB of text even when absent (a 1 MB argument).
    if ("_" in text and "__type__" in text) or ("\\" in text and "\\u" in text):
        return kombu_json.loads(text)
    return json.loads(text)


def decode_body(
    body: Any, content_type: str | None, content_encoding: str | None, accept: frozenset[str]
) -> Any:
    """Decode a raw body, refusing any content type not in ``accept`` before decoding."""
    if not content_type:
        raise MalformedMessage("message has no content type")
    if content_type not in accept:
        raise MalformedMessage(
            f"content type {content_type!r} is not accepted (accept_content allows "
            f"{', '.join(sorted(accept))}); refusing to decode it"
        )
    try:
        if content_type == JSON and (content_encoding or "utf-8").lower() in UTF8:
            return json_loads(body)
        return loads(body, content_type, content_encoding or "utf-8", accept=accept)
    except ContentDisallowed as exc:
        raise MalformedMessage(f"content type refused: {exc}") from None
    except (DecodeError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise MalformedMessage(f"body is not valid {content_type}: {exc}") from None
    except RecursionError:
        # Valid JSON nested deeper than any task's arguments: never a task, and a message
        # that failed this way must still be settled, like any other bad input.
        raise MalformedMessage(f"body is nested too deeply to decode ({content_type})") from None
    except MemoryError:
        raise MalformedMessage(
            f"body does not fit in memory once decoded ({content_type})"
        ) from None


def parse(headers: Mapping[str, Any] | None, body: Any) -> TaskMessage:
    """Turn decoded headers and body (v2, v1 or the hybrid) into a ``TaskMessage``."""
    headers = dict(headers or {})
    if "task" in headers:
        if isinstance(body, Mapping) and "args" in body:
            return _parse_v1({**body, **headers})
        return _parse_v2(headers, body)
    if isinstance(body, Mapping) and "task" in body:
        return _parse_v1(dict(body))
    raise MalformedMessage("no 'task' header and the body is not a protocol-1 task")


def recover_identity(
    headers: Mapping[str, Any] | None, body: Any = None
) -> tuple[str | None, str | None]:
    """Best effort (task_id, task_name) of a message that failed to parse."""
    for source in (headers, body):
        if isinstance(source, Mapping):
            task_id, name = source.get("id"), source.get("task")
            if isinstance(task_id, str) and task_id:
                return task_id, name if isinstance(name, str) else None
    return None, None


def _parse_v2(headers: dict[str, Any], body: Any) -> TaskMessage:
    task_id, name = _identity(headers)
    if not isinstance(body, list | tuple) or len(body) != 3:
        raise MalformedMessage(
            "body must be a 3-element array [args, kwargs, embed]", task_id, name
        )
    args, kwargs, embed = body
    embed = {} if embed is None else embed
    if not isinstance(embed, Mapping):
        raise MalformedMessage("embed (3rd body element) must be an object", task_id, name)
    return _build(headers, task_id, name, args, kwargs, embed)


def _parse_v1(body: dict[str, Any]) -> TaskMessage:
    task_id, name = _identity(body)
    embed = {k: body.get(k) for k in ("callbacks", "errbacks", "chord")}
    fields = dict(body)
    fields.setdefault("group", body.get("taskset"))
    return _build(fields, task_id, name, body.get("args", []), body.get("kwargs", {}), embed)


def _identity(source: Mapping[str, Any]) -> tuple[str, str]:
    task_id, name = source.get("id"), source.get("task")
    if not isinstance(task_id, str) or not task_id:
        raise MalformedMessage(
            "missing or invalid task id", None, name if isinstance(name, str) else None
        )
    if not isinstance(name, str) or not name:
        raise MalformedMessage("missing or invalid task name", task_id)
    return task_id, name


def _build(
    h: Mapping[str, Any], task_id: str, name: str, args: Any, kwargs: Any, embed: Mapping[str, Any]
) -> TaskMessage:
    def bad(reason: str) -> MalformedMessage:
        return MalformedMessage(reason, task_id, name)

    if not isinstance(args, list | tuple):
        raise bad("args must be an array")
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise bad("kwargs must be an object with string keys")
    hard, soft = _timelimit(h.get("timelimit"), bad)
    return TaskMessage(
        id=task_id,
        task=name,
        args=tuple(args),
        kwargs=dict(kwargs),
        eta=_when(h.get("eta"), "eta", bad),
        expires=_when(h.get("expires"), "expires", bad),
        retries=_int(h.get("retries"), "retries", bad) or 0,
        time_limit=hard,
        soft_time_limit=soft,
        root_id=_opt_str(h.get("root_id"), "root_id", bad),
        parent_id=_opt_str(h.get("parent_id"), "parent_id", bad),
        group=_opt_str(h.get("group"), "group", bad),
        group_index=_int(h.get("group_index"), "group_index", bad),
        shadow=_opt_str(h.get("shadow"), "shadow", bad),
        origin=_opt_str(h.get("origin"), "origin", bad),
        ignore_result=_opt_bool(h.get("ignore_result"), bad),
        callbacks=_sigs(embed.get("callbacks"), "callbacks", bad),
        errbacks=_sigs(embed.get("errbacks"), "errbacks", bad),
        chain=_sigs(embed.get("chain"), "chain", bad),
        chord=_sig(embed.get("chord"), "chord", bad),
        replaced_task_nesting=_int(h.get("replaced_task_nesting"), "replaced_task_nesting", bad)
        or 0,
        stamped_headers=tuple(h["stamped_headers"])
        if isinstance(h.get("stamped_headers"), list)
        else None,
        stamps=dict(h["stamps"]) if isinstance(h.get("stamps"), Mapping) else {},
        custom_headers={
            k: v for k, v in h.items() if k not in STANDARD_HEADERS and isinstance(k, str)
        },
        argsrepr=h.get("argsrepr") if isinstance(h.get("argsrepr"), str) else None,
        kwargsrepr=h.get("kwargsrepr") if isinstance(h.get("kwargsrepr"), str) else None,
    )


def _when(value: Any, what: str, bad: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise bad(f"{what} is not an ISO 8601 time: {value!r}") from None
    else:
        raise bad(f"{what} must be an ISO 8601 string or null")
    # A naive time is UTC, as Celery workers read it.
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _int(value: Any, what: str, bad: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{what} must be an integer")
    return value


def _opt_str(value: Any, what: str, bad: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise bad(f"{what} must be a string or null")


def _opt_bool(value: Any, bad: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise bad("ignore_result must be a boolean or null")


def _timelimit(value: Any, bad: Any) -> tuple[float | None, float | None]:
    if value is None:
        return None, None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise bad("timelimit must be [hard, soft]")
    out: list[float | None] = []
    for item in value:
        if item is not None and (isinstance(item, bool) or not isinstance(item, int | float)):
            raise bad("timelimit values must be numbers or null")
        out.append(None if item is None else float(item))
    return out[0], out[1]


def _sig(value: Any, what: str, bad: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("task"), str):
        raise bad(f"{what} must be a signature object with a 'task' name")
    return dict(value)


def _sigs(value: Any, what: str, bad: Any) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise bad(f"{what} must be an array of signatures")
    return tuple(_sig(v, what, bad) or {} for v in value)
