"""``taskq beat``: the scheduler's command line (Celery's options where they mean the same).

Imported at the end of ``cli.py``, whose helpers it uses; it adds ``beat`` to ``main``.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click

from . import signals
from .app import Taskq
from .beat import Beat, make_beat
from .cli import _app, _errors_as_usage, loglevel_option, main
from .log import setup_logging
from .url import mask_url

logger = logging.getLogger(__name__)


def banner(app: Taskq, beat: Beat) -> str:
    return (
        f"taskq beat: {len(beat.entries)} periodic task(s), timezone {beat.tz}\n"
        f"- broker: {mask_url(app.broker_url)}\n"
        f"- state:  {type(beat.store).__name__} (any number of beats may share it)\n"
        f"[schedule]\n{beat.schedule_text()}\n"
    )


@main.command()
@loglevel_option
@click.option(
    "--max-interval",
    type=click.FloatRange(min=0.1),
    help="Longest sleep between two looks at the schedule, seconds [beat_max_loop_interval].",
)
@click.option("-f", "--logfile", help="Write the log to this file instead of stderr.")
@click.option("-s", "--schedule", "schedule_file", hidden=True)  # Celery's shelve file
@click.pass_context
@_errors_as_usage
def beat(
    ctx: click.Context,
    loglevel: str,
    max_interval: float | None,
    logfile: str | None,
    schedule_file: str | None,
) -> None:
    """Send the periodic tasks of beat_schedule when they are due.

    Run as many as you like, on any machines: each due time is sent once. The state (the
    last due time sent, the claims) is kept in the broker (Redis, the embedded SQLite) or,
    on RabbitMQ, in the Redis or SQLite result backend.
    """
    app = _app(ctx)
    setup_logging(app, loglevel, logfile)
    if schedule_file is not None:
        logger.warning(
            "taskq beat: -s/--schedule %s is ignored: the schedule's state is kept in the "
            "broker, where every beat sees it",
            schedule_file,
        )
    scheduler = make_beat(app, max_interval)
    signals.beat_init.send(sender=scheduler)
    click.echo(banner(app, scheduler), err=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        scheduler.run(stop)
    finally:
        scheduler.store.close()
        app.close()
    click.echo("taskq beat: stopped.", err=True)
