"""``taskq events``: the fleet's events as they happen, Celery's workers' included.

One readable line per event on a terminal; ``--dump`` prints each event as it came, one
JSON object per line, for scripts. ``--count`` and ``--timeout`` end the stream (Ctrl-C
does too). Workers send task events only with ``-E``; without it, heartbeats only.

Imported at the end of ``cli.py``, whose helpers it uses; it adds ``events`` to ``main``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import datetime
from typing import Any

import click

from .cli import _app, _errors_as_usage, main
from .cli_control import _Unavailable
from .events import Event, EventReceiver, fans_out
from .exceptions import BrokerUnavailable
from .url import mask_url, scrub

NAMES_KEPT = 10_000  # task names remembered from task-received, to name later events
DETAILS = {
    "task-received": ("args", "kwargs", "eta", "retries"),
    "task-succeeded": ("result", "runtime"),
    "task-failed": ("exception",),
    "task-retried": ("exception",),
    "task-revoked": ("terminated", "expired", "signum"),
    "task-rejected": ("requeue",),
    "task-sent": ("args", "kwargs", "queue"),
}


class Lines:
    """Turns events into readable lines; remembers task names to name later events."""

    def __init__(self) -> None:
        self.names: OrderedDict[str, str] = OrderedDict()

    def __call__(self, event: Event) -> str:
        kind = str(event.get("type", "?"))
        when = datetime.fromtimestamp(float(event.get("timestamp") or 0)).strftime("%H:%M:%S.%f")
        head = f"{when[:-3]}  {event.get('hostname', '?')}  {kind}"
        if kind.startswith("worker-"):
            load = ",".join(f"{x:.2f}" for x in event.get("loadavg") or ())
            return (
                f"{head}  active={event.get('active')} processed={event.get('processed')} "
                f"load={load} ({event.get('sw_ident')} {event.get('sw_ver')})"
            )
        task_id = str(event.get("uuid", "?"))
        name = self._name(task_id, event.get("name"))
        parts = [f"{k}={_value(k, event[k])}" for k in DETAILS.get(kind, ()) if k in event]
        return f"{head}  {name}[{task_id}]  {' '.join(parts)}".rstrip()

    def _name(self, task_id: str, name: Any) -> str:
        if isinstance(name, str) and name:
            self.names[task_id] = name
            if len(self.names) > NAMES_KEPT:
                self.names.popitem(last=False)
            return name
        return self.names.get(task_id, "?")


def _value(key: str, value: Any) -> str:
    if key == "runtime" and isinstance(value, int | float):
        return f"{value:.4f}s"
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


@main.command()
@click.option("--dump", is_flag=True, help="Print each event as JSON, one per line.")
@click.option("-n", "--count", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("-t", "--timeout", type=click.FloatRange(min=0), help="Stop after this many seconds.")
@click.pass_context
@_errors_as_usage
def events(ctx: click.Context, dump: bool, count: int | None, timeout: float | None) -> None:
    """Show events from the workers as they happen (workers need -E for task events)."""
    app = _app(ctx)
    lines = Lines()

    def show(event: Event) -> None:
        click.echo(json.dumps(event, sort_keys=True) if dump else lines(event))

    conn = app.connection()
    try:
        try:
            conn.ensure_connection(max_retries=1)
        except Exception as exc:
            raise _Unavailable(
                f"Could not reach the broker at {mask_url(app.broker_url)}: {scrub(str(exc))}. "
                "Check that it is running and broker_url is right."
            ) from exc
        if not fans_out(conn):
            raise click.ClickException(
                f"Events need a broker that can broadcast (Redis, RabbitMQ); the "
                f"{conn.transport.driver_type} broker at {mask_url(app.broker_url)} cannot, "
                "so no worker sends any."
            )
        if not dump:
            click.echo(f"-> listening for events at {mask_url(app.broker_url)}", err=True)
        receiver = EventReceiver(app, conn, {"*": show})
        try:
            receiver.capture(limit=count, timeout=timeout)
        except KeyboardInterrupt:
            pass
        except BrokerUnavailable as exc:
            raise _Unavailable(str(exc)) from exc
    finally:
        conn.release()
