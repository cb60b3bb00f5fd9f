"""``taskq worker``: the worker's command line (Celery's options where they mean the same).

Imported at the end of ``cli.py``, whose helpers it uses; it adds ``worker`` to ``main``.
"""

from __future__ import annotations

import click

from .cli import _app, _errors_as_usage, loglevel_option, main
from .log import setup_logging


@main.command()
@loglevel_option
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Pool size [default: CPUs].")
@click.option(
    "-P", "--pool", type=click.Choice(["prefork", "threads", "solo"]), help="Execution pool."
)
@click.option("-Q", "--queues", help="Comma-separated queues to consume.")
@click.option("-n", "--hostname", help="Node name, e.g. w1@%h.")
@click.option("--prefetch-multiplier", type=click.IntRange(min=1))
@click.option("--max-tasks-per-child", type=click.IntRange(min=1))
@click.option("--max-memory-per-child", type=click.IntRange(min=1), help="KiB of RSS.")
@click.option(
    "-E",
    "--task-events",
    is_flag=True,
    default=None,
    help="Send task events, for Flower and `taskq events` (worker_send_task_events).",
)
@click.option(
    "--without-heartbeat", is_flag=True, help="Send no worker events (online, heartbeat)."
)
@click.option(
    "--heartbeat-interval", type=click.FloatRange(min=0.1), help="Seconds between heartbeats [2]."
)
@click.option("--without-gossip", is_flag=True, hidden=True)  # Celery's; nothing to turn off
@click.option("--without-mingle", is_flag=True, hidden=True)
@click.option("-S", "--statedb", help="File that keeps revoked task ids across restarts.")
@click.option("-f", "--logfile", help="Write the log to this file instead of stderr.")
@click.option(
    "-B", "--beat", is_flag=True, help="Also run the scheduler (taskq beat) in this worker."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="Serve Prometheus metrics at http://ADDRESS:PORT/metrics (0: a free port).",
)
@click.option(
    "--metrics-address", default="127.0.0.1", show_default=True, help="Where metrics listen."
)
@click.pass_context
@_errors_as_usage
def worker(
    ctx: click.Context,
    loglevel: str,
    concurrency: int | None,
    pool: str | None,
    queues: str | None,
    hostname: str | None,
    prefetch_multiplier: int | None,
    max_tasks_per_child: int | None,
    max_memory_per_child: int | None,
    task_events: bool | None,
    without_heartbeat: bool,
    heartbeat_interval: float | None,
    without_gossip: bool,
    without_mingle: bool,
    statedb: str | None,
    logfile: str | None,
    beat: bool,
    metrics_port: int | None,
    metrics_address: str,
) -> None:
    """Start a worker."""
    from .worker.monitor import HEARTBEAT_FREQ
    from .worker.worker import Worker, WorkerOptions

    app = _app(ctx)
    setup_logging(app, loglevel, logfile)
    options = WorkerOptions(
        concurrency=concurrency,
        pool=pool,
        queues=tuple(q.strip() for q in (queues or "").split(",") if q.strip()),
        hostname=hostname,
        prefetch_multiplier=prefetch_multiplier,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=max_memory_per_child,
        task_events=task_events,
        heartbeat=None if without_heartbeat else (heartbeat_interval or HEARTBEAT_FREQ),
        statedb=statedb,
        beat=beat,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
    )
    instance = Worker(app, options)
    click.echo(instance.banner(), err=True)
    instance.install_signal_handlers()
    ctx.exit(instance.start())
