"""Serializers: task messages and results in JSON by default; msgpack or pickle when asked.

JSON is what every Celery peer reads and what never runs code when decoded. A project may
send task messages in msgpack (``pip install 'taskq[msgpack]'``), or in pickle, which runs
code of the sender's choosing in the worker that decodes it: pickle is taken only when
``accept_content`` names it as well as ``task_serializer`` (or a task's or a call's
``serializer``), so nobody turns it on by one setting. Results follow the same rule with
their own settings, ``result_serializer`` and ``result_accept_content`` (None: the value of
``accept_content``, as in Celery); the backend's codec (backends/codec.py) applies it.
Events stay JSON (Celery's default), whatever the messages use.

With ``app.setup_security()`` task messages are signed (``auth``, taskq/security.py): the
client sends only signed messages and the worker takes only those.

Settings take names (``"json"``) or content types (``"application/json"``), as Celery's do.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from .exceptions import ConfigurationError

AUTH = "auth"
CONTENT_TYPES = {
    "json": "application/json",
    "msgpack": "application/x-msgpack",
    "pickle": "application/x-python-serialize",
    AUTH: "application/data",  # a signed message (Celery's name and content type)
}
NAMES = {content_type: name for name, content_type in CONTENT_TYPES.items()}


def serializer_name(value: str) -> str:
    """A serializer's name from its name or content type; ValueError for any other."""
    name = NAMES.get(value, value)
    if name not in CONTENT_TYPES:
        raise ValueError(f"expected one of {', '.join(CONTENT_TYPES)} (or their content types)")
    return name


def accepted_types(accept: Iterable[str]) -> frozenset[str]:
    """The content types a worker decodes, from ``accept_content``."""
    return frozenset(CONTENT_TYPES[serializer_name(a)] for a in accept)


def check_sending(serializer: str, accept: Iterable[str]) -> None:
    """Refuse pickle unless ``accept_content`` names it too; msgpack needs its package."""
    name = serializer_name(serializer)
    accepted = {serializer_name(a) for a in accept}
    if AUTH in accepted and name != AUTH:
        raise ConfigurationError(
            f"Message signing is on (accept_content names 'auth'): a task message in "
            f"{name!r} would go unsigned, and workers that check signatures refuse it. "
            "Leave serializer= unset, or set it to 'auth'."
        )
    if name == "pickle" and "pickle" not in {serializer_name(a) for a in accept}:
        raise ConfigurationError(
            "Sending task messages in pickle needs accept_content to name 'pickle' as well: "
            "a pickled message runs code of its sender's choosing in the worker that reads "
            "it, so taskq turns it on only when both settings say so."
        )
    if name in ("msgpack", AUTH):
        check_available(name)


def check_available(name: str) -> None:
    if name == "msgpack":
        try:
            importlib.import_module("msgpack")
        except ImportError as exc:
            raise ConfigurationError(
                f"The msgpack serializer needs the msgpack package ({exc}): "
                "pip install 'taskq[msgpack]'"
            ) from exc
    if name == AUTH:
        try:
            importlib.import_module("cryptography")
        except ImportError as exc:
            raise ConfigurationError(
                f"Message signing (auth) needs the cryptography package ({exc}): "
                "pip install 'taskq[auth]'"
            ) from exc


def check_signing(conf: Any, signed: bool) -> None:
    """``auth`` in the serializer settings needs ``app.setup_security()`` first."""
    names = {serializer_name(conf.task_serializer), *map(serializer_name, conf.accept_content)}
    if AUTH in names and not signed:
        raise ConfigurationError(
            "task_serializer or accept_content names 'auth' (signed messages): call "
            "app.setup_security() to load the key and certificates that sign and check them"
        )


def result_accept(conf: Any) -> tuple[str, ...]:
    """What a result reader decodes: ``result_accept_content``, else ``accept_content``."""
    accept = conf.result_accept_content
    return tuple(conf.accept_content if accept is None else accept)


def check_conf(conf: Any) -> None:
    """The message serializer settings together: where a client or a worker starts."""
    check_sending(conf.task_serializer, conf.accept_content)
    for name in {serializer_name(a) for a in conf.accept_content}:
        check_available(name)


__all__ = [
    "AUTH",
    "CONTENT_TYPES",
    "accepted_types",
    "check_available",
    "check_conf",
    "check_sending",
    "check_signing",
    "result_accept",
    "serializer_name",
]
