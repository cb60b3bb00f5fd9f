"""A catalogue of bad task messages, as raw bytes, for F8.

Every message carries a unique token in its body, so that its dead letter can be found
even when the message has no usable task id; ``body`` is exactly what is published, so a
dead letter can be compared with it byte for byte.
"""

from __future__ import annotations

import json
import pickle
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from taskq.message import TaskMessage, to_headers
from tests.faults.fault_tasks import WORK

JSON = "application/json"
MAX_MESSAGE_SIZE = 64 * 1024  # task_max_message_size for F8: small, so oversize is cheap


@dataclass(frozen=True)
class Bad:
    kind: str
    body: bytes
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    task_id: str | None  # the id a worker can recover from the headers, if any
    token: str


def _headers(task: str = WORK, **changes: Any) -> tuple[str, dict[str, Any]]:
    task_id = str(uuid.uuid4())
    headers = to_headers(TaskMessage(id=task_id, task=task, args=(0.001,)))
    headers.update(changes)
    return task_id, headers


def _valid_body(token: str, *args: Any) -> bytes:
    return json.dumps([list(args) or [0.001], {}, {"chord": None, "token": token}]).encode()


def make(kind: str) -> Bad:
    """One bad message of ``kind`` (see KINDS)."""
    token = f"tok-{uuid.uuid4().hex}"
    task_id: str | None
    task_id, headers = _headers()
    ct, enc = JSON, "utf-8"
    if kind == "bad_json":
        body = b'{"not json ' + token.encode()
    elif kind == "non_utf8":
        body = b"\xff\xfe\xfd[[0.001], {}, {}] " + token.encode()
    elif kind == "truncated":
        body = _valid_body(token)[:-3]
    elif kind == "wrong_shape":
        body = json.dumps([token, 1]).encode()  # two elements, not [args, kwargs, embed]
    elif kind == "missing_headers":
        task_id, headers = None, {}
        body = _valid_body(token)
    elif kind == "missing_id":
        del headers["id"]
        task_id, body = None, _valid_body(token)
    elif kind == "wrong_typed_headers":
        headers.update(retries="many", timelimit="soon", eta=12345)
        body = _valid_body(token)
    elif kind == "unknown_task":
        task_id, headers = _headers(task="faults.nope")
        body = _valid_body(token)
    elif kind == "wrong_arguments":
        body = _valid_body(token, 1, 2, 3, "four")  # work() takes one argument
    elif kind == "bad_compression":
        headers["compression"] = "application/x-gzip"  # but the body is not gzip
        body = _valid_body(token)
    elif kind == "pickle":
        ct, enc = "application/x-python-serialize", "binary"
        body = pickle.dumps(((0.001,), {}, {})) + token.encode()
    elif kind == "deeply_nested":
        # Valid JSON, 20,000 arrays deep: more than any decoder's recursion allows.
        depth = 20_000
        body = b"[" + b"[" * depth + b"]" * depth + f', {{}}, {{"token": "{token}"}}]'.encode()
    elif kind == "compression_bomb":
        # 20 KB of zlib that inflates to 20 MB, 300 times F8's limit: refused after the
        # first 64 KB of output, and kept compressed.
        headers["compression"] = "application/x-gzip"
        body = zlib.compress(_valid_body(token) + b" " * (20 * 1024 * 1024))
    elif kind == "oversized":
        body = _valid_body(token, "x" * (MAX_MESSAGE_SIZE + 1024))
    else:
        raise ValueError(kind)
    return Bad(kind, body, ct, enc, headers, task_id, token)


KINDS = (
    "bad_json",
    "non_utf8",
    "truncated",
    "wrong_shape",
    "missing_headers",
    "missing_id",
    "wrong_typed_headers",
    "bad_compression",
    "unknown_task",
    "wrong_arguments",
    "pickle",
    "deeply_nested",
    "compression_bomb",
    "oversized",
)
