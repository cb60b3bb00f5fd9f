"""Keep the docs true to the code: settings, anchors, CLI options and call options.

These tests read the Markdown files and compare them with the objects they describe, so a
setting, option or function that is added, renamed or removed fails here until the docs
follow.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import click
import pytest

from taskq.calling import CallOptions
from taskq.cli import main as cli_main
from taskq.cli_worker import worker as worker_command
from taskq.config import SETTINGS
from taskq.options import TaskOptions

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

# Fields of CallOptions that taskq fills in itself when it re-sends a task (retry, callback,
# chain step); tasks.md names them but need not document each one as a user option.
INTERNAL_CALL_OPTIONS = frozenset(
    {
        "retries", "root_id", "parent_id", "group_id", "group_index", "chain", "chord",
        "origin", "reply_to", "add_to_parent", "replaced_task_nesting",
    }
)  # fmt: skip

# `taskq/worker/consumer.py:Consumer._on_message`: a path under taskq/, then a dotted name.
ANCHOR = re.compile(r"\b(taskq/[\w/]+\.py):([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
CODE_SPAN = re.compile(r"`([^`]+)`")


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def code_spans(text: str) -> set[str]:
    """The `inline code` of a Markdown text, outside fenced blocks."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return set(CODE_SPAN.findall(prose))


def table_keys(text: str) -> set[str]:
    """The `code` in the first cell of each Markdown table row: the documented names."""
    keys: set[str] = set()
    for line in text.splitlines():
        if line.startswith("|"):
            keys.update(CODE_SPAN.findall(line.strip("|").split("|")[0]))
    return keys


def mentions_option(text: str, opt: str) -> bool:
    # "-c" must appear as its own token, not inside "--concurrency" or "-c2".
    return re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text) is not None


# ---------------------------------------------------------------- configuration.md


SETTINGS_HEADER = ["Setting", "Type", "Default", "Meaning"]


def setting_rows() -> dict[str, list[str]]:
    """Rows of the ``| Setting | Type | Default | Meaning |`` tables, by setting name."""
    rows: dict[str, list[str]] = {}
    in_settings_table = False
    for line in read("configuration.md").splitlines():
        if not line.startswith("|"):
            in_settings_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if cells == SETTINGS_HEADER:
            in_settings_table = True
        match = re.fullmatch(r"`(\w+)`", cells[0])
        if in_settings_table and match and len(cells) == len(SETTINGS_HEADER):
            assert match.group(1) not in rows, f"{match.group(1)} has two rows"
            rows[match.group(1)] = cells
    return rows


def test_every_setting_is_documented() -> None:
    spans = code_spans(read("configuration.md"))
    missing = sorted(name for name in SETTINGS if name not in spans)
    assert not missing, f"docs/configuration.md does not mention: {', '.join(missing)}"


def test_every_setting_has_a_row_in_a_settings_table() -> None:
    missing = sorted(set(SETTINGS) - set(setting_rows()))
    assert not missing, f"no `| setting | type | default | meaning |` row for: {missing}"


def test_no_documented_setting_is_unknown() -> None:
    unknown = sorted(set(setting_rows()) - set(SETTINGS))
    assert not unknown, f"docs/configuration.md documents settings taskq lacks: {unknown}"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_documented_default_matches_config(name: str) -> None:
    row = setting_rows().get(name)
    if row is None:
        pytest.fail(f"no table row for {name} in docs/configuration.md")
    defaults = CODE_SPAN.findall(row[2])
    assert defaults, f"{name}: the default cell {row[2]!r} has no `literal`"
    try:
        documented = ast.literal_eval(defaults[0])
    except (ValueError, SyntaxError):
        pytest.fail(f"{name}: the default `{defaults[0]}` is not a Python literal")
    setting = SETTINGS[name]
    # Compare through the setting's own check, so ["json"] and ("json",) or 4 and 4.0 agree.
    assert setting.check(documented) == setting.default, (
        f"{name}: docs say {defaults[0]}, config.py says {setting.default!r}"
    )


# ---------------------------------------------------------------- architecture.md


@cache
def module_tree(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)


def defined_names(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    """Names bound at this level: functions, classes, (annotated) assignments."""
    names: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return names


def resolve(path: str, dotted: str) -> str | None:
    """None when ``dotted`` is defined in ``path``, else why not."""
    if not (ROOT / path).is_file():
        return f"{path} does not exist"
    body: list[ast.stmt] = module_tree(path).body
    for i, part in enumerate(dotted.split(".")):
        node = defined_names(body).get(part)
        if node is None:
            where = ".".join(dotted.split(".")[:i]) or path
            return f"{part!r} is not defined in {where}"
        body = node.body if isinstance(node, ast.ClassDef) else []
    return None


def architecture_anchors() -> list[tuple[str, str]]:
    return sorted(set(ANCHOR.findall(read("architecture.md"))))


def test_architecture_has_anchors() -> None:
    # Guards the test below against a regex that silently matches nothing.
    assert len(architecture_anchors()) >= 20


@pytest.mark.parametrize(("path", "name"), architecture_anchors())
def test_architecture_anchor_resolves(path: str, name: str) -> None:
    problem = resolve(path, name)
    assert problem is None, f"docs/architecture.md anchor {path}:{name}: {problem}"


def test_anchor_resolver_rejects_a_wrong_name() -> None:
    assert resolve("taskq/worker/consumer.py", "Consumer._on_message") is None
    assert resolve("taskq/worker/consumer.py", "Consumer.no_such_method") is not None
    assert resolve("taskq/no_such_file.py", "x") is not None


# ---------------------------------------------------------------- worker.md


def option_strings(command: click.Command) -> list[str]:
    found: list[str] = []
    for param in command.params:
        if isinstance(param, click.Option):
            found += [*param.opts, *param.secondary_opts]
    return found


def test_every_worker_option_is_documented() -> None:
    text = read("worker.md")
    options = option_strings(worker_command)
    assert "--concurrency" in options  # the command really was inspected
    missing = [opt for opt in options if not mentions_option(text, opt)]
    assert not missing, f"docs/worker.md does not mention taskq worker {missing}"


def test_every_command_and_global_option_is_documented() -> None:
    # The worker's commands in worker.md, the fleet's (inspect, control, ...) in monitoring.md.
    text = read("worker.md") + read("monitoring.md")
    assert isinstance(cli_main, click.Group)
    missing = [f"taskq {name}" for name in cli_main.commands if f"taskq {name}" not in text]
    for name, command in cli_main.commands.items():
        missing += [
            f"taskq {name} {opt}"
            for opt in option_strings(command)
            if not mentions_option(text, opt)
        ]
    missing += [
        opt for opt in [*option_strings(cli_main), "--version"] if not mentions_option(text, opt)
    ]
    assert not missing, f"docs/worker.md does not mention: {missing}"


# ---------------------------------------------------------------- tasks.md


def field_names(cls: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_every_user_call_option_is_documented() -> None:
    spans = table_keys(read("tasks.md"))
    user_options = [n for n in field_names(CallOptions) if n not in INTERNAL_CALL_OPTIONS]
    assert "countdown" in user_options
    missing = [name for name in user_options if name not in spans]
    assert not missing, f"docs/tasks.md has no table row for apply_async options {missing}"


def test_internal_call_options_still_exist() -> None:
    # If one is renamed or removed, the exclusion list above must follow.
    gone = sorted(INTERNAL_CALL_OPTIONS - set(field_names(CallOptions)))
    assert not gone, f"CallOptions has no field {gone}: update INTERNAL_CALL_OPTIONS"


def test_every_task_option_is_documented() -> None:
    spans = table_keys(read("tasks.md"))
    missing = [name for name in ["name", *field_names(TaskOptions)] if name not in spans]
    assert not missing, f"docs/tasks.md has no table row for @app.task options {missing}"


def test_the_api_reference_is_current() -> None:
    done = subprocess.run(
        [sys.executable, str(DOCS / "api_reference.py"), "--check"], capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, "docs/api.md is not current: run `make docs`" + done.stderr
