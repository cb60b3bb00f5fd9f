"""``taskq dashboard``: serve the fleet's dashboard (docs/monitoring.md#the-dashboard).

Safe by default: bound to 127.0.0.1; any other address needs ``--auth user:password``
(or ``TASKQ_DASHBOARD_AUTH``), or ``--no-auth`` said out loud, with a warning. Imported at
the end of ``cli.py``, whose helpers it uses; it adds ``dashboard`` to ``main``.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

import click

from .cli import _app, _errors_as_usage, loglevel_option, main
from .exceptions import ConfigurationError
from .log import setup_logging

if TYPE_CHECKING:
    from .dashboard.web import DashboardOptions

logger = logging.getLogger(__name__)


@main.command()
@loglevel_option
@click.option("--port", type=click.IntRange(0, 65535), default=5555, show_default=True,
              help="Port to serve on (0: any free port, printed at start).")  # fmt: skip
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to bind; off loopback, --auth or --no-auth is required.")  # fmt: skip
@click.option("--auth", envvar="TASKQ_DASHBOARD_AUTH", metavar="USER:PASSWORD",
              help="Ask for these (HTTP Basic) [env TASKQ_DASHBOARD_AUTH].")  # fmt: skip
@click.option("--no-auth", is_flag=True, help="Serve off loopback without credentials.")
@click.option("--hide-args", is_flag=True,
              help="Never show task arguments, keyword arguments or results.")  # fmt: skip
@click.option("--hide-broker-url", is_flag=True, help="Do not show the broker's URL (masked).")
@click.option("--max-tasks", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="Recent tasks kept in memory; the oldest are forgotten.")  # fmt: skip
@click.pass_context
@_errors_as_usage
def dashboard(
    ctx: click.Context,
    loglevel: str,
    port: int,
    address: str,
    auth: str | None,
    no_auth: bool,
    hide_args: bool,
    hide_broker_url: bool,
    max_tasks: int,
) -> None:
    """Serve a web dashboard of the workers, queues, tasks and dead letters (-E on workers)."""
    try:
        import uvicorn

        from .dashboard.guard import Credentials, is_loopback
        from .dashboard.web import Dashboard, DashboardOptions
    except ImportError as exc:
        raise click.ClickException(
            f"taskq dashboard needs Starlette and uvicorn ({exc}): pip install 'taskq[dashboard]'"
        ) from None
    app = _app(ctx)
    setup_logging(app, loglevel, None)
    if auth and no_auth:
        raise click.UsageError("--auth and --no-auth say opposite things: give one.")
    credentials = Credentials.parse(auth) if auth else None
    if not is_loopback(address) and credentials is None:
        if not no_auth:
            raise click.UsageError(
                f"--address {address} serves the dashboard, and its actions, to the network: "
                "give --auth user:password (or TASKQ_DASHBOARD_AUTH), or --no-auth if "
                "something in front of it already asks who comes in."
            )
        logger.warning(
            "taskq dashboard: serving %s WITHOUT authentication (--no-auth): anyone who "
            "reaches it can revoke tasks and stop workers",
            address,
        )
    options = DashboardOptions(address, port, credentials, hide_args, hide_broker_url, max_tasks)
    sock = _listen(options)
    board = Dashboard(app, options)
    # log_config=None: uvicorn logs through the handlers setup_logging made.
    config = uvicorn.Config(
        board.asgi(),
        log_level=loglevel.lower(),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    host, bound = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    board.start()
    click.echo(f"Dashboard on http://{shown}:{bound}/ (app {app.main})", err=True)
    try:
        server.run(sockets=[sock])
    finally:
        board.stop()
        sock.close()
        app.close()


def _listen(options: DashboardOptions) -> socket.socket:
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            options.address, options.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(128)
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot serve the dashboard on {options.address}:{options.port}: {exc.strerror or exc}"
        ) from None
    return sock
