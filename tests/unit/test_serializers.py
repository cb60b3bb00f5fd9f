"""Task messages in msgpack and pickle, when a project asks; JSON otherwise (real worker on
the memory transport)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from taskq import ConfigurationError, Taskq


def test_msgpack_messages_round_trip(app: Taskq, run_worker: Callable[..., Any]) -> None:
    app.conf.task_serializer = "msgpack"
    app.conf.accept_content = ["json", "application/x-msgpack"]  # names or content types

    @app.task
    def size(blob: bytes) -> int:
        assert isinstance(blob, bytes)  # msgpack keeps bytes; JSON could not carry them
        return len(blob)

    run_worker("solo")
    assert size.delay(b"\x00\x01\xff").get(timeout=10) == 3


def test_pickle_needs_both_settings_and_then_carries_python_objects(
    app: Taskq, run_worker: Callable[..., Any]
) -> None:
    @app.task(serializer="pickle")
    def year(when: datetime) -> int:
        return when.year

    with pytest.raises(ConfigurationError, match="accept_content to name 'pickle'"):
        year.delay(datetime(2026, 1, 1, tzinfo=UTC))
    app.conf.accept_content = ["json", "pickle"]
    app.close()  # settings are read when the clients are made (docs/configuration.md)
    run_worker("solo")
    assert year.delay(datetime(2026, 1, 1, tzinfo=UTC)).get(timeout=10) == 2026


def test_msgpack_without_its_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    real = importlib.import_module

    def without_msgpack(name: str, *args: Any) -> Any:
        if name == "msgpack":
            raise ImportError("No module named 'msgpack'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_msgpack)
    app = Taskq("nomsgpack", broker="memory://", set_as_current=False, task_serializer="msgpack")
    with pytest.raises(ConfigurationError, match=r"pip install 'taskq\[msgpack\]'"):
        app.amqp  # noqa: B018  # the client checks its settings on first use
