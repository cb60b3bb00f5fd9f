"""taskq: a distributed task queue for Python, wire-compatible with Celery."""

from __future__ import annotations

from . import states
from .app import Taskq
from .exceptions import (
    BackendError,
    BrokerUnavailable,
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
from .result import AsyncResult, EagerResult
from .signature import Signature
from .task import Context, Task

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "BackendError",
    "BrokerUnavailable",
    "ConfigurationError",
    "Context",
    "DeadLettered",
    "EagerResult",
    "Ignore",
    "MalformedMessage",
    "MaxRetriesExceededError",
    "MessageTooLarge",
    "NoBackendConfigured",
    "NotRegistered",
    "Reject",
    "RemoteError",
    "ResultNotStored",
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
    "states",
]
