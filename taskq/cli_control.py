"""``taskq inspect|control|status|revoke``: remote control from the command line.

The verbs and their arguments are Celery 5.7's, so ``taskq inspect X`` sends what
``celery inspect X`` sends and works on any worker, Celery's included. On a terminal each
reply is a ``-> node: OK`` line with the result under it, nodes in name order; ``--json``
prints ``{node: result}`` on one line instead. Exit status as Celery's: 69 (EX_UNAVAILABLE)
when no worker replied within ``--timeout`` or the broker cannot be reached, 2 for a
command-line mistake.

Imported at the end of ``cli.py``, whose helpers it uses; it adds its commands to ``main``.
"""

from __future__ import annotations

import json
import os
import signal as signals
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from .app import Taskq
from .cli import _app, _BadArguments, _errors_as_usage, main
from .control import ByNode, flatten_reply
from .exceptions import BrokerUnavailable
from .url import scrub

F = TypeVar("F", bound=Callable[..., Any])
EX_UNAVAILABLE = getattr(os, "EX_UNAVAILABLE", 69)
NO_REPLY = "No nodes replied within time constraint"


class _Unavailable(click.ClickException):
    """No worker answered, or the broker is out of reach: Celery's exit status."""

    exit_code = EX_UNAVAILABLE


def _flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, not {text!r}")


@dataclass(frozen=True)
class Verb:
    """One remote command: its positional arguments (name, type) and a catch-all list."""

    help: str
    args: tuple[tuple[str, Callable[[str], Any]], ...] = ()
    required: int = 0
    variadic: str | None = None

    @property
    def signature(self) -> str:
        names = [f"<{n}>" if i < self.required else f"[{n}]" for i, (n, _) in enumerate(self.args)]
        if self.variadic:
            names.append(f"<{self.variadic}> ..." if self.required > len(self.args) else "...")
        return " ".join(names)

    def arguments(self, command: str, given: Sequence[str]) -> dict[str, Any]:
        """The request's arguments from the command line, as Celery's CLI builds them."""
        too_many = len(given) > len(self.args) and not self.variadic
        if len(given) < self.required or too_many:
            usage = f"taskq {command} {self.signature}".rstrip()
            raise _BadArguments(f"Usage: {usage} (given: {' '.join(given) or 'nothing'}).")
        found: dict[str, Any] = {}
        for (name, kind), text in zip(self.args, given, strict=False):
            try:
                found[name] = kind(text)
            except ValueError as exc:
                raise _BadArguments(f"{command}: bad {name} {text!r}: {exc}") from None
        if self.variadic:
            found[self.variadic] = list(given[len(self.args) :])
        return found


INSPECT: dict[str, Verb] = {
    "active": Verb("Tasks running now."),
    "active_queues": Verb("Queues each worker consumes."),
    "clock": Verb("Each worker's logical clock."),
    "conf": Verb("Each worker's configuration.", (("with_defaults", _flag),)),
    "ping": Verb("Ping the workers."),
    "query_task": Verb("Where these tasks are (active, reserved, ...).", variadic="ids"),
    "registered": Verb("Registered tasks [with these attributes].", variadic="taskinfoitems"),
    "report": Verb("Versions and settings, for a bug report."),
    "reserved": Verb("Tasks received, waiting for a pool slot."),
    "revoked": Verb("Ids of revoked tasks."),
    "scheduled": Verb("Tasks waiting for their ETA."),
    "stats": Verb("Counters, pool, broker and resource usage."),
}
CONTROL: dict[str, Verb] = {
    "add_consumer": Verb(
        "Start consuming a queue.",
        (("queue", str), ("exchange", str), ("exchange_type", str), ("routing_key", str)),
        required=1,
    ),
    "autoscale": Verb("Set the autoscaler's bounds.", (("max", int), ("min", int))),
    "cancel_consumer": Verb("Stop consuming a queue.", (("queue", str),), required=1),
    "disable_events": Verb("Stop sending task events."),
    "enable_events": Verb("Send task events."),
    "heartbeat": Verb("Send a worker heartbeat event now."),
    "pool_grow": Verb("Add pool processes.", (("n", int),)),
    "pool_shrink": Verb("Remove pool processes.", (("n", int),)),
    "rate_limit": Verb(
        "Set a task's rate limit (e.g. 10/s, 5/m; 0 lifts it).",
        (("task_name", str), ("rate_limit", str)),
        required=2,
    ),
    "revoke": Verb("Never run these tasks.", variadic="task_id", required=1),
    "shutdown": Verb("Warm shutdown: finish running tasks, then exit."),
    "terminate": Verb(
        "Revoke these tasks and signal the processes running them.",
        (("signal", str),),
        required=2,
        variadic="task_id",
    ),
    "time_limit": Verb(
        "Set a task's soft [and hard] time limits, in seconds.",
        (("task_name", str), ("soft", float), ("hard", float)),
        required=2,
    ),
}


def _listing(verbs: dict[str, Verb]) -> str:
    usages = {name: f"{name} {verb.signature}".rstrip() for name, verb in verbs.items()}
    width = max(len(usage) for usage in usages.values())
    if width <= 24:
        lines = [f"  {usages[n].ljust(width)}  {v.help}" for n, v in verbs.items()]
    else:  # too wide for one line each: the help goes under its command
        lines = [f"  {usages[n]}\n      {v.help}" for n, v in verbs.items()]
    # \b keeps click from rewrapping the lines of the listing.
    return "\b\nCommands:\n" + "\n".join(lines)


def _verb(kind: str, verbs: dict[str, Verb], name: str) -> Verb:
    if name not in verbs:
        raise _BadArguments(
            f"Unknown {kind} command {name!r}. Known {kind} commands: {', '.join(verbs)}."
        )
    return verbs[name]


def _remote_options(fn: F) -> F:
    """-d, -t and --json, which every command here takes."""
    options = [
        click.option(
            "-d", "--destination", help="Comma-separated node names (default: every worker)."
        ),
        click.option(
            "-t",
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=1.0,
            show_default=True,
            help="Seconds to wait for replies.",
        ),
        click.option("-j", "--json", "as_json", is_flag=True, help="Print {node: reply} as JSON."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _nodes(destination: str | None) -> list[str] | None:
    names = [n.strip() for n in (destination or "").split(",") if n.strip()]
    return names or None


def _ask(ctx: click.Context, send: Callable[[Taskq], ByNode | None], timeout: float) -> ByNode:
    """Run ``send`` on the app; its replies, or exit 69 when there are none."""
    try:
        replies = send(_app(ctx))
    except BrokerUnavailable as exc:
        raise _Unavailable(scrub(str(exc))) from exc
    if not replies:
        raise _Unavailable(
            f"{NO_REPLY}: no worker answered within {timeout:g} s (check -d/--destination, "
            "that workers run on this broker, or give more time with -t)."
        )
    return replies


def _pretty(reply: Any) -> tuple[str, str]:
    """A reply as Celery's CLI shows it: a status word and the text under it."""
    if isinstance(reply, dict) and ("ok" in reply or "error" in reply):
        status = "OK" if "ok" in reply else "ERROR"
        return status, _pretty(reply["ok" if "ok" in reply else "error"])[1]
    if isinstance(reply, list):
        items = [item if isinstance(item, str) else json.dumps(item) for item in reply]
        return "OK", "\n".join(f"* {item}" for item in items) or "- empty -"
    if isinstance(reply, str):
        return "OK", reply
    return "OK", json.dumps(reply, indent=4, sort_keys=True)


def _show(replies: ByNode, as_json: bool, body: bool = True, count: bool = True) -> None:
    if as_json:
        click.echo(json.dumps(replies))
        return
    for node in sorted(replies):
        status, text = _pretty(replies[node])
        click.echo(f"-> {click.style(node, bold=True)}: {status}")
        if body and text:
            click.echo(textwrap.indent(text, "    "))
    if count:
        n = len(replies)
        click.echo(f"\n{n} node{'s' if n != 1 else ''} online.")


def _signal_name(text: str) -> str:
    name = text.strip().upper()
    if name.isdigit():
        try:
            return signals.Signals(int(name)).name
        except ValueError:
            pass
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in signals.Signals.__members__:
        raise _BadArguments(f"Unknown signal {text!r}: give a name such as SIGTERM or SIGKILL.")
    return name


@main.command(epilog=_listing(INSPECT))
@click.argument("command")
@click.argument("args", nargs=-1)
@_remote_options
@click.pass_context
@_errors_as_usage
def inspect(
    ctx: click.Context,
    command: str,
    args: tuple[str, ...],
    destination: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Ask the workers COMMAND (no side effects), e.g. `taskq inspect active`."""
    arguments = _verb("inspect", INSPECT, command).arguments(f"inspect {command}", args)
    nodes = _nodes(destination)
    replies = _ask(
        ctx,
        lambda app: app.control.inspect(nodes, timeout).request(command, **arguments),
        timeout,
    )
    _show(replies, as_json)


@main.command(epilog=_listing(CONTROL))
@click.argument("command")
@click.argument("args", nargs=-1)
@_remote_options
@click.pass_context
@_errors_as_usage
def control(
    ctx: click.Context,
    command: str,
    args: tuple[str, ...],
    destination: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Tell the workers to do COMMAND, e.g. `taskq control rate_limit proj.add 10/s`."""
    arguments = _verb("control", CONTROL, command).arguments(f"control {command}", args)
    nodes = _nodes(destination)

    def send(app: Taskq) -> ByNode | None:
        found = app.control.broadcast(
            command, arguments=arguments, destination=nodes, reply=True, timeout=timeout
        )
        return flatten_reply(found or [])

    _show(_ask(ctx, send, timeout), as_json, count=False)


@main.command()
@_remote_options
@click.pass_context
@_errors_as_usage
def status(ctx: click.Context, destination: str | None, timeout: float, as_json: bool) -> None:
    """List the workers that answer a ping."""
    nodes = _nodes(destination)
    replies = _ask(ctx, lambda app: app.control.inspect(nodes, timeout).ping(), timeout)
    _show(replies, as_json, body=False)


@main.command()
@click.argument("task_ids", nargs=-1, required=True)
@click.option("--terminate", is_flag=True, help="Also stop the task where it is running.")
@click.option(
    "-s",
    "--signal",
    "signal_name",
    default="SIGTERM",
    show_default=True,
    help="With --terminate: the signal to send.",
)
@_remote_options
@click.pass_context
@_errors_as_usage
def revoke(
    ctx: click.Context,
    task_ids: tuple[str, ...],
    terminate: bool,
    signal_name: str,
    destination: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Tell every worker never to run the tasks TASK_IDS."""
    name = _signal_name(signal_name)
    nodes = _nodes(destination)

    def send(app: Taskq) -> ByNode | None:
        found = app.control.revoke(
            list(task_ids), nodes, terminate=terminate, signal=name, reply=True, timeout=timeout
        )
        return flatten_reply(found or [])

    _show(_ask(ctx, send, timeout), as_json, count=False)
