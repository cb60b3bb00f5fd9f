"""Remote control: the worker's end of Celery's broadcast mailbox ("pidbox").

kombu's ``pidbox`` does the protocol (the fanout exchange ``celery.pidbox``, a queue per
node, replies by ticket on ``reply.celery.pidbox``), so ``celery inspect``, ``celery
control``, Flower and taskq's own client reach taskq workers as they reach Celery's.
Here: the node on the consumer's connection, and the commands, answered with Celery's
reply shapes. Commands run on the consumer thread, between broker reads, like every other
change to the worker's state (consumer.py's threading contract).
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..control import make_mailbox
from ..url import mask_url

if TYPE_CHECKING:
    from .consumer import Consumer
    from .request import Request

logger = logging.getLogger(__name__)
Handler = Callable[..., Any]
COMMANDS: dict[str, Handler] = {}
TASK_INFO = ("exchange", "routing_key", "rate_limit")  # Celery's default for `registered`


def command(fn: Handler) -> Handler:
    COMMANDS[fn.__name__.removeprefix("cmd_")] = fn
    return fn


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


class ControlPanel:
    """The commands' view of the worker: its consumer, its state, its name."""

    def __init__(self, consumer: Consumer, on_shutdown: Callable[[], None]):
        self.consumer = consumer
        self.app = consumer.app
        self.state = consumer.state
        self.hostname = consumer.options.hostname
        self.on_shutdown = on_shutdown
        self.node: Any = None

    def listen(self, connection: Any) -> None:
        """Consume this node's control queue on ``connection`` (after each connect)."""
        channel = connection.channel()
        if not getattr(channel, "supports_fanout", True):
            # A broadcast would reach no other process (the embedded broker): say so once.
            if self.node is None:
                logger.info("Remote control is not available on this broker's transport.")
                self.node = False
            channel.close()
            return
        # The client's mailbox (Celery's settings: queue TTL, expiry, exclusivity), bound
        # to this connection, so replies go out on it and not through a producer pool.
        mailbox = make_mailbox(self.app)(connection)
        mailbox.clock = self.consumer.monitor.clock  # one Lamport clock for commands and events
        self.node = mailbox.Node(self.hostname, state=self, handlers=COMMANDS, channel=channel)
        self.node.listen(callback=self._on_command)

    def _on_command(self, body: Any, message: Any) -> None:
        if isinstance(body, dict):
            logger.debug("Control command %r from %r", body.get("method"), body.get("reply_to"))
        try:
            self.node.handle_message(body, message)
        except Exception:
            # A command that cannot even be dispatched (a malformed request) must not take
            # the consumer down with it.
            logger.exception("Control command could not be handled: %r", body)

    # -- what the commands read
    def requests(self) -> Iterable[tuple[str, Request]]:
        c = self.consumer
        for request in c.active.values():
            yield "active", request
        for request in c.ready:
            yield "reserved", request
        for request in c.held.values():
            yield "scheduled", request

    def info(self, request: Request) -> dict[str, Any]:
        msg = request.message
        return {
            "id": request.id,
            "name": request.name,
            "args": list(msg.args),
            "kwargs": dict(msg.kwargs),
            "type": request.name,
            "hostname": self.hostname,
            "time_start": getattr(request, "time_start", None),
            "acknowledged": request.acknowledged,
            "delivery_info": request.delivery_info(),
            "worker_pid": getattr(request, "worker_pid", None),
        }


@command
def cmd_ping(panel: ControlPanel, **_: Any) -> dict[str, Any]:
    return ok("pong")


@command
def cmd_registered(
    panel: ControlPanel,
    taskinfoitems: Iterable[str] | None = None,
    builtins: bool = False,
    **_: Any,
) -> list[str]:
    names = sorted(n for n in panel.app.tasks if builtins or not n.startswith("celery."))
    items = [i for i in (taskinfoitems or TASK_INFO) if isinstance(i, str) and i[:1] != "_"]
    out = []
    for name in names:
        options = panel.app.tasks[name].options
        fields = {i: getattr(options, i) for i in items if getattr(options, i, None) is not None}
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        out.append(f"{name} [{extra}]" if extra else name)
    return out


@command
def cmd_active(panel: ControlPanel, safe: bool = False, **_: Any) -> list[dict[str, Any]]:
    return [panel.info(r) for where, r in panel.requests() if where == "active"]


@command
def cmd_reserved(panel: ControlPanel, **_: Any) -> list[dict[str, Any]]:
    return [panel.info(r) for where, r in panel.requests() if where == "reserved"]


@command
def cmd_scheduled(panel: ControlPanel, **_: Any) -> list[dict[str, Any]]:
    out = []
    for where, request in panel.requests():
        if where == "scheduled":
            eta = request.message.eta
            out.append(
                {
                    "eta": eta.isoformat() if eta else None,
                    "priority": (request.raw.properties or {}).get("priority"),
                    "request": panel.info(request),
                }
            )
    return out


@command
def cmd_query_task(panel: ControlPanel, ids: Any = None, **_: Any) -> dict[str, Any]:
    wanted = set([ids] if isinstance(ids, str) else ids or ())
    return {r.id: (where, panel.info(r)) for where, r in panel.requests() if r.id in wanted}


@command
def cmd_revoked(panel: ControlPanel, **_: Any) -> list[str]:
    return list(panel.state.revoked)


@command
def cmd_active_queues(panel: ControlPanel, **_: Any) -> list[dict[str, Any]]:
    return [dict(q.as_dict(recurse=True)) for q in panel.consumer.queues]


@command
def cmd_stats(panel: ControlPanel, **_: Any) -> dict[str, Any]:
    c = panel.consumer
    broker = _jsonable(dict(c.connection.info())) if c.connection is not None else {}
    if broker.get("password"):
        broker["password"] = "**"
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rusage = {
        name: getattr(usage, f"ru_{name}")
        for name in ("utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt",
                     "majflt", "nswap", "inblock", "oublock", "msgsnd", "msgrcv",
                     "nsignals", "nvcsw", "nivcsw")
    }  # fmt: skip
    return {
        "total": dict(panel.state.total),
        "pid": os.getpid(),
        "clock": str(c.monitor.clock.value),
        "uptime": round(time.time() - panel.state.started),
        "pool": c.pool.info(),
        "broker": broker,
        "prefetch_count": c.prefetch.rule.base + c.prefetch.extra,
        "rusage": rusage,
    }


@command
def cmd_conf(panel: ControlPanel, with_defaults: bool = False, **_: Any) -> dict[str, Any]:
    conf = panel.app.conf.as_dict()
    return {k: (mask_url(v) if k.endswith(("_url", "backend")) and isinstance(v, str) else v)
            for k, v in conf.items() if not k.startswith("_")}  # fmt: skip


@command
def cmd_report(panel: ControlPanel, **_: Any) -> dict[str, Any]:
    from .. import __version__

    return ok(
        f"taskq:{__version__} python:{platform.python_version()} "
        f"platform:{platform.system()} broker:{mask_url(panel.app.broker_url)}"
    )


@command
def cmd_clock(panel: ControlPanel, **_: Any) -> dict[str, Any]:
    return {"clock": panel.consumer.monitor.clock.value}


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    # kombu reports a transport given as a class by the class itself: name it instead.
    simple = (str, int, float, bool, type(None), list, dict)
    return {
        k: v if isinstance(v, simple) else getattr(v, "__name__", str(v)) for k, v in data.items()
    }


# The commands that change the worker live in commands.py; importing it registers them.
from . import commands  # noqa: E402, F401
