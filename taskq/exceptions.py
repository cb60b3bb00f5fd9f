"""Every error taskq raises on purpose derives from one root, ``TaskqError``.

TaskqError
├── ConfigurationError          a setting name or value is wrong
├── NotRegistered               no task of that name in this app (also a KeyError)
├── BrokerUnavailable           the broker could not be reached within the retry policy
├── BackendError                the result backend failed or is missing
│   ├── NoBackendConfigured     get() was called but results are disabled
│   └── ResultNotStored         a result could not be stored within the retry policy
├── TimeoutError                get() waited longer than its timeout (also builtins')
├── MalformedMessage            a message could not be decoded (worker side)
├── MessageTooLarge             a task message is over task_max_message_size (also a ValueError)
├── TaskError                   raised *for* a task run
│   ├── Retry                   control flow: the task asked to be retried
│   ├── Ignore                  control flow: drop the task, store nothing
│   ├── Reject                  control flow: reject the message
│   ├── MaxRetriesExceededError retries ran out and no exception was given
│   ├── TaskRevokedError        the task was revoked or expired
│   ├── WorkerLostError         the process running the task died
│   ├── TimeLimitExceeded       the hard time limit killed the task
│   ├── DeadLettered            the message went to the dead-letter queue, not run (again)
│   ├── SoftTimeLimitExceeded   raised inside the task at the soft time limit
│   └── RemoteError             a task failed with an exception this client can't rebuild
└── SecurityError               a result named a non-exception, or is in a format not accepted
"""

from __future__ import annotations

import builtins
import traceback as _traceback
from datetime import datetime
from typing import Any


class TaskqError(Exception):
    """Root of every error taskq raises on purpose."""


class ConfigurationError(TaskqError):
    """A setting has an unknown name or an invalid value."""


class NotRegistered(TaskqError, KeyError):
    """The task name is not in this app's registry."""

    def __str__(self) -> str:
        return Exception.__str__(self)


class BrokerUnavailable(TaskqError):
    """The broker could not be reached, even after retrying per the retry policy."""


class BackendError(TaskqError):
    """The result backend failed."""


class NoBackendConfigured(BackendError):
    """Results are disabled, so there is nothing to wait for."""


class ResultNotStored(BackendError):
    """A state or result could not be stored, though it was tried again per the policy."""


class TimeoutError(TaskqError, builtins.TimeoutError):
    """A wait for a result took longer than its timeout."""


class MalformedMessage(TaskqError):
    """A broker message is not a task message taskq can run.

    ``task_id`` is set when an id could still be recovered, so that a FAILURE can be stored.
    """

    def __init__(self, reason: str, task_id: str | None = None, task_name: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.task_id = task_id
        self.task_name = task_name


class MessageTooLarge(TaskqError, ValueError):
    """A task message is bigger than task_max_message_size allows."""


class SecurityError(TaskqError):
    """A stored result that must not be decoded (a format not accepted) or built (no exception)."""


class TaskError(TaskqError):
    """Base of the errors raised for a task run."""


class Retry(TaskError):
    """Raised by ``Task.retry()``: the task will run again, this run stops here."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | datetime | None = None,
    ):
        self.message = message
        self.exc = exc
        self.when = when
        super().__init__(message or (repr(exc) if exc is not None else "retry"), when)

    def humanize(self) -> str:
        if isinstance(self.when, int | float):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        reason = self.message or (repr(self.exc) if self.exc is not None else "")
        return f"Retry {self.humanize()}: {reason}" if reason else f"Retry {self.humanize()}"


class Ignore(TaskError):
    """Raised by a task to stop without storing any state."""


class Reject(TaskError):
    """Raised by a task to reject its message (``requeue=True`` puts it back)."""

    def __init__(self, reason: Any = None, requeue: bool = False):
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)


class MaxRetriesExceededError(TaskError):
    """The task asked to retry but has no retries left."""


class TaskRevokedError(TaskError):
    """The task was revoked (or expired) and did not run."""


class WorkerLostError(TaskError):
    """The process running the task exited before the task finished."""


class ChordError(TaskError):
    """A chord's body did not run: a member of its header failed (named in the message)."""


class TimeLimitExceeded(TaskError):
    """The task ran past its hard time limit and its process was killed."""


class DeadLettered(TaskError):
    """The worker moved the message to the dead-letter queue instead of running it (again).

    ``taskq -A proj dead list`` shows it and the reason; ``dead requeue`` sends it back.
    """


class SoftTimeLimitExceeded(TaskError):
    """Raised inside a task when it reaches its soft time limit."""


class RemoteError(TaskError):
    """A task failed with an exception whose class cannot be rebuilt on this client.

    Carries the remote type name, module, message and formatted traceback.
    """

    def __init__(
        self,
        exc_type: str,
        exc_module: str | None,
        exc_message: Any,
        traceback: str | None = None,
    ):
        self.exc_type = exc_type
        self.exc_module = exc_module
        self.exc_message = exc_message
        self.remote_traceback = traceback
        super().__init__(exc_type, exc_message)

    def __str__(self) -> str:
        where = f"{self.exc_module}.{self.exc_type}" if self.exc_module else self.exc_type
        args = self.exc_message
        text = ", ".join(map(str, args)) if isinstance(args, list | tuple) else str(args)
        return f"{where}: {text}"


class ExceptionInfo:
    """What Celery hands handlers as ``einfo``: the exception, its type, its traceback.

    ``traceback`` is the formatted text (as stored with a FAILURE); ``tb`` the traceback
    object while the exception still holds it. Not an error itself.
    """

    def __init__(self, exception: BaseException, traceback: str | None = None):
        self.exception = exception
        self.type = type(exception)
        self.tb = exception.__traceback__
        self.traceback = traceback or "".join(_traceback.format_exception(exception))

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"
