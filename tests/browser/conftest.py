"""Fixtures for the dashboard's browser tests: a real worker (-E), a real `taskq dashboard`
process and headless Chromium driven by selenium, once per module.

Screenshots go to the directory named by TASKQ_SCREENSHOTS (`make screenshots` sets it to
docs/img), else to each test's tmp_path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from taskq import Taskq
from tests.browser.browser_tasks import browser_env, make_app
from tests.integration.helpers import ROOT, WorkerProcess, wait_for

APP = "tests.browser.browser_tasks"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 60  # seconds: generous bounds for a loaded machine; never a fixed sleep
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
READY = re.compile(r"Dashboard on (http://127\.0\.0\.1:\d+)/")


class DashboardProcess:
    """`python -m taskq -A APP dashboard --port 0`, its log in a file, stopped by PID."""

    def __init__(self, env: dict[str, str]):
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        self.log_file = Path(tempfile.mkstemp(prefix="taskq-dashboard-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> DashboardProcess:
        argv = [sys.executable, "-m", "taskq", "-A", APP, "dashboard", "--port", "0"]
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        proc = self.proc
        found = wait_for(
            lambda: READY.search(self.log()) or proc.poll() is not None, WAIT, "the dashboard"
        )
        if proc.poll() is not None or not isinstance(found, re.Match):
            raise AssertionError(f"the dashboard exited with {proc.returncode}:\n{self.log()}")
        self.url = found.group(1)
        return self

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def get(self, path: str) -> Any:
        """A JSON answer of the dashboard's API."""
        with DIRECT.open(self.url + path, timeout=10) as answer:
            return json.load(answer)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@dataclass(frozen=True)
class Stack:
    """What a browser test works against."""

    url: str  # the dashboard, e.g. http://127.0.0.1:PORT
    app: Taskq  # a client of the same app
    node: str  # the worker's hostname
    queue: str  # the queue the worker consumes
    side_queue: str  # a second one, for the dead-letter test
    dashboard: DashboardProcess
    worker: WorkerProcess


def _online(dashboard: DashboardProcess, node: str) -> bool:
    with contextlib.suppress(OSError, ValueError):
        workers = dashboard.get("/api/workers")["workers"]
        return any(w["hostname"] == node and w["online"] for w in workers)
    return False


@pytest.fixture(scope="module")
def stack(redis_url: str, redis_backend_url: str) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    queue, side = f"btest-{tag}", f"btest-side-{tag}"
    node = f"btest-{tag}@browser"
    env = browser_env(redis_url, redis_backend_url, queue)
    app = make_app(redis_url, redis_backend_url, queue)
    dashboard = DashboardProcess(env)
    worker = WorkerProcess(
        APP, "-P", "prefork", "-c", "2", "-Q", f"{queue},{side}", "-n", node, "-E", env=env
    )
    try:
        # The dashboard first: worker events are not kept for a receiver that is not there.
        dashboard.start()
        worker.start()
        wait_for(lambda: _online(dashboard, node), WAIT, f"the dashboard to see {node} online")
        yield Stack(dashboard.url, app, node, queue, side, dashboard, worker)
    except BaseException:
        print(f"--- dashboard log ---\n{dashboard.log()[-6000:]}")
        print(f"--- worker log ---\n{worker.log()[-6000:]}")
        raise
    finally:
        try:
            worker.stop()
        finally:
            worker.kill()
            dashboard.stop()
            app.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.access(binary, os.X_OK):
            pytest.fail(f"{binary} is missing: `make system-deps` installs chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options
    )
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def _page_on_failure(request: pytest.FixtureRequest, browser: webdriver.Chrome) -> Iterator[None]:
    """After a failed test, print what the page showed and said (the console)."""
    yield
    if request.node.stash.get(FAILED, False):
        with contextlib.suppress(Exception):
            print(f"--- page {browser.current_url} ---")
            print(browser.find_element("tag name", "body").text[-4000:])
            for entry in browser.get_log("browser"):  # type: ignore[no-untyped-call]
                print("console:", entry.get("level"), entry.get("message"))


@pytest.fixture
def wait(browser: WebDriver) -> WebDriverWait[WebDriver]:
    # a condition that meets an element redrawn under it tries again
    return WebDriverWait(
        browser, WAIT, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )


@pytest.fixture
def screenshot(browser: WebDriver, tmp_path: Path) -> Iterator[Any]:
    """shot(name): save the whole page (not only the window) as NAME.png."""
    folder = Path(os.environ.get("TASKQ_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> Path:
        # A headless window is no taller than its screen: the page is laid out as tall as
        # it is instead, through the DevTools protocol, for the one picture.
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": min(max(800, int(height)), 3000),
             "deviceScaleFactor": 1, "mobile": False},
        )  # fmt: skip
        try:
            path = folder / f"{name}.png"
            browser.save_screenshot(str(path))
            return path
        finally:
            browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    yield shot
