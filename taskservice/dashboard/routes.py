"""``create_dashboard``: the built-in dashboard as a router any FastAPI app can include.

Pages (under ``prefix``): the task list with counts, filters, search by id and cursor pages;
``/failed``, the failed tasks as an inbox; ``/tasks/{id}``, one task with live progress
(``/tasks/{id}/events``); ``/bulk``, the confirmation and the result of a bulk retry or cancel;
``/login`` and ``/logout``; ``/static/...``, the dashboard's own CSS and JavaScript. Everything
reads the backend's durable records through ``TaskService``, so it shows the same on every backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from taskservice.authorization import bearer_headers
from taskservice.dashboard import actions, static
from taskservice.dashboard.access import Access, Visit
from taskservice.dashboard.listing import PAGE_SIZE, page, parse_cursor, parse_filters
from taskservice.dashboard.markup import Markup, html, render
from taskservice.dashboard.session import SecretSource
from taskservice.dashboard.views import counts, filter_form, inbox_items, notice, pager, task_page, task_table
from taskservice.errors import BackendUnavailable, TaskNotFound
from taskservice.events import StreamLimits, TaskStreams
from taskservice.integration import TaskServiceDep
from taskservice.models import TaskStatus
from taskservice.registry import registered_tasks

NO_MARKUP = Markup("")
LOGIN_FAILURE_DELAY_S = 0.5  # slows guessing at the token through the form


class Dashboard:
    """What the dashboard's routes share: access rules, the event streams, and page rendering."""

    def __init__(self, access: Access, streams: TaskStreams, brand: str) -> None:
        self.access = access
        self.streams = streams
        self.brand = brand
        self.prefix = access.prefix

    def page(
        self,
        visit: Visit,
        title: str,
        content: Markup,
        *,
        status_code: int = 200,
        notice_html: Markup = NO_MARKUP,
        backend: str = "",
    ) -> Response:
        nav_items = [
            html('<a href="$href">Tasks</a>', href=self.prefix),
            html('<a href="$href">Failed inbox</a>', href=f"{self.prefix}/failed"),
        ]
        if self.access.needs_login and visit.session.authenticated:
            nav_items.append(
                html(
                    '<form method="post" action="$url" class="inline">'
                    '<input type="hidden" name="csrf" value="$csrf"><button type="submit" class="link">Log out</button>'
                    "</form>",
                    url=f"{self.prefix}/logout",
                    csrf=self.access.csrf(visit),
                )
            )
        body = render(
            "layout.html",
            title=title,
            brand=self.brand,
            static=f"{self.prefix}/static",
            home=self.prefix,
            nav=Markup("".join(nav_items)) if visit.authorized else Markup(""),
            notice=notice_html,
            content=content,
            backend=backend or "?",
        )
        return self.access.finish(visit, HTMLResponse(body, status_code=status_code))

    async def enter(self, request: Request) -> Visit | Response:
        """The visit if it is let in; otherwise the page that says why (closed) or the login page."""
        visit = await self.access.visit(request)
        if self.access.closed:
            return self.closed(visit)
        if visit.authorized:
            return visit
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = f"{self.prefix}/login?{urlencode({'next': target})}"
        return self.access.finish(visit, RedirectResponse(login, status_code=303))

    def closed(self, visit: Visit) -> Response:
        content = Markup(
            "<h1>The dashboard is closed</h1><p>Mount it with <code>create_dashboard(admin_dependencies=[...])</code>"
            " to let admins in.</p>"
        )
        return self.page(visit, "Closed", content, status_code=403)

    def unavailable(self, visit: Visit, exc: BackendUnavailable) -> Response:
        content = html('<h1>The task backend is unavailable</h1><pre class="error">$error</pre>', error=str(exc))
        return self.page(visit, "Unavailable", content, status_code=503)


def create_dashboard(
    *,
    admin_dependencies: Sequence[Any] | None = None,
    prefix: str = "/dashboard",
    session_secret: SecretSource = None,
    session_max_age_s: float = 8 * 3600,
    stream_limits: StreamLimits | None = None,
    title: str = "taskservice",
) -> APIRouter:
    """The dashboard under ``prefix``, for ``app.include_router(create_dashboard(...))``.

    Closed (403) unless ``admin_dependencies`` are given, like the tasks router; ``[]`` opens it.
    The login form checks the token it is given by running ``admin_dependencies`` on a request
    that carries ``Authorization: Bearer <token>``; the session cookie it then sets is signed
    with ``session_secret`` (a string, bytes, or a callable returning one; give the same one to
    every server process, e.g. derived from the admin token, or sessions hold only within one).
    """
    prefix = "/" + prefix.strip("/")
    access = Access(admin_dependencies, prefix, session_secret, session_max_age_s)
    dashboard = Dashboard(access, TaskStreams(stream_limits), title)
    router = APIRouter(prefix=prefix, include_in_schema=False)

    @router.get("", response_class=HTMLResponse)
    async def task_list(request: Request, service: TaskServiceDep) -> Response:
        visit = await dashboard.enter(request)
        if not isinstance(visit, Visit):
            return visit
        query = request.query_params
        wanted_id = (query.get("id") or "").strip()
        if wanted_id:
            try:
                await service.aget_status(wanted_id[:200])
            except TaskNotFound:
                pass
            else:
                return access.finish(visit, RedirectResponse(f"{prefix}/tasks/{wanted_id}", status_code=303))
        filters = parse_filters(query)
        cursor = parse_cursor(query.get("cursor"))
        try:
            stats, results = await asyncio.gather(service.astats(), page(service, filters, cursor))
        except BackendUnavailable as exc:
            return dashboard.unavailable(visit, exc)
        params = filters.as_params()
        bulk = actions.bulk_links(prefix, params)
        content = Markup(
            html("<h1>Tasks</h1>")
            + counts(prefix, stats, filters.status)
            + html(
                '<form class="search" method="get" action="$action"><label>Find a task by id '
                '<input name="id" size="40" placeholder="task id" required></label><button type="submit">Find</button>'
                "</form>",
                action=prefix,
            )
            + filter_form(prefix, params, sorted(registered_tasks()))
            + bulk
            + task_table(prefix, results)
            + pager(prefix, params, results[-1].cursor if len(results) == PAGE_SIZE else None, cursor is not None)
        )
        code = "not-found" if wanted_id else "bad-time" if filters.bad_time else query.get("notice")
        extra = f"({wanted_id[:80]})" if wanted_id else None
        return dashboard.page(visit, "Tasks", content, notice_html=notice(code, extra), backend=service.backend_name)

    @router.get("/failed", response_class=HTMLResponse)
    async def failed_inbox(request: Request, service: TaskServiceDep) -> Response:
        visit = await dashboard.enter(request)
        if not isinstance(visit, Visit):
            return visit
        filters = parse_filters(request.query_params)
        cursor = parse_cursor(request.query_params.get("cursor"))
        try:
            results = await page(service, filters, cursor, status=TaskStatus.FAILED)
        except BackendUnavailable as exc:
            return dashboard.unavailable(visit, exc)
        params = {key: value for key, value in filters.as_params().items() if key != "status"}
        content = Markup(
            html("<h1>Failed tasks</h1><p>Newest first. Retry makes a new task with the same arguments.</p>")
            + actions.bulk_links(f"{prefix}", {**params, "status": "failed"}, only_retry=True)
            + inbox_items(prefix, results, access.csrf(visit))
            + pager(
                f"{prefix}/failed",
                params,
                results[-1].cursor if len(results) == PAGE_SIZE else None,
                cursor is not None,
            )
        )
        return dashboard.page(visit, "Failed tasks", content, backend=service.backend_name)

    @router.get("/tasks/{task_id}", response_class=HTMLResponse)
    async def task_detail(task_id: str, request: Request, service: TaskServiceDep) -> Response:
        visit = await dashboard.enter(request)
        if not isinstance(visit, Visit):
            return visit
        try:
            result = await service.aget_status(task_id)
        except TaskNotFound:
            content = html(
                "<h1>No such task</h1><p><code>$id</code> was never enqueued, or its record expired.</p>", id=task_id
            )
            return dashboard.page(visit, "Not found", content, status_code=404, backend=service.backend_name)
        except BackendUnavailable as exc:
            return dashboard.unavailable(visit, exc)
        content = task_page(prefix, result, access.csrf(visit))
        code = request.query_params.get("notice")
        return dashboard.page(visit, result.name, content, notice_html=notice(code), backend=service.backend_name)

    @router.get("/tasks/{task_id}/events")
    async def task_events(task_id: str, request: Request, service: TaskServiceDep) -> Response:
        visit = await access.visit(request)
        if not visit.authorized:
            return access.finish(visit, Response("log in to the dashboard first", status_code=401))
        try:
            first = await service.aget_status(task_id)
        except TaskNotFound:
            return access.finish(visit, Response("no such task", status_code=404))
        return access.finish(visit, dashboard.streams.response(service, first))

    actions.add_action_routes(router, dashboard)

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        visit = await access.visit(request)
        if access.closed:
            return dashboard.closed(visit)
        target = access.safe_next(request.query_params.get("next"))
        if visit.authorized:
            return access.finish(visit, RedirectResponse(target, status_code=303))
        return _login_page(dashboard, visit, target, None, 200)

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        visit = await access.visit(request)
        if access.closed:
            return dashboard.closed(visit)
        form = await actions.form_or_none(request)
        target = access.safe_next((form or {}).get("next", [""])[0])
        if form is None or not access.action_allowed(visit, form):
            message = "The form expired or did not come from this page: try again (cookies must be on)."
            return _login_page(dashboard, visit, target, message, 400)
        token = form.get("token", [""])[0]
        status_code = await access.check.status(request, bearer_headers(request, token)) if token else 401
        if 200 <= status_code < 300:
            session = access.signer.new(authenticated=True)
            return access.finish(visit, RedirectResponse(target, status_code=303), session=session)
        await asyncio.sleep(LOGIN_FAILURE_DELAY_S)
        if status_code == 403:
            message = "The app refuses admin access with any token right now (is its admin token set?)."
        else:
            message = "That token was not accepted."
        return _login_page(dashboard, visit, target, message, 401 if status_code != 403 else 403)

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        visit = await access.visit(request)
        form = await actions.form_or_none(request)
        if form is None or not access.action_allowed(visit, form):
            return access.finish(visit, Response("not a logout form of this dashboard", status_code=400))
        session = access.signer.new(authenticated=False)
        return access.finish(
            visit, RedirectResponse(f"{prefix}/login?notice=logged-out", status_code=303), session=session
        )

    static.add_static_route(router)
    return router


def _login_page(dashboard: Dashboard, visit: Visit, target: str, message: str | None, status_code: int) -> Response:
    access = dashboard.access
    content = render(
        "login.html",
        action=f"{dashboard.prefix}/login",
        csrf=access.csrf(visit),
        next=target,
        max_age=f"{access.signer.max_age_s / 3600:g} h",
    )
    shown = html('<p class="notice error" role="alert">$m</p>', m=message) if message else Markup("")
    if message is None and visit.request.query_params.get("notice") == "logged-out":
        shown = notice("logged-out")
    return dashboard.page(visit, "Log in", content, status_code=status_code, notice_html=shown)
