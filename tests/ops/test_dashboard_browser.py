"""The dashboard in headless Chromium against the reference app on a real uvicorn, on both backends.

A person logs in, finds a failed task in the inbox and sees why it failed, retries it and watches
the new task succeed; cancels a scheduled task and it never runs; retries exactly the filtered
tasks in bulk; and watches a pipeline's progress move without reloading the page.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.app.flows import create_project, wait_for_task
from tests.app.live import ADMIN_TOKEN, LiveApp
from tests.app.media import sales_csv
from tests.ops.browser import eventually, screenshot

pytestmark = pytest.mark.slow


def notify(client: httpx.Client, to: str, send_at: datetime | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"to": to, "subject": "Report ready", "body": "Your report is ready."}
    if send_at is not None:
        body["send_at"] = send_at.isoformat()
    response = client.post("/notifications", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def admin_status(live: LiveApp, client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.get(f"/tasks/{task_id}", headers=live.admin_headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def log_in(driver: WebDriver, live: LiveApp, path: str = "/dashboard") -> None:
    driver.get(live.base_url + path)
    driver.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    driver.find_element(By.CSS_SELECTOR, "section.login button[type=submit]").click()
    eventually(lambda: "/login" not in driver.current_url, 10, "the login to go through")


def text_of(driver: WebDriver, selector: str, timeout_s: float = 10.0) -> str:
    """The text of the element, read again if the page was replaced under it (a redirect still loading)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return str(driver.find_element(By.CSS_SELECTOR, selector).text)
        except (StaleElementReferenceException, NoSuchElementException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_without_login_the_login_page_comes_up(ops_live: LiveApp, browser: WebDriver) -> None:
    browser.get(ops_live.base_url + "/dashboard/failed")
    assert "/dashboard/login" in browser.current_url
    assert browser.find_element(By.ID, "token").get_attribute("type") == "password"
    screenshot(browser, f"{ops_live.backend}-login")

    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "section.login button[type=submit]").click()
    assert "not accepted" in text_of(browser, ".notice.error")
    assert "/dashboard/login" in browser.current_url

    browser.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    browser.find_element(By.CSS_SELECTOR, "section.login button[type=submit]").click()
    eventually(lambda: browser.current_url.endswith("/dashboard/failed"), 10, "the inbox after login")
    assert text_of(browser, "h1") == "Failed tasks"
    cookies = {cookie["name"]: cookie for cookie in browser.get_cookies()}
    session = cookies["taskservice_dashboard"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and ADMIN_TOKEN not in session["value"]


def test_a_failed_task_is_in_the_inbox_and_its_retry_succeeds(ops_live: LiveApp, browser: WebDriver) -> None:
    with ops_live.client() as client:
        accepted = notify(client, "ada@fail-4.invalid")  # refused on its 4 attempts (1 + 3 retries)
        failed = wait_for_task(client, accepted["task_id"])
        assert failed["status"] == "failed"

        log_in(browser, ops_live, "/dashboard/failed")
        item = browser.find_element(By.CSS_SELECTOR, f'article.failure[data-task-id="{accepted["task_id"]}"]')
        assert (
            "DeliveryRefused: relay refused ada@fail-4.invalid" in item.find_element(By.CSS_SELECTOR, "pre.error").text
        )
        item.find_element(By.TAG_NAME, "summary").click()
        traceback = item.find_element(By.CSS_SELECTOR, "pre.traceback").text
        assert "Traceback (most recent call last)" in traceback and "DeliveryRefused" in traceback
        screenshot(browser, f"{ops_live.backend}-inbox")

        item.find_element(By.CSS_SELECTOR, "form button.primary").click()  # Retry
        eventually(lambda: "notice=retried" in browser.current_url, 10, "the new task's page")
        new_id = browser.current_url.split("/tasks/")[1].split("?")[0]
        assert new_id != accepted["task_id"]
        assert "Retried: this is the new task." in text_of(browser, ".notice")
        eventually(lambda: text_of(browser, '[data-field="status"]') == "succeeded", 60, "the retry to succeed")
        assert accepted["task_id"] in text_of(browser, "dl.facts")  # "Retry of" links the original
        screenshot(browser, f"{ops_live.backend}-retried")

        retried = admin_status(ops_live, client, new_id)
        assert (retried["status"], retried["retry_of"], retried["args"]) == (
            "succeeded",
            accepted["task_id"],
            [accepted["id"]],
        )
        assert admin_status(ops_live, client, accepted["task_id"])["retried_as"] == [new_id]
        assert client.get(f"/notifications/{accepted['id']}").json()["status"] == "sent"


def test_cancelling_a_scheduled_task_holds(ops_live: LiveApp, browser: WebDriver) -> None:
    send_at = datetime.now(UTC) + timedelta(seconds=15)  # time for a cold browser to log in before it is due
    with ops_live.client() as client:
        accepted = notify(client, "bo@example.com", send_at=send_at)
        log_in(browser, ops_live, f"/dashboard/tasks/{accepted['task_id']}")
        assert text_of(browser, '[data-field="status"]') == "scheduled"
        browser.find_element(By.CSS_SELECTOR, "section.task .actions button.danger").click()  # Cancel
        eventually(lambda: "notice=" in browser.current_url or "Refused" in browser.title, 10, "the cancel to answer")
        assert "notice=cancelled" in browser.current_url, (browser.current_url, browser.title)
        assert text_of(browser, '[data-field="status"]') == "cancelled"

        eventually(lambda: datetime.now(UTC) > send_at + timedelta(seconds=4), 25, "the send time to pass")
        browser.refresh()
        assert text_of(browser, '[data-field="status"]') == "cancelled"
        assert text_of(browser, '[data-field="attempts"]') == "0"
        task = admin_status(ops_live, client, accepted["task_id"])
        assert (task["status"], task["attempts"], task["started_at"]) == ("cancelled", 0, None)
        assert client.get(f"/notifications/{accepted['id']}").json()["status"] != "sent"


def test_bulk_retry_acts_on_exactly_the_filtered_tasks(ops_live: LiveApp, browser: WebDriver) -> None:
    with ops_live.client() as client:
        before = client.get("/tasks", headers=ops_live.admin_headers, params={"status": "failed", "limit": 1000}).json()
        since = datetime.now(UTC).replace(microsecond=0)
        chosen = [notify(client, f"user{i}@fail-4.invalid")["task_id"] for i in range(3)]
        bad_project = create_project(client, sales_csv(20, bad_line=5))
        other = client.post(f"/projects/{bad_project}/process").json()["task_id"]  # fails too: another task name
        for task_id in [*chosen, other]:
            assert wait_for_task(client, task_id)["status"] == "failed"

        log_in(browser, ops_live)
        screenshot(browser, f"{ops_live.backend}-tasks")
        Select(browser.find_element(By.NAME, "status")).select_by_value("failed")
        browser.find_element(By.NAME, "name").send_keys("notifications.deliver")
        after = browser.find_element(By.NAME, "after")
        browser.execute_script("arguments[0].value = arguments[1]", after, since.replace(tzinfo=None).isoformat())
        browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
        eventually(lambda: "status=failed" in browser.current_url, 10, "the filtered list")
        listed = [
            row.get_attribute("data-task-id") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-task-id]")
        ]
        assert sorted(listed) == sorted(chosen)

        browser.find_element(By.LINK_TEXT, "Retry all matching…").click()
        confirm = browser.find_element(By.ID, "confirm-bulk")
        assert confirm.text == "Retry these 3 tasks"
        screenshot(browser, f"{ops_live.backend}-bulk-confirm")
        confirm.click()
        assert text_of(browser, "h1") == "Retried 3 of 3"

        for task_id in chosen:
            (retry_id,) = admin_status(ops_live, client, task_id)["retried_as"]
            assert wait_for_task(client, retry_id)["status"] == "succeeded"
        assert admin_status(ops_live, client, other)["retried_as"] == []
        for task in before:  # failed tasks from before the filter's time range were left alone
            assert admin_status(ops_live, client, task["id"])["retried_as"] == task["retried_as"]


def test_progress_moves_live(ops_live: LiveApp, browser: WebDriver) -> None:
    with ops_live.client() as client:
        log_in(browser, ops_live)
        project = create_project(client, sales_csv(100_000, seed=11))
        task_id = client.post(f"/projects/{project}/process").json()["task_id"]
        browser.get(f"{ops_live.base_url}/dashboard/tasks/{task_id}")
        browser.execute_script("window.sameDocument = true")  # gone if the page reloads

        seen: list[float] = []

        def progress_moved() -> bool:
            if not browser.execute_script("return window.sameDocument === true"):
                return True  # the page reloaded: the task ended
            value = float(browser.find_element(By.ID, "progress").get_attribute("value") or 0)
            if not seen or value != seen[-1]:
                seen.append(value)
            return len([v for v in seen if 0 < v < 100]) >= 3

        eventually(progress_moved, 60, "progress to move", interval_s=0.05)
        screenshot(browser, f"{ops_live.backend}-progress")
        assert len([v for v in seen if 0 < v < 100]) >= 3, f"progress seen without a reload: {seen}"
        assert seen == sorted(seen)
        eventually(lambda: text_of(browser, '[data-field="status"]') == "succeeded", 90, "the pipeline to finish")
        assert '"rows"' in text_of(browser, "#result") or text_of(browser, "#result") != "null"
