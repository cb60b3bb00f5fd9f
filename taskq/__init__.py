"""taskq: a distributed task queue for Python, wire-compatible with Celery."""

from __future__ import annotations

from . import states
from .app import Taskq
from .canvas import chain, chord, chunks, group, xmap, xstarmap
from .context import Context
from .exceptions import (
    BackendError,
    BrokerUnavailable,
    ChordError,
    ConfigurationError,
    DeadLettered,
    Ignore,
    MalformedMessage,
    MaxRetriesExceededError,
    MessageTooLarge,
    NoBackendConfigured,
    NotRegistered,
    Reject,
    RemoteError,
    ResultNotStored,
    Retry,
    SecurityError,
    SoftTimeLimitExceeded,
    TaskError,
    TaskqError,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
    WorkerLostError,
)
from .log import get_task_logger
from .result import AsyncResult, EagerResult, GroupResult, ResultSet
from .shared import current_app, shared_task
from .signature import Signature, maybe_signature, signature
from .task import Task

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "BackendError",
    "BrokerUnavailable",
    "ChordError",
    "ConfigurationError",
    "Context",
    "DeadLettered",
    "EagerResult",
    "GroupResult",
    "Ignore",
    "MalformedMessage",
    "MaxRetriesExceededError",
    "MessageTooLarge",
    "NoBackendConfigured",
    "NotRegistered",
    "Reject",
    "RemoteError",
    "ResultNotStored",
    "ResultSet",
    "Retry",
    "SecurityError",
    "Signature",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskError",
    "TaskRevokedError",
    "Taskq",
    "TaskqError",
    "TimeLimitExceeded",
    "TimeoutError",
    "WorkerLostError",
    "__version__",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "get_task_logger",
    "group",
    "maybe_signature",
    "shared_task",
    "signature",
    "states",
    "xmap",
    "xstarmap",
]
