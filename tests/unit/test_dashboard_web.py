"""The dashboard's web side in-process (Starlette's test client, kombu's memory broker):
the guard (host, auth, CSRF, headers), the JSON, the live stream's first message."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from taskq import Taskq
from taskq.dashboard.guard import FAILURES_ALLOWED, Credentials, host_of, is_loopback
from taskq.dashboard.state import HIDDEN
from taskq.dashboard.web import Dashboard, DashboardOptions
from taskq.exceptions import ConfigurationError

PASSWORD = "pa:ss-w0rd"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


@pytest.fixture
def board() -> Iterator[Dashboard]:
    app = Taskq("webproj", broker="memory://", backend=None)
    dash = Dashboard(app, DashboardOptions(hide_args=False))
    yield dash
    app.close()


def client(dash: Dashboard, base: str = "http://127.0.0.1:5555") -> TestClient:
    return TestClient(dash.asgi(), base_url=base, follow_redirects=False)


def token_of(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found, page
    return found.group(1)


def test_credentials_parse_and_check() -> None:
    creds = Credentials.parse(f"admin:{PASSWORD}")
    assert creds.check(basic("admin", PASSWORD)["authorization"])
    assert not creds.check(basic("admin", PASSWORD + "x")["authorization"])
    assert not creds.check(basic("root", PASSWORD)["authorization"])
    assert not creds.check("Basic !!!not-base64")
    assert not creds.check("Bearer abc")
    assert not creds.check(None)
    assert PASSWORD not in repr(creds)
    for bad in ["admin", ":pw", "admin:", ""]:
        with pytest.raises(ConfigurationError, match="user:password"):
            Credentials.parse(bad)


def test_loopback_and_hosts() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert host_of("[::1]:5555") == "::1" and host_of("LocalHost:80") == "localhost"


def test_the_page_carries_its_token_and_strict_headers(board: Dashboard) -> None:
    with client(board) as c:
        assert c.get("/").headers["location"] == "/workers"
        page = c.get("/tasks/abc")
    assert page.status_code == 200
    assert token_of(page.text) == board.csrf_token
    assert "__APP_NAME__" not in page.text and "webproj" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_bound_to_loopback_it_answers_loopback_names_only(board: Dashboard) -> None:
    with client(board) as c:
        assert c.get("/api/overview", headers={"host": "localhost:5555"}).status_code == 200
        assert c.get("/api/overview", headers={"host": "[::1]:5555"}).status_code == 200
        refused = c.get("/api/overview", headers={"host": "rebound.example:5555"})
    assert refused.status_code == 421 and "localhost" in refused.json()["error"]


def test_auth_is_asked_everywhere_and_failures_lock_out() -> None:
    app = Taskq("authproj", broker="memory://", backend=None)
    creds = Credentials.parse(f"admin:{PASSWORD}")
    dash = Dashboard(app, DashboardOptions(address="0.0.0.0", credentials=creds))
    try:
        with client(dash, "http://dash.example") as c:
            for path in ["/workers", "/api/tasks", "/api/stream", "/metrics", "/static/app.js"]:
                answer = c.get(path)
                assert answer.status_code == 401, path
                assert answer.headers["www-authenticate"].startswith("Basic")
            assert c.get("/api/overview", headers=basic("admin", PASSWORD)).status_code == 200
            for _ in range(FAILURES_ALLOWED):
                assert c.get("/api/overview", headers=basic("admin", "nope")).status_code == 401
            locked = c.get("/api/overview", headers=basic("admin", PASSWORD))
            assert locked.status_code == 429
            assert PASSWORD not in locked.text
    finally:
        app.close()


def test_actions_need_the_token_json_and_this_origin(board: Dashboard) -> None:
    url = "/api/workers/w1@h/pool"
    ok = {"x-csrf-token": board.csrf_token}
    with client(board) as c:
        assert c.post(url, json={"delta": 0}).status_code == 403
        assert c.post(url, json={"delta": 0}, headers={"x-csrf-token": "forged"}).status_code == 403
        as_form = c.post(url, data={"delta": "0"}, headers=ok)
        assert as_form.status_code == 415
        elsewhere = c.post(url, json={"delta": 0},
                           headers={**ok, "origin": "https://evil.example"})  # fmt: skip
        assert elsewhere.status_code == 403 and "another site" in elsewhere.json()["error"]
        # Past the guard, the action itself says what is wrong with the request.
        answer = c.post(url, json={"delta": 0},
                        headers={**ok, "origin": "http://127.0.0.1:5555"})  # fmt: skip
        assert answer.status_code == 400 and "non-zero" in answer.json()["error"]
        not_json = c.post(url, content=b"{", headers={**ok, "content-type": "application/json"})
        assert not_json.status_code == 400
        assert c.post("/api/rate-limit", json={"rate": "1/s"}, headers=ok).status_code == 400
        assert c.post("/api/dead/requeue", json={"ids": "x"}, headers=ok).status_code == 400
        assert (
            c.post("/api/tasks/x/revoke", json={"signal": "KILL;rm"}, headers=ok).status_code == 400
        )


def test_json_reads_the_state(board: Dashboard) -> None:
    state = board.state
    # The chart counts a task in the 10 s slot of its arrival and reads up to the slot of
    # the request: a clock held still keeps both in one slot however slow the machine.
    now = time.time()
    state.clock = lambda: now
    state.apply({"type": "worker-heartbeat", "hostname": "w1@h", "freq": 2.0, "active": 0,
                 "processed": 1, "timestamp": 1.0})  # fmt: skip
    state.apply({"type": "task-received", "uuid": "t1", "name": "proj.add", "args": "(1, 2)",
                 "kwargs": "{}", "hostname": "w1@h", "timestamp": 1.0})  # fmt: skip
    state.apply({"type": "task-failed", "uuid": "t1", "hostname": "w1@h", "timestamp": 2.0,
                 "exception": "ValueError('no')", "traceback": "Traceback (most...)"})  # fmt: skip
    with client(board) as c:
        overview = c.get("/api/overview").json()
        workers = c.get("/api/workers").json()["workers"]
        tasks = c.get("/api/tasks", params={"state": "FAILURE"}).json()
        detail = c.get("/api/tasks/t1").json()["task"]
        missing = c.get("/api/tasks/never")
        chart = c.get("/api/chart", params={"step": "5"}).json()
    assert overview["app"] == "webproj" and overview["broker"] == "memory://"
    assert overview["tasks"]["by_state"] == {"FAILURE": 1}
    assert [w["hostname"] for w in workers] == ["w1@h"] and workers[0]["online"]
    assert [t["id"] for t in tasks["tasks"]] == ["t1"] and tasks["names"] == ["proj.add"]
    assert detail["traceback"].startswith("Traceback") and detail["source"] == "events"
    assert missing.status_code == 404 and "never" in missing.json()["error"]
    assert chart["step"] == 10 and chart["points"][-1]["failed"] == 1


def test_the_stream_starts_with_what_changed_since_the_page_read(board: Dashboard) -> None:
    board.state.apply({"type": "task-received", "uuid": "old", "name": "a", "timestamp": 1.0})
    since = board.state.version
    board.state.apply({"type": "task-received", "uuid": "new", "name": "a", "timestamp": 2.0})
    with client(board) as c, c.stream("GET", "/api/stream", params={"since": since}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "event: update"
        data = next(lines)
        board.closing = True  # ends the generator at its next turn
    message = json.loads(data.removeprefix("data: "))
    assert [t["id"] for t in message["tasks"]] == ["new"]
    assert message["version"] == board.state.version and "workers" in message


def test_refusals_and_silence_are_failures_not_ok(board: Dashboard) -> None:
    from taskq.dashboard.api import _refused

    assert _refused([{"w1@h": {"error": "unknown task"}}]) == "w1@h: unknown task"
    assert _refused([{"w1@h": {"error": "x"}}, {"w2@h": {"ok": "done"}}]) == ""
    assert _refused([]) == "" and _refused(None) == ""
    with client(board) as c:
        silent = c.post("/api/workers/ghost@h/pool", json={"delta": 1},
                        headers={"x-csrf-token": board.csrf_token})  # fmt: skip
    assert silent.status_code == 504 and "No answer from ghost@h" in silent.json()["error"]


def test_hide_args_and_broker_url_hide_them_from_the_json() -> None:
    app = Taskq("hideproj", broker="memory://", backend="memory://")
    dash = Dashboard(app, DashboardOptions(hide_args=True, hide_broker=True))
    try:
        app.backend.store_result("secret-task", {"token": "t0p-s3cret"}, "SUCCESS")
        dash.state.apply({"type": "task-received", "uuid": "live", "name": "a",
                          "args": "('t0p-s3cret',)", "timestamp": 1.0})  # fmt: skip
        with client(dash) as c:
            overview = c.get("/api/overview").json()
            stored = c.get("/api/tasks/secret-task").json()["task"]
            live = c.get("/api/tasks/live").text
        assert overview["broker"] is None and overview["hide_args"] is True
        assert (stored["source"], stored["state"], stored["result"]) == (
            "backend",
            "SUCCESS",
            HIDDEN,
        )
        assert "t0p-s3cret" not in live
    finally:
        app.close()
