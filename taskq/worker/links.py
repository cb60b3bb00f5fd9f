"""What follows a task: its callbacks and the rest of its chain, or, when it fails, its
errbacks and the failure of every step that will now never run.

Callbacks and chain steps may be any canvas (a group, a chord, a chain): each is applied
as a signature, here in the worker, and only ordinary task messages are sent, as a Celery
worker does. A failure is stored on the ids the client already holds for the steps that
will not run (they were frozen when the workflow was applied), so no ``get()`` waits for
ever on a step that is never coming.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..join import fail_signature
from ..signature import Signature

if TYPE_CHECKING:
    from ..app import Taskq
    from ..context import Context
    from ..message import TaskMessage

logger = logging.getLogger(__name__)


def apply_callbacks(app: Taskq, msg: TaskMessage, retval: Any) -> None:
    parent = {"parent_id": msg.id, "root_id": msg.root_id or msg.id}
    for data in msg.callbacks:
        _apply(app, msg, data, (retval,), parent)
    if msg.chain:
        *rest, following = msg.chain
        _apply(app, msg, following, (retval,), {**parent, "chain": list(rest) or None})


def _apply(
    app: Taskq, msg: TaskMessage, data: Mapping[str, Any], args: tuple[Any, ...], extra: Any
) -> None:
    try:
        Signature.from_dict(data, app).apply_async(args, **extra)
    except Exception:
        logger.exception("Task %s[%s]: could not send %r", msg.task, msg.id, data.get("task"))


def apply_errbacks(
    app: Taskq, msg: TaskMessage, exc: BaseException, tb: str | None, request: Context | None
) -> None:
    """Celery's two conventions: an errback registered here whose function takes more than
    one argument is called in place with ``(request, exc, traceback)``; any other is sent
    as a task with the failed task's id."""
    for data in msg.errbacks:
        sig = Signature.from_dict(data, app)
        task = app.tasks.get(sig.task)
        try:
            if task is not None and request is not None and task.takes_request:
                sig(request, exc, tb)
            else:
                sig.apply_async((msg.id,), parent_id=msg.id, root_id=msg.root_id or msg.id)
        except Exception:
            logger.exception("Task %s[%s]: errback %r failed", msg.task, msg.id, sig.task)


def fail_chain(app: Taskq, msg: TaskMessage, exc: BaseException, tb: str | None) -> None:
    """The task failed: the rest of its chain never runs, so each step fails with it."""
    for data in msg.chain:
        try:
            fail_signature(app, Signature.from_dict(data, app), exc, tb, errbacks=False)
        except Exception:
            logger.exception("Task %s[%s]: could not fail the chain after it", msg.task, msg.id)
