"""The dashboard's web side: the page, its JSON, the live stream and ``/metrics``.

One Starlette app behind the guard (guard.py), served by uvicorn on one port. The page is
static (static/index.html, app.js, style.css: no build step, no CDN); every view reads the
JSON in api.py and then follows ``/api/stream``, a server-sent event stream that sends what
changed, at most once a second, whatever the rate of events: a page stays as cheap to keep
open with 1,000 tasks a second as with one.
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..deadletter import DeadLetters
from ..url import mask_url
from .api import Api, answer
from .feed import EventFeed
from .guard import Credentials, Guard, is_loopback
from .metrics import FleetCollector
from .poller import Poller
from .state import FleetState, Limits

if TYPE_CHECKING:
    from ..app import Taskq

STATIC = Path(__file__).with_name("static")
PAGES = ("/workers", "/queues", "/tasks", "/tasks/{task_id}", "/dead", "/dead/{task_id}", "/chart")
TICK = 1.0  # seconds between two messages of a live stream, at most
WORKERS_EVERY = 5.0  # re-sent anyway: a worker that stops beating goes offline by the clock
PING_EVERY = 15.0
STREAM_TASKS = 200


@dataclass(frozen=True)
class DashboardOptions:
    address: str = "127.0.0.1"
    port: int = 5555
    credentials: Credentials | None = None
    hide_args: bool = False
    hide_broker: bool = False
    max_tasks: int = 10_000


class Dashboard:
    """The parts that run while the dashboard serves: state, event feed, poller."""

    def __init__(self, app: Taskq, options: DashboardOptions):
        self.app = app
        self.options = options
        self.state = FleetState(Limits(max_tasks=options.max_tasks, hide_args=options.hide_args))
        self.feed = EventFeed(app, self.state)
        self.poller = Poller(app, self.state, DeadLetters(app).name)
        self.csrf_token = secrets.token_urlsafe(32)
        self.shell = _shell(self.csrf_token, app.main)  # every page's HTML, read once
        self.closing = False

    def start(self) -> None:
        self.feed.start()
        self.poller.start()

    def stop(self) -> None:
        self.closing = True
        self.feed.stop()
        self.poller.stop()

    def overview(self) -> dict[str, Any]:
        workers = self.state.worker_rows()
        online = sum(1 for w in workers if w["online"])
        return {
            "app": self.app.main,
            "broker": None if self.options.hide_broker else mask_url(self.app.broker_url),
            "hide_args": self.options.hide_args,
            "workers": {"online": online, "offline": len(workers) - online},
            "tasks": {
                "kept": len(self.state.tasks),
                "max": self.options.max_tasks,
                "by_state": self.state.by_state(),
            },
            "events": {
                "connected": self.feed.connected,
                "received": self.state.events_seen,
                "error": self.feed.error,
            },
        }

    def asgi(self) -> Guard:
        api = Api(self)
        routes: list[Any] = [
            Route("/", lambda request: RedirectResponse("/workers"), methods=["GET"]),
            *(Route(path, self.page, methods=["GET"]) for path in PAGES),
            *api.routes(),
            Route("/api/stream", self.stream, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static"),
        ]
        inner = Starlette(routes=routes)
        return Guard(inner, self.csrf_token, self.options.credentials,
                     loopback_only=is_loopback(self.options.address))  # fmt: skip

    async def page(self, request: Request) -> Response:
        if self.shell is None:
            return answer({"error": "The page's files are missing from this install."}, 503)
        return HTMLResponse(self.shell, headers={"cache-control": "no-store"})

    async def stream(self, request: Request) -> Response:
        try:
            since = int(request.query_params.get("since", 0))
        except ValueError:
            since = 0
        return StreamingResponse(
            self._updates(request, since),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _updates(self, request: Request, since: int) -> AsyncIterator[str]:
        sent_version = workers_version = queues_version = -1
        workers_at = last_write = 0.0
        while not self.closing and not await request.is_disconnected():
            state, view, now = self.state, self.poller.view, time.monotonic()
            workers_due = (
                state.workers_version != workers_version or now - workers_at > WORKERS_EVERY
            )
            if state.version != sent_version or view.version != queues_version or workers_due:
                version = state.version
                message: dict[str, Any] = {
                    "version": version,
                    "overview": self.overview(),
                    "tasks": state.changed_since(since, STREAM_TASKS),
                }
                if workers_due:
                    message["workers"] = state.worker_rows()
                    workers_version, workers_at = state.workers_version, now
                if view.version != queues_version:
                    message["queues"] = view.as_json()["queues"]
                    queues_version = view.version
                since = sent_version = version
                last_write = now
                yield f"event: update\ndata: {json.dumps(message)}\n\n"
            elif now - last_write > PING_EVERY:
                last_write = now
                yield ": ping\n\n"
            await asyncio.sleep(TICK)

    async def metrics(self, request: Request) -> Response:
        try:
            from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        except ImportError:
            return answer({"error": "/metrics needs prometheus_client: "
                                    "pip install 'taskq[dashboard]'"}, 501)  # fmt: skip
        registry = CollectorRegistry(auto_describe=False)
        registry.register(FleetCollector(self.state, lambda: self.poller.view))
        text = await run_in_threadpool(generate_latest, registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)


def _shell(csrf_token: str, app_name: str) -> str | None:
    try:
        shell = (STATIC / "index.html").read_text(encoding="utf-8")
    except OSError:
        return None
    shell = shell.replace("__CSRF_TOKEN__", csrf_token)
    return shell.replace("__APP_NAME__", html.escape(app_name))


__all__ = ["Dashboard", "DashboardOptions"]
