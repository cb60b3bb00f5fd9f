"""The dashboard's JSON: what the page reads (GET) and the actions it asks for (POST).

Reads come from the state (events), the poller (queues) and, for a task the events never
showed, the result backend. Actions go out by remote control (``app.control``, the same
commands ``taskq control`` sends) or to the dead-letter queue (the operations of ``taskq
dead``). Broker and backend calls block, so they run on Starlette's thread pool and the
event loop stays free for the live streams.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import states
from ..deadletter import DeadLetters
from ..url import scrub
from .state import HIDDEN, TaskRow

if TYPE_CHECKING:
    from .web import Dashboard

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
ARG_HEADERS = ("argsrepr", "kwargsrepr")
# Seconds to wait for workers' replies; the wait ends as soon as those asked have answered.
REPLY_TIMEOUT = 5.0


class ActionError(Exception):
    """An action the user asked for that cannot be done as asked: a 400 with the reason."""


class NoReply(Exception):
    """The worker an action was sent to did not answer: a 504."""


def _refused(replies: Any) -> str:
    """The workers' refusals, when every worker that answered refused ("" otherwise)."""
    errors, oks = [], 0
    for reply in replies or ():
        for node, said in reply.items() if isinstance(reply, dict) else ():
            if isinstance(said, dict) and "error" in said:
                errors.append(f"{node}: {said['error']}")
            else:
                oks += 1
    return "; ".join(errors) if errors and not oks else ""


def answer(data: dict[str, Any], status: int = 200, version: int | None = None) -> JSONResponse:
    body = data if version is None else {**data, "version": version}
    return JSONResponse(body, status, headers={"cache-control": "no-store"})


def error(text: str, status: int) -> JSONResponse:
    return answer({"error": text}, status)


def _limit(request: Request, default: int = 100, most: int = 1000) -> int:
    try:
        return max(1, min(most, int(request.query_params.get("limit", default))))
    except ValueError:
        return default


class Api:
    def __init__(self, dash: Dashboard):
        self.dash = dash
        self.app = dash.app
        self.state = dash.state
        self.dead = DeadLetters(dash.app)

    def routes(self) -> list[Route]:
        get, post = ["GET"], ["POST"]
        return [
            Route("/api/overview", self.overview, methods=get),
            Route("/api/workers", self.workers, methods=get),
            Route("/api/queues", self.queues, methods=get),
            Route("/api/tasks", self.tasks, methods=get),
            Route("/api/tasks/{task_id}", self.task, methods=get),
            Route("/api/dead", self.dead_letters, methods=get),
            Route("/api/dead/{task_id}", self.dead_letter, methods=get),
            Route("/api/chart", self.chart, methods=get),
            Route("/api/tasks/{task_id}/revoke", self._act(self.revoke), methods=post),
            Route("/api/rate-limit", self._act(self.rate_limit), methods=post),
            Route("/api/workers/{hostname}/pool", self._act(self.pool), methods=post),
            Route("/api/workers/{hostname}/shutdown", self._act(self.shutdown), methods=post),
            Route("/api/dead/requeue", self._act(self.requeue), methods=post),
            Route("/api/dead/purge", self._act(self.purge), methods=post),
        ]

    # -- reads
    async def overview(self, request: Request) -> Response:
        return answer(self.dash.overview(), version=self.state.version)

    async def workers(self, request: Request) -> Response:
        return answer({"workers": self.state.worker_rows()}, version=self.state.version)

    async def queues(self, request: Request) -> Response:
        return answer(self.dash.poller.view.as_json(), version=self.state.version)

    async def tasks(self, request: Request) -> Response:
        q = request.query_params
        version = self.state.version
        rows, total = self.state.task_rows(q.get("name", ""), q.get("state", ""),
                                           q.get("worker", ""), _limit(request))  # fmt: skip
        return answer(
            {"tasks": rows, "total": total, "names": self.state.task_names(),
             "workers": self.state.task_workers(), "states": sorted(states.ALL_STATES)},
            version=version,
        )  # fmt: skip

    async def task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        found = self.state.task_detail(task_id)
        if found is None:
            found = await run_in_threadpool(self._from_backend, task_id)
        if found is None:
            return error(f"No task {task_id!r} in the recent events or the result backend.", 404)
        return answer({"task": found}, version=self.state.version)

    def _from_backend(self, task_id: str) -> dict[str, Any] | None:
        try:
            meta = self.app.AsyncResult(task_id)
            state, result, traceback = meta.state, meta.result, meta.traceback
        except Exception as exc:
            logger.warning("Dashboard: the result backend failed: %s", scrub(repr(exc)))
            return None
        if state == states.PENDING:  # what a backend says of every id it does not know
            return None
        row = TaskRow(task_id, state=state, traceback=traceback)
        if state in states.EXCEPTION_STATES:
            row.exception = repr(result)
        else:
            row.result = HIDDEN if self.dash.options.hide_args else repr(result)
        return {**row.detail(), "source": "backend"}

    async def dead_letters(self, request: Request) -> Response:
        limit = _limit(request)
        try:
            found = await run_in_threadpool(self.dead.list, limit)
        except Exception as exc:
            return answer({"dead_letters": [], "queue": self.dead.name, "error": _why(exc)},
                          version=self.state.version)  # fmt: skip
        return answer({"dead_letters": [d.summary() for d in found], "queue": self.dead.name,
                       "error": None}, version=self.state.version)  # fmt: skip

    async def dead_letter(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        try:
            letter = await run_in_threadpool(self.dead.get, task_id)
        except Exception as exc:
            return error(_why(exc), 503)
        if letter is None:
            return error(f"No dead letter with id {task_id!r} in {self.dead.name!r}.", 404)
        hide = self.dash.options.hide_args
        headers = {k: (HIDDEN if hide and k in ARG_HEADERS else v)
                   for k, v in letter.headers.items()}  # fmt: skip
        shown = {
            **letter.summary(),
            "args": HIDDEN if hide else _text(headers.get("argsrepr")),
            "kwargs": HIDDEN if hide else _text(headers.get("kwargsrepr")),
            "headers": json.loads(json.dumps(headers, default=repr)),
            "body": HIDDEN if hide else letter.body_text(),
            "content_type": letter.content_type,
        }
        return answer({"dead_letter": shown}, version=self.state.version)

    async def chart(self, request: Request) -> Response:
        try:
            step = int(request.query_params.get("step", 60))
        except ValueError:
            step = 60
        step = max(10, min(600, step))
        try:
            minutes = int(request.query_params.get("minutes", 60))
        except ValueError:
            minutes = 60
        span = max(1, min(60, minutes)) * 60
        points = [asdict(p) for p in self.state.chart(step, span)]
        return answer({"step": step, "points": points}, version=self.state.version)

    # -- actions
    def _act(self, action: Callable[[Request, dict[str, Any]], Any]) -> Handler:
        async def handle(request: Request) -> Response:
            try:
                body = await request.json()
            except ValueError:
                return error("The body is not JSON.", 400)
            if not isinstance(body, dict):
                return error("The body must be a JSON object.", 400)
            try:
                message, replies = await run_in_threadpool(action, request, body)
            except ActionError as exc:
                return error(str(exc), 400)
            except NoReply as exc:
                return error(str(exc), 504)
            except Exception as exc:
                logger.warning("Dashboard: action %s failed: %s", request.url.path, _why(exc))
                return error(_why(exc), 503)
            refused = _refused(replies)
            if refused:
                logger.warning("Dashboard: %s: refused: %s", message, refused)
                return answer({"error": f"Refused by the workers: {refused}",
                               "replies": replies}, 502)  # fmt: skip
            logger.info("Dashboard: %s", message)
            return answer({"ok": True, "message": message, "replies": replies or []})

        return handle

    def revoke(self, request: Request, body: dict[str, Any]) -> tuple[str, Any]:
        task_id = request.path_params["task_id"]
        terminate = bool(body.get("terminate", False))
        signal = str(body.get("signal") or "SIGTERM")
        if not signal.isalnum():
            raise ActionError(f"Not a signal name: {signal!r} (e.g. SIGTERM, SIGKILL).")
        replies = self.app.control.revoke(task_id, terminate=terminate, signal=signal,
                                          reply=True, **self._everyone())  # fmt: skip
        what = f"terminate ({signal})" if terminate else "revoke"
        return f"{what} {task_id}: sent to the workers", replies

    def rate_limit(self, request: Request, body: dict[str, Any]) -> tuple[str, Any]:
        task = body.get("task")
        if not isinstance(task, str) or not task:
            raise ActionError('Say which task type: {"task": "proj.tasks.add", ...}.')
        rate = str(body.get("rate") or "0").strip()
        worker = body.get("worker")
        control = self.app.control
        if isinstance(worker, str) and worker:
            sent = control.rate_limit(task, rate, [worker], reply=True, timeout=REPLY_TIMEOUT)
            replies = self._named(worker, sent, "rate_limit")
        else:
            replies = control.rate_limit(task, rate, reply=True, **self._everyone())
        return f"rate limit of {task} set to {rate}", replies

    def _named(self, hostname: str, replies: Any, what: str) -> Any:
        """Replies to a command sent to one worker; no reply at all is a failure."""
        if not replies:
            raise NoReply(f"No answer from {hostname} to {what} within {REPLY_TIMEOUT:g} s: "
                          "is it running? (the workers page shows its last heartbeat)")  # fmt: skip
        return replies

    def pool(self, request: Request, body: dict[str, Any]) -> tuple[str, Any]:
        hostname = request.path_params["hostname"]
        delta = body.get("delta")
        if not isinstance(delta, int) or isinstance(delta, bool) or delta == 0:
            raise ActionError("delta must be a non-zero whole number (+1 grows, -1 shrinks).")
        control = self.app.control
        change = control.pool_grow if delta > 0 else control.pool_shrink
        replies = self._named(
            hostname, change(abs(delta), [hostname], reply=True, timeout=REPLY_TIMEOUT), "pool"
        )
        return f"pool of {hostname} {'grown' if delta > 0 else 'shrunk'} by {abs(delta)}", replies

    def shutdown(self, request: Request, body: dict[str, Any]) -> tuple[str, Any]:
        hostname = request.path_params["hostname"]
        self.app.control.shutdown([hostname])  # a worker shutting down sends no reply
        return f"shutdown sent to {hostname}", []

    def requeue(self, request: Request, body: dict[str, Any]) -> tuple[str, Any]:
        ids = body.get("ids")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise ActionError("ids must be a list of task ids, or null for every dead letter.")
        count = self.dead.requeue(ids)
        return f"{count} dead letter(s) requeued", []

    def purge(self, request: Request, body: dict[str, Any]) -> tuple[str, Any]:
        count = self.dead.purge()
        return f"{count} dead letter(s) purged", []

    def _everyone(self) -> dict[str, Any]:
        # Sent to every worker, known or not; the wait for replies ends once the workers
        # known online all answered, or at the timeout.
        online = len(self.state.online_workers())
        return {"timeout": REPLY_TIMEOUT, **({"limit": online} if online else {})}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _why(exc: BaseException) -> str:
    return scrub(str(exc)) or type(exc).__name__


__all__ = ["ActionError", "Api"]
