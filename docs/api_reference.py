"""Writes docs/api.md, the API reference, from the public objects' signatures and docstrings.

    python docs/api_reference.py          # rewrite docs/api.md
    python docs/api_reference.py --check  # exit 1 if docs/api.md is not current

tests/unit/test_docs.py runs the check, so the reference never drifts from the code.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import taskq
from taskq import schedules, signals
from taskq.contrib import testing
from taskq.log import get_logger, get_task_logger

OUT = Path(__file__).resolve().parent / "api.md"
HEADER = """# API reference

Generated from the code by `docs/api_reference.py` (do not edit by hand; `make docs`
rewrites it, and a test fails when it is not current). The guides say how to use these:
[tasks](tasks.md), [canvas](canvas.md), [configuration](configuration.md),
[signals](signals.md), [testing](testing.md).
"""

# (section, objects) in reading order; classes list their public methods and properties.
SECTIONS: list[tuple[str, list[Any]]] = [
    ("The app", [taskq.Taskq, taskq.shared_task, taskq.current_app]),
    ("Tasks", [taskq.Task, taskq.Context]),
    ("Results", [taskq.AsyncResult, taskq.EagerResult, taskq.GroupResult, taskq.ResultSet]),
    (
        "Canvas",
        [
            taskq.Signature,
            taskq.signature,
            taskq.maybe_signature,
            taskq.chain,
            taskq.group,
            taskq.chord,
            taskq.chunks,
            taskq.xmap,
            taskq.xstarmap,
        ],
    ),
    ("Periodic tasks", [schedules.crontab, schedules.schedule]),
    ("Logging", [get_task_logger, get_logger]),
    ("Testing", [testing.start_worker]),
    ("Signals", [signals.Signal]),
]


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip()


class _Raw:
    """Shown as written: annotations are strings here (postponed evaluation)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return _Raw(value)
    if inspect.isclass(value):
        return _Raw(value.__name__)
    return value


def _signature(obj: Any, name: str) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    params = []
    for p in sig.parameters.values():
        p = p.replace(annotation=_plain(p.annotation)) if p.annotation is not p.empty else p
        if p.default is not p.empty and inspect.isclass(p.default):
            p = p.replace(default=_Raw(p.default.__name__))
        params.append(p)
    ret = sig.return_annotation
    sig = sig.replace(
        parameters=params, return_annotation=_plain(ret) if ret is not sig.empty else ret
    )
    return f"{name}{sig}"


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    for name, value in vars(cls).items():
        if name.startswith("_") and name not in ("__init__", "__call__", "__await__"):
            continue
        if isinstance(value, property | staticmethod | classmethod) or callable(value):
            if name == "__init__":
                continue  # the class line shows it
            yield name, value


def _entry(obj: Any, name: str, level: str) -> list[str]:
    lines = [f"{level} `{name}`", ""]
    if isinstance(obj, property):
        lines += ["*property*", ""]
        doc = _summary(obj.fget)
    else:
        target: Callable[..., Any] = (
            obj.__func__ if isinstance(obj, staticmethod | classmethod) else obj
        )
        lines += ["```python", _signature(target, name), "```", ""]
        doc = _summary(target)
    if doc:
        lines += [doc, ""]
    return lines


def render() -> str:
    out = [HEADER]
    for section, objects in SECTIONS:
        out += [f"## {section}", ""]
        for obj in objects:
            name = getattr(obj, "__name__", repr(obj))
            out += _entry(obj, name, "###")
            if inspect.isclass(obj):
                for member, value in _members(obj):
                    out += _entry(value, f"{name}.{member}", "####")
    out += ["## Signals by name", ""]
    for name in sorted(n for n, v in vars(signals).items() if isinstance(v, signals.Signal)):
        args = ", ".join(getattr(signals, name).providing_args) or "—"
        out.append(f"- `taskq.signals.{name}`: {args}")
    out += ["", "## Errors", ""]
    for name in sorted(taskq.__all__):
        value = getattr(taskq, name)
        if inspect.isclass(value) and issubclass(value, BaseException):
            bases = ", ".join(b.__name__ for b in value.__bases__)
            out.append(f"- `taskq.{name}({bases})`: {(_summary(value).splitlines() or [''])[0]}")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        current = OUT.read_text() if OUT.exists() else ""
        sys.exit(0 if current == text else 1)
    OUT.write_text(text)
