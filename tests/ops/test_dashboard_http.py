"""The dashboard over HTTP (TestClient, FakeTaskService): access, login, CSRF, escaping, actions, bulk."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from taskservice import TaskStatus, task
from taskservice.dashboard import create_dashboard
from taskservice.testing import FakeTaskService, override_task_service

TOKEN = "dashboard-s3cret"


@task(name="ops.add")
def add(a: int, b: int) -> int:
    return a + b


@task(name="ops.explode")
def explode(message: str) -> None:
    raise RuntimeError(message)


def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
    if authorization != f"Bearer {TOKEN}":
        raise HTTPException(status_code=401, detail="no")


def build(fake: FakeTaskService, **options: Any) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(create_dashboard(**options))
    with override_task_service(app, fake), TestClient(app, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def guarded(fake_task_service: FakeTaskService) -> Iterator[TestClient]:
    yield from build(fake_task_service, admin_dependencies=[Depends(require_token)], session_secret="k")


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page[:2000]
    return match.group(1)


def log_in(client: TestClient, token: str = TOKEN) -> Any:
    form = client.get("/dashboard/login")
    return client.post(
        "/dashboard/login",
        data={"csrf": csrf_of(form.text), "token": token, "next": "/dashboard/failed"},
        follow_redirects=False,
    )


def test_closed_by_default(fake_task_service: FakeTaskService) -> None:
    for client in build(fake_task_service):
        for path in ("/dashboard", "/dashboard/failed", "/dashboard/login"):
            response = client.get(path)
            assert response.status_code == 403 and "closed" in response.text
        assert client.post("/dashboard/login", data={"token": TOKEN}).status_code == 403


def test_without_login_every_page_leads_to_the_login_page(
    guarded: TestClient, fake_task_service: FakeTaskService
) -> None:
    task_id = fake_task_service.enqueue(add, 1, 2)
    for path in ("/dashboard", "/dashboard/failed", f"/dashboard/tasks/{task_id}", "/dashboard/bulk?action=retry"):
        response = guarded.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/dashboard/login?next=")
    page = guarded.get(f"/dashboard/tasks/{task_id}")
    assert page.status_code == 200 and 'type="password"' in page.text
    assert guarded.get(f"/dashboard/tasks/{task_id}/events").status_code == 401


def test_login_with_the_admin_token_then_a_cookie_lets_in(guarded: TestClient) -> None:
    wrong = log_in(guarded, "nope")
    assert wrong.status_code == 401 and "not accepted" in wrong.text
    ok = log_in(guarded)
    assert ok.status_code == 303 and ok.headers["location"] == "/dashboard/failed"
    cookie = ok.headers["set-cookie"]
    assert (
        "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/dashboard" in cookie
    )
    assert TOKEN not in cookie
    page = guarded.get("/dashboard")
    assert page.status_code == 200 and "<h1>Tasks</h1>" in page.text


def test_a_bearer_header_passes_without_a_login(guarded: TestClient) -> None:
    assert guarded.get("/dashboard", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_forged_cookie_is_not_a_session(guarded: TestClient) -> None:
    guarded.cookies.set("taskservice_dashboard", "abc.1.99999999999.deadbeef", path="/dashboard")
    assert guarded.get("/dashboard", follow_redirects=False).status_code == 303


def test_login_form_needs_its_csrf_token(guarded: TestClient) -> None:
    guarded.get("/dashboard/login")
    response = guarded.post("/dashboard/login", data={"csrf": "x", "token": TOKEN}, follow_redirects=False)
    assert response.status_code == 400
    assert guarded.get("/dashboard", follow_redirects=False).status_code == 303


def test_actions_need_the_csrf_token_and_the_same_origin(
    guarded: TestClient, fake_task_service: FakeTaskService
) -> None:
    log_in(guarded)
    failed = fake_task_service.enqueue(explode, "boom")
    fake_task_service.run_all()
    page = guarded.get(f"/dashboard/tasks/{failed}")
    token = csrf_of(page.text)

    assert guarded.post(f"/dashboard/tasks/{failed}/retry", data={}).status_code == 403
    assert guarded.post(f"/dashboard/tasks/{failed}/retry", data={"csrf": "0" * 64}).status_code == 403
    evil = guarded.post(
        f"/dashboard/tasks/{failed}/retry", data={"csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert evil.status_code == 403
    as_json = guarded.post(f"/dashboard/tasks/{failed}/retry", json={"csrf": token})
    assert as_json.status_code == 403
    assert fake_task_service.get_status(failed).retried_as == []

    done = guarded.post(f"/dashboard/tasks/{failed}/retry", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    (new_id,) = fake_task_service.get_status(failed).retried_as
    assert done.headers["location"] == f"/dashboard/tasks/{new_id}?notice=retried"


def test_every_value_is_escaped_and_the_policy_is_strict(
    guarded: TestClient, fake_task_service: FakeTaskService
) -> None:
    log_in(guarded)
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    task_id = fake_task_service.enqueue(explode, hostile)
    fake_task_service.run_all()
    for path in (f"/dashboard/tasks/{task_id}", "/dashboard/failed", "/dashboard"):
        response = guarded.get(path)
        assert "<script>alert" not in response.text and "<img src=x" not in response.text
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in response.text or path == "/dashboard"
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert "<script>" not in response.text.replace(
            '<script src="/dashboard/static/dashboard.js" defer></script>', ""
        )
    search = guarded.get("/dashboard", params={"id": hostile})
    assert "<script>alert" not in search.text and "No task with that id" in search.text


def test_assets_are_served_by_the_package(guarded: TestClient) -> None:
    page = guarded.get("/dashboard/login").text
    assert "http://" not in page and "https://" not in page, "no asset from another origin"
    for name, kind in (
        ("dashboard.css", "text/css"),
        ("dashboard.js", "text/javascript"),
        ("favicon.svg", "image/svg"),
    ):
        response = guarded.get(f"/dashboard/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        again = guarded.get(f"/dashboard/static/{name}", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
    assert guarded.get("/dashboard/static/..%2Fsession.py").status_code == 404


def test_cancel_a_scheduled_task_and_refuse_a_running_one(
    guarded: TestClient, fake_task_service: FakeTaskService
) -> None:
    from datetime import timedelta

    log_in(guarded)
    later = fake_task_service.schedule(add, timedelta(hours=1), 1, 1)
    token = csrf_of(guarded.get(f"/dashboard/tasks/{later}").text)
    response = guarded.post(f"/dashboard/tasks/{later}/cancel", data={"csrf": token}, follow_redirects=False)
    assert response.headers["location"].endswith("notice=cancelled")
    assert fake_task_service.get_status(later).status == TaskStatus.CANCELLED


def test_bulk_retry_acts_on_exactly_the_confirmed_tasks(
    guarded: TestClient, fake_task_service: FakeTaskService
) -> None:
    log_in(guarded)
    chosen = [fake_task_service.enqueue(explode, f"chosen {i}") for i in range(3)]
    fake_task_service.run_all()
    other_failed = fake_task_service.enqueue(add, 1, "x")  # fails too, but under another task name
    fake_task_service.run_all()
    assert fake_task_service.get_status(other_failed).status == TaskStatus.FAILED

    confirm = guarded.get("/dashboard/bulk", params={"action": "retry", "status": "failed", "name": "ops.explode"})
    assert confirm.status_code == 200 and "Retry these 3 tasks" in confirm.text
    ids = re.findall(r'name="id" value="([^"]+)"', confirm.text)
    assert sorted(ids) == sorted(chosen)

    late = fake_task_service.enqueue(explode, "arrived after the confirmation")
    fake_task_service.run_all()
    form = {"csrf": csrf_of(confirm.text), "action": "retry", "id": ids}
    result = guarded.post("/dashboard/bulk", data=form)
    assert result.status_code == 200 and "Retried 3 of 3" in result.text
    for task_id in chosen:
        assert len(fake_task_service.get_status(task_id).retried_as) == 1
    assert fake_task_service.get_status(late).retried_as == []
    assert fake_task_service.get_status(other_failed).retried_as == []


def test_list_filters_counts_and_pages(guarded: TestClient, fake_task_service: FakeTaskService) -> None:
    log_in(guarded)
    ids = [fake_task_service.enqueue(add, i, i) for i in range(60)]
    page = guarded.get("/dashboard", params={"name": "ops.add"})
    assert page.text.count('data-task-id="') == 50
    assert 'data-count="pending"><b>60</b>' in page.text
    older = re.search(r'href="([^"]+)" rel="next"', page.text)
    assert older
    second = guarded.get(older.group(1).replace("&amp;", "&"))
    listed = re.findall(r'data-task-id="([^"]+)"', second.text)
    assert listed == ids[:10][::-1]
    assert guarded.get("/dashboard", params={"status": "failed"}).text.count('data-task-id="') == 0
    found = guarded.get("/dashboard", params={"id": ids[3]}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == f"/dashboard/tasks/{ids[3]}"


def test_open_dashboard_needs_no_login_but_still_csrf(fake_task_service: FakeTaskService) -> None:
    for client in build(fake_task_service, admin_dependencies=[]):
        task_id = fake_task_service.enqueue(explode, "x")
        fake_task_service.run_all()
        assert client.get("/dashboard").status_code == 200
        assert client.post(f"/dashboard/tasks/{task_id}/retry", data={"csrf": "bad"}).status_code == 403


def test_logout_ends_the_session(guarded: TestClient) -> None:
    log_in(guarded)
    page = guarded.get("/dashboard")
    assert page.status_code == 200 and "Log out" in page.text
    assert guarded.post("/dashboard/logout", data={"csrf": "forged"}).status_code == 400
    out = guarded.post("/dashboard/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"].startswith("/dashboard/login")
    assert guarded.get("/dashboard", follow_redirects=False).status_code == 303


def test_a_changed_secret_ends_every_session(fake_task_service: FakeTaskService) -> None:
    secret = {"value": "first"}
    for client in build(
        fake_task_service, admin_dependencies=[Depends(require_token)], session_secret=lambda: secret["value"]
    ):
        log_in(client)
        assert client.get("/dashboard").status_code == 200
        secret["value"] = "rotated"  # the reference app derives it from APP_ADMIN_TOKEN
        assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_login_only_redirects_inside_the_dashboard(guarded: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example", "/dashboardevil", "/other"):
        guarded.cookies.clear()
        form = guarded.get("/dashboard/login")
        response = guarded.post(
            "/dashboard/login",
            data={"csrf": csrf_of(form.text), "token": TOKEN, "next": target},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/dashboard", target
