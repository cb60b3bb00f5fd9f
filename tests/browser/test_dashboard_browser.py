"""The dashboard in a real browser: headless Chromium against a real `taskq dashboard`
fed by a real prefork worker's events on Redis. Every check reads the rendered DOM and
waits for it with a generous bound; none sleeps or times anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from taskq import states
from taskq.deadletter import DeadLetters
from tests.browser.conftest import WAIT, DashboardProcess, Stack
from tests.integration.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

Wait = WebDriverWait[WebDriver]
# points (circles) above zero in one series of a chart; polylines in a chart
POINTS = """return [...document.querySelectorAll(arguments[0] + ' circle')]
  .filter((c) => Number(c.dataset.value) > 0).length"""
LINES = "return document.querySelectorAll(arguments[0] + ' svg polyline').length"
Shot = Callable[[str], Path]


def css(selector: str) -> tuple[str, str]:
    return (By.CSS_SELECTOR, selector)


def open_page(browser: WebDriver, wait: Wait, url: str) -> None:
    """Load a page and wait until the app has rendered its view and the stream is live."""
    browser.get(url)
    wait.until(EC.text_to_be_present_in_element(css("#conn"), "live"))


# The views redraw rows as the stream reports changes, so a WebElement found a moment ago
# may be gone: reads go through the page's own DOM in one step, clicks retry.
TEXT = "const e = document.querySelector(arguments[0]); return e ? e.textContent : null"
ATTR = "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1])"


def text(browser: WebDriver, selector: str) -> str:
    return str(browser.execute_script(TEXT, selector) or "")


def row_state(browser: WebDriver, task_id: str) -> str | None:
    row = f'#tasks-table tr[data-task-id="{task_id}"]'
    state = browser.execute_script(ATTR, row, "data-state")
    return None if state is None else str(state)


def click(wait: Wait, selector: str) -> None:
    """Click the element once it is clickable, finding it again if it was redrawn."""

    def clicked(browser: WebDriver) -> bool:
        try:
            found = browser.find_elements(By.CSS_SELECTOR, selector)
            if not found or not (found[0].is_displayed() and found[0].is_enabled()):
                return False
            found[0].click()
            return True
        except StaleElementReferenceException:
            return False

    wait.until(clicked, f"{selector} to be clickable")


def confirm_dialog(wait: Wait) -> WebElement:
    """The open confirmation dialog (waits for it)."""
    return wait.until(EC.visibility_of_element_located(css("dialog#confirm[open]")))


def test_workers_page_shows_the_worker_online(
    stack: Stack, browser: WebDriver, wait: Wait, screenshot: Shot
) -> None:
    open_page(browser, wait, f"{stack.url}/workers")
    row = f'#workers-table tr[data-hostname="{stack.node}"]'
    wait.until(EC.visibility_of_element_located(css(f"{row} .dot-online")))
    assert stack.node in text(browser, row)
    assert text(browser, '#nav a[aria-current="page"]') == "Workers"
    screenshot("dashboard-workers")


def test_queues_page_shows_the_queue(
    stack: Stack, browser: WebDriver, wait: Wait, screenshot: Shot
) -> None:
    open_page(browser, wait, f"{stack.url}/queues")
    # Queues are learnt from the workers' active_queues, polled every 10 s.
    row = f'#queues-table tr[data-queue="{stack.queue}"]'
    wait.until(EC.visibility_of_element_located(css(row)))
    assert stack.queue in text(browser, row)
    screenshot("dashboard-queues")


def test_a_task_row_turns_success_live_without_reload(
    stack: Stack, browser: WebDriver, wait: Wait, screenshot: Shot, tmp_path: Path
) -> None:
    gate = tmp_path / "release"
    open_page(browser, wait, f"{stack.url}/tasks")
    browser.execute_script("window.__noReload = 1")
    try:
        result = stack.app.tasks["btest.wait_for"].delay(str(gate))
        wait.until(lambda b: row_state(b, result.id) == states.STARTED)
        gate.touch()
        wait.until(lambda b: row_state(b, result.id) == states.SUCCESS)
    finally:
        gate.touch()
    assert result.get(timeout=WAIT) == "released"
    assert browser.execute_script("return window.__noReload") == 1  # the same page all along
    row = text(browser, f'#tasks-table tr[data-task-id="{result.id}"]')
    assert "btest.wait_for" in row and stack.node in row
    # a few more rows, arriving live too, for the picture
    more = {stack.app.tasks["btest.add"].delay(i, 10 * i).id for i in range(4)}
    wait.until(lambda b: all(row_state(b, task_id) == states.SUCCESS for task_id in more))
    screenshot("dashboard-tasks")


def test_task_detail_shows_a_failing_tasks_traceback_as_text(
    stack: Stack, browser: WebDriver, wait: Wait, screenshot: Shot
) -> None:
    # markup in the message must arrive as text, never as elements (XSS)
    message = f"broken <img src=x onerror=window.__xss=1> {uuid.uuid4().hex[:6]}"
    result = stack.app.tasks["btest.fail"].delay(message)
    with pytest.raises(ValueError):
        result.get(timeout=WAIT)
    open_page(browser, wait, f"{stack.url}/tasks/{result.id}")
    wait.until(EC.text_to_be_present_in_element(css("pre.traceback"), f"ValueError: {message}"))
    assert "Traceback (most recent call last)" in text(browser, "pre.traceback")
    assert text(browser, "#task-id") == result.id
    assert browser.execute_script("return document.querySelectorAll('main img').length") == 0
    assert browser.execute_script("return window.__xss") is None
    screenshot("dashboard-task-detail")


def test_dead_letters_are_listed_and_requeued_through_the_dialog(
    stack: Stack, browser: WebDriver, wait: Wait, screenshot: Shot
) -> None:
    letters = DeadLetters(stack.app)
    # The worker buries a task it does not know, then stops consuming its queue, so that
    # the requeued message stays there for the test to find.
    buried = stack.app.send_task("btest.not_registered", args=(1, 2), queue=stack.side_queue)
    wait_for(lambda: any(d.id == buried.id for d in letters.list()), WAIT, "the dead letter")
    replies = stack.app.control.cancel_consumer(
        stack.side_queue, destination=[stack.node], reply=True, timeout=10
    )
    assert replies, "the worker did not answer cancel_consumer"

    open_page(browser, wait, f"{stack.url}/dead")
    row = f'#dead-table tr[data-dead-id="{buried.id}"]'
    wait.until(EC.visibility_of_element_located(css(row)))
    assert "btest.not_registered" in text(browser, row) and "NotRegistered" in text(browser, row)
    screenshot("dashboard-dead-letters")

    click(wait, f"{row} td.actions button")
    assert buried.id in confirm_dialog(wait).text
    click(wait, "#confirm-ok")
    wait.until(EC.invisibility_of_element_located(css("dialog#confirm")))
    wait.until(EC.invisibility_of_element_located(css(f'tr[data-dead-id="{buried.id}"]')))
    assert not any(d.id == buried.id for d in letters.list())
    with stack.app.connection() as conn:
        waiting = conn.default_channel.queue_declare(stack.side_queue, passive=True).message_count
    assert waiting == 1  # back in the queue it came from


def test_revoke_through_the_dialog_terminates_a_running_task(
    stack: Stack, browser: WebDriver, wait: Wait, screenshot: Shot, tmp_path: Path
) -> None:
    gate = tmp_path / "never"
    try:
        result = stack.app.tasks["btest.wait_for"].delay(str(gate))
        open_page(browser, wait, f"{stack.url}/tasks/{result.id}")
        wait.until(EC.text_to_be_present_in_element(css(".page-head .badge"), states.STARTED))
        click(wait, "#revoke-task")
        dialog = confirm_dialog(wait)
        terminate = dialog.find_element(By.NAME, "terminate")
        if not terminate.is_selected():
            terminate.click()
        screenshot("dashboard-revoke-dialog")
        click(wait, "#confirm-ok")
        wait.until(EC.invisibility_of_element_located(css("dialog#confirm")))
        wait.until(EC.text_to_be_present_in_element(css(".page-head .badge"), states.REVOKED))
        wait_for(lambda: result.state == states.REVOKED, WAIT, "REVOKED in the result backend")
    finally:
        gate.touch()


def test_chart_page_draws_the_tasks_that_ran(
    stack: Stack, browser: WebDriver, wait: Wait, screenshot: Shot
) -> None:
    results = [stack.app.tasks["btest.add"].delay(i, i) for i in range(5)]
    assert [r.get(timeout=WAIT) for r in results] == [2 * i for i in range(5)]
    open_page(browser, wait, f"{stack.url}/chart")

    # The chart is redrawn as data comes: read it in one go, inside the page.
    wait.until(lambda b: int(text(b, "#total-succeeded b").replace(",", "") or 0) >= 5)
    assert browser.execute_script(POINTS, "#chart-throughput .series-succeeded") > 0
    assert browser.execute_script(POINTS, "#chart-runtime .series-p50") > 0
    assert browser.execute_script(LINES, "#chart-throughput") > 0
    screenshot("dashboard-chart")


def test_a_refused_action_shows_the_workers_reason_in_the_dialog(
    stack: Stack, browser: WebDriver, wait: Wait
) -> None:
    open_page(browser, wait, f"{stack.url}/workers")
    wait.until(EC.visibility_of_element_located(css(f'tr[data-hostname="{stack.node}"]')))
    browser.execute_script("window.__noReload = 1")
    click(wait, '#nav a[data-view="tasks"]')  # in-page navigation, no reload
    wait.until(EC.visibility_of_element_located(css("#tasks-table")))
    assert browser.current_url == f"{stack.url}/tasks"
    click(wait, "#rate-limit")
    dialog = confirm_dialog(wait)
    dialog.find_element(By.ID, "field-task").send_keys("btest.no_such_task")
    dialog.find_element(By.ID, "field-rate").send_keys("5/s")
    Select(dialog.find_element(By.ID, "field-worker")).select_by_value(stack.node)
    click(wait, "#confirm-ok")
    wait.until(EC.visibility_of_element_located(css("#confirm-error")))
    # The server answers 502 with the workers' refusals; the dialog shows its text.
    assert text(browser, "#confirm-error") == f"Refused by the workers: {stack.node}: unknown task"
    assert browser.find_element(By.ID, "confirm").get_attribute("open") is not None
    click(wait, "#confirm-cancel")
    wait.until(EC.invisibility_of_element_located(css("dialog#confirm")))
    assert browser.execute_script("return window.__noReload") == 1


def test_task_filters_narrow_the_rows_and_the_address(
    stack: Stack, browser: WebDriver, wait: Wait
) -> None:
    failed = stack.app.tasks["btest.fail"].delay("for the filter")
    added = stack.app.tasks["btest.add"].delay(20, 22)
    assert added.get(timeout=WAIT) == 42
    with pytest.raises(ValueError):
        failed.get(timeout=WAIT)
    open_page(browser, wait, f"{stack.url}/tasks")
    wait.until(lambda b: row_state(b, added.id) == states.SUCCESS)
    by_name = browser.find_element(By.CSS_SELECTOR, 'select[data-filter="name"]')
    Select(by_name).select_by_value("btest.fail")
    wait.until(lambda b: row_state(b, added.id) is None and row_state(b, failed.id) is not None)
    names = "return [...document.querySelectorAll('#tasks-table td.name')].map((e) => e.innerText)"
    assert set(browser.execute_script(names)) == {"btest.fail"}
    assert browser.current_url == f"{stack.url}/tasks?name=btest.fail"
    browser.refresh()  # the address keeps the filter
    wait.until(lambda b: row_state(b, failed.id) == states.FAILURE)
    assert set(browser.execute_script(names)) == {"btest.fail"}


def test_the_page_says_reconnecting_when_the_server_goes(
    stack: Stack, browser: WebDriver, wait: Wait
) -> None:
    own = DashboardProcess(stack.dashboard.env).start()  # one this test may stop
    try:
        open_page(browser, wait, f"{own.url}/queues")
    finally:
        own.stop()
    wait.until(EC.text_to_be_present_in_element(css("#conn"), "reconnecting"))
    assert text(browser, "#conn") == "reconnecting"
