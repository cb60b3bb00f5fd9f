"""Exceptions in stored results: Celery's dict of ``exc_type``, ``exc_message``, ``exc_module``.

Decoding never imports a module named by the data, and builds nothing that is not an
exception class. Under the pickle serializer a result may hold the exception object
itself (codec.py); it is taken as it is.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Callable, Mapping
from typing import Any

from kombu.utils.json import dumps as json_dumps

from .. import exceptions
from ..exceptions import RemoteError, SecurityError

# Errors Celery stores under celery.exceptions; both sides map them to their own class.
SHARED_ERRORS: dict[str, type[BaseException]] = {
    cls.__name__: cls
    for cls in (
        exceptions.NotRegistered,
        exceptions.TaskRevokedError,
        exceptions.ChordError,
        exceptions.TimeLimitExceeded,
        exceptions.SoftTimeLimitExceeded,
        exceptions.WorkerLostError,
        exceptions.MaxRetriesExceededError,
        exceptions.Retry,
        exceptions.Reject,
        exceptions.Ignore,
    )
}
SHARED_MODULES = frozenset({"celery.exceptions", "billiard.exceptions", "taskq.exceptions"})


def encode_exception(
    exc: BaseException, dumps: Callable[[Any], Any] = json_dumps
) -> dict[str, Any]:
    """Celery's exception dict; arguments ``dumps`` cannot encode are stored as their repr."""
    cls = type(exc)
    module = (
        "celery.exceptions"
        if cls.__name__ in SHARED_ERRORS and cls.__module__ == "taskq.exceptions"
        else cls.__module__
    )
    args = list(exc.args)
    try:
        dumps(args)
    except (TypeError, ValueError):
        args = [repr(a) for a in args]
    return {"exc_type": cls.__qualname__, "exc_message": args, "exc_module": module}


def decode_exception(data: Any, traceback: str | None = None) -> BaseException:
    """Rebuild a stored exception without ever importing a module named by the data."""
    if isinstance(data, BaseException):
        return data  # unpickled already, which only an accepted pickle result can be
    if not isinstance(data, Mapping) or "exc_type" not in data:
        return RemoteError("Exception", None, data, traceback)
    name, module = str(data.get("exc_type")), data.get("exc_module")
    message = data.get("exc_message", [])
    cls = _find_class(name, module)
    if cls is None:
        return RemoteError(name, module, message, traceback)
    args = tuple(message) if isinstance(message, list | tuple) else (message,)
    try:
        return cls(*args)
    except Exception:
        # The class's __init__ wants other arguments than its args tuple: build it bare.
        exc = cls.__new__(cls)
        exc.args = args
        return exc


def _find_class(name: str, module: Any) -> type[BaseException] | None:
    if module in SHARED_MODULES and name in SHARED_ERRORS:
        return SHARED_ERRORS[name]
    if module in (None, "builtins"):
        found = getattr(builtins, name, None)
    else:
        # Only modules this process already imported: a result must not make us import code.
        found = sys.modules.get(str(module))
        for part in name.split("."):
            found = getattr(found, part, None) if found is not None else None
    if found is None:
        return None
    if not isinstance(found, type) or not issubclass(found, BaseException):
        raise SecurityError(f"Result names {module}.{name}, which is not an exception class")
    return found
