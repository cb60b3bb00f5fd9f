"""The ``taskq`` command: ``taskq -A proj worker|call|result|purge|dead``.

This is the only place that resolves ``module:attr`` strings into objects.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from . import __version__, states
from .app import Taskq
from .backoff import describe
from .deadletter import DeadLetters
from .exceptions import BrokerUnavailable, TaskqError
from .url import mask_url, scrub

F = TypeVar("F", bound=Callable[..., Any])

# The worker's and beat's -l, with Celery's level names in any case.
loglevel_option = click.option(
    "-l",
    "--loglevel",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
)


def find_app(spec: str) -> Taskq:
    """The app ``-A`` names, found where Celery looks.

    ``module:attr`` names it. For ``proj``: the attribute ``app``, ``taskq`` or ``celery``
    of ``proj``; then the same in the modules ``proj.taskq`` and ``proj.celery`` (a
    Django-style project keeps its app there); then the only Taskq app in ``proj``.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the project dir is importable
    module_name, _, attr = spec.partition(":")
    module = _import_app_module(module_name)
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, Taskq):
            raise click.UsageError(f"{module_name}:{attr} is not a Taskq app")
        return found
    for candidate in (module, *_app_submodules(module)):
        for name in APP_NAMES:
            found = getattr(candidate, name, None)
            if isinstance(found, Taskq):
                return found
    apps = {id(v): v for v in vars(module).values() if isinstance(v, Taskq)}
    if len(apps) == 1:
        return next(iter(apps.values()))
    if not apps:
        raise click.UsageError(
            f"No Taskq app in {module_name!r} (looked for app, taskq or celery in it, in "
            f"{module_name}.taskq and in {module_name}.celery); name it: -A module:attr"
        )
    raise click.UsageError(f"Several Taskq apps in {module_name!r}; name one with -A module:attr")


APP_NAMES = ("app", "taskq", "celery")


def _import_app_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise click.UsageError(f"Cannot import app module {name!r}: {exc}") from exc


def _app_submodules(module: Any) -> list[Any]:
    """``proj.taskq`` and ``proj.celery`` when ``proj`` is a package that has them."""
    if not hasattr(module, "__path__"):
        return []
    found = []
    for sub in ("taskq", "celery"):
        name = f"{module.__name__}.{sub}"
        if importlib.util.find_spec(name) is not None:
            found.append(_import_app_module(name))
    return found


def _app(ctx: click.Context) -> Taskq:
    spec = ctx.obj.get("app") if ctx.obj else None
    if not spec:
        raise click.UsageError("Which app? Give -A/--app module[:attr], or set TASKQ_APP.")
    app = find_app(spec)
    if ctx.obj.get("broker"):
        app.conf.broker_url = ctx.obj["broker"]
    if ctx.obj.get("backend"):
        app.conf.result_backend = ctx.obj["backend"]
    return app


def _errors_as_usage(fn: F) -> F:
    """Every failure of a command is one ``Error: ...`` line that says what is wrong.

    The traceback is for those who ask (``taskq --traceback ...``). Any URL in the message
    is masked: library errors sometimes quote the broker URL, password and all.
    """

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            ctx = click.get_current_context(silent=True)
            root = ctx.find_root() if ctx is not None else None
            asked = root is not None and (root.obj or {}).get("traceback")
            if asked or logging.getLogger().isEnabledFor(logging.DEBUG):
                click.echo(scrub(traceback.format_exc()).rstrip(), err=True)
            raise click.ClickException(_explain(exc)) from exc

    return run  # type: ignore[return-value]


class _BadArguments(click.ClickException):
    """A command-line mistake (status 2), said in one line without the usage text."""

    exit_code = 2


def _explain(exc: Exception) -> str:
    if isinstance(exc, TaskqError):
        return scrub(str(exc))
    return (
        f"{scrub(describe(exc))}. This is unexpected: run the command again with "
        "`taskq --traceback ...` to see where it happened, and report it."
    )


@contextlib.contextmanager
def _broker(app: Taskq) -> Iterator[Any]:
    """A broker connection whose failures say which broker and what to check."""
    try:
        with app.connection() as conn:
            conn.ensure_connection(max_retries=0)
            yield conn
    except (TaskqError, click.ClickException, click.Abort):
        raise
    except Exception as exc:
        raise BrokerUnavailable(
            f"Cannot reach the broker at {mask_url(app.broker_url)}: {describe(exc)}. "
            "Check that it is running and that broker_url (or -b) is right."
        ) from exc


@click.group()
@click.version_option(__version__, prog_name="taskq")
@click.option("-A", "--app", envvar="TASKQ_APP", help="The app: module[:attr].")
@click.option("-b", "--broker", help="Broker URL (overrides broker_url).")
@click.option("--result-backend", help="Result backend URL (overrides result_backend).")
@click.option("--traceback", "show_traceback", is_flag=True, help="Show where an error happened.")
@click.pass_context
def main(
    ctx: click.Context,
    app: str | None,
    broker: str | None,
    result_backend: str | None,
    show_traceback: bool,
) -> None:
    """taskq: a distributed task queue, wire-compatible with Celery."""
    ctx.obj = {
        "app": app,
        "broker": broker,
        "backend": result_backend,
        "traceback": show_traceback,
    }


def _json_arg(name: str, value: str, kind: type) -> Any:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=name) from None
    if not isinstance(parsed, kind):
        raise click.BadParameter(f"must be a JSON {kind.__name__}", param_hint=name)
    return parsed


@main.command()
@click.argument("name")
@click.option("-a", "--args", "args_", default="[]", help="Positional args as a JSON array.")
@click.option("-k", "--kwargs", "kwargs_", default="{}", help="Keyword args as a JSON object.")
@click.option("--countdown", type=float)
@click.option("--expires", type=float, help="Seconds from now.")
@click.option("--queue")
@click.pass_context
@_errors_as_usage
def call(
    ctx: click.Context,
    name: str,
    args_: str,
    kwargs_: str,
    countdown: float | None,
    expires: float | None,
    queue: str | None,
) -> None:
    """Send task NAME; prints its id."""
    args = _json_arg("--args", args_, list)
    kwargs = _json_arg("--kwargs", kwargs_, dict)
    app = _app(ctx)
    options = {
        k: v
        for k, v in {"countdown": countdown, "expires": expires, "queue": queue}.items()
        if v is not None
    }
    try:
        result = app.send_task(name, args, kwargs, **options)
    except TypeError as exc:  # the task is known here, and these arguments do not fit it
        raise _BadArguments(
            f"Task {name!r} cannot take args={args!r} kwargs={kwargs!r}: {exc}. "
            "Give its arguments with -a '[...]' and -k '{...}'."
        ) from exc
    click.echo(result.id)


@main.command()
@click.argument("task_id")
@click.option("--wait", is_flag=True, help="Wait until the task is done.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds.")
@click.option("--traceback", "show_tb", is_flag=True, help="Show the traceback of a failure.")
@click.pass_context
@_errors_as_usage
def result(
    ctx: click.Context, task_id: str, wait: bool, timeout: float | None, show_tb: bool
) -> None:
    """Show the state and result of task TASK_ID."""
    res = _app(ctx).AsyncResult(task_id)
    if wait:
        res.get(timeout=timeout, propagate=False)
    state = res.state
    value = res.result
    if state in states.EXCEPTION_STATES:
        click.echo(f"{state}: {type(value).__name__}: {value}")
        if show_tb and res.traceback:
            click.echo(res.traceback.rstrip())
        ctx.exit(1 if state in states.PROPAGATE_STATES else 0)
    elif state in states.READY_STATES:
        click.echo(json.dumps(value, default=repr))
    else:
        click.echo(state)


@main.command()
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("-Q", "--queues", help="Comma-separated queues (default: the app's queues).")
@click.pass_context
@_errors_as_usage
def purge(ctx: click.Context, force: bool, queues: str | None) -> None:
    """Delete every waiting message from the queues."""
    app = _app(ctx)
    names = (
        [q.strip() for q in (queues or "").split(",") if q.strip()]
        or [q.name for q in app.declared_queues()]
        or [app.conf.task_default_queue]
    )
    if not force:
        click.confirm(f"Delete all waiting messages in {', '.join(names)}?", abort=True)
    total = 0
    with _broker(app) as conn:
        channel = conn.default_channel
        for name in names:
            total += _purge_queue(app, channel, name)
    click.echo(f"Purged {total} message{'s' if total != 1 else ''} from {', '.join(names)}.")


def _purge_queue(app: Taskq, channel: Any, name: str) -> int:
    queue = app.default_queue() if name == app.conf.task_default_queue else None
    from .amqp import make_queue

    bound = (queue or make_queue(name, queue_type=app.conf.task_default_queue_type))(channel)
    bound.declare()
    return int(bound.purge() or 0)


@main.group()
def dead() -> None:
    """Dead letters: messages the workers will not run again by themselves."""


@dead.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@click.pass_context
@_errors_as_usage
def dead_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List dead letters, oldest first."""
    letters = DeadLetters(_app(ctx.find_root()))
    found = letters.list(limit)
    if as_json:
        click.echo(json.dumps([letter.summary() for letter in found], indent=2))
        return
    for letter in found:
        click.echo(
            f"{letter.id or '-'}  {letter.task or '-'}  deliveries={letter.deliveries}  "
            f"{letter.dead_at or '-'}  {letter.reason}"
        )
    click.echo(f"{len(found)} dead letter(s) shown from {letters.name!r} (--limit {limit}).")


@dead.command("show")
@click.argument("task_id")
@click.pass_context
@_errors_as_usage
def dead_show(ctx: click.Context, task_id: str) -> None:
    """Show one dead letter: why it died, its headers and its body."""
    letters = DeadLetters(_app(ctx.find_root()))
    letter = letters.get(task_id)
    if letter is None:
        raise click.ClickException(f"No dead letter with id {task_id!r} in {letters.name!r}.")
    click.echo(json.dumps(letter.summary(), indent=2))
    click.echo(f"content-type: {letter.content_type}  encoding: {letter.content_encoding}")
    click.echo("headers: " + json.dumps(dict(letter.headers), indent=2, default=repr))
    click.echo("body: " + letter.body_text())


@dead.command("requeue")
@click.argument("task_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Requeue every dead letter.")
@click.pass_context
@_errors_as_usage
def dead_requeue(ctx: click.Context, task_ids: tuple[str, ...], everything: bool) -> None:
    """Send dead letters back to their queue with a fresh delivery count."""
    if bool(task_ids) == everything:
        raise click.UsageError("Give task ids to requeue, or --all (not both).")
    count = DeadLetters(_app(ctx.find_root())).requeue(None if everything else task_ids)
    click.echo(f"Requeued {count} message(s).")
    if task_ids and count < len(set(task_ids)):
        raise click.ClickException(f"{len(set(task_ids)) - count} id(s) were not found.")


@dead.command("purge")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@_errors_as_usage
def dead_purge(ctx: click.Context, force: bool) -> None:
    """Delete every dead letter."""
    letters = DeadLetters(_app(ctx.find_root()))
    if not force:
        click.confirm(f"Delete every message in {letters.name!r}?", abort=True)
    click.echo(f"Purged {letters.purge()} dead letter(s).")


# The worker command lives in cli_worker.py, the remote-control ones (inspect, control,
# status, revoke) in cli_control.py and `events` in cli_events.py. Imported last, since
# they use the helpers above; importing them adds them to `main`.
from . import cli_beat, cli_control, cli_dashboard, cli_events, cli_worker  # noqa: E402, F401
