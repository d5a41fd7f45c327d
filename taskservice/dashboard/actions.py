"""The dashboard's actions: retry or cancel one task, and bulk retry or cancel on a filter after a confirmation.

A bulk action happens in two steps. ``GET /bulk?action=...&<filters>`` lists the tasks the
filter matches now and asks to confirm; the confirmation form carries exactly those ids, so
``POST /bulk`` acts on the tasks the person saw, never on tasks that arrived in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from taskservice.dashboard.access import FormError, Visit, read_form
from taskservice.dashboard.listing import BULK_MAX, bulk_matches, eligible_statuses, parse_filters
from taskservice.dashboard.markup import Markup, html, join
from taskservice.dashboard.views import hidden, query_url, task_link, task_table
from taskservice.errors import BackendUnavailable, TaskConflict, TaskNotFound, TaskStillActive
from taskservice.integration import TaskServiceDep
from taskservice.service import TaskService

if TYPE_CHECKING:
    from taskservice.dashboard.routes import Dashboard

VERBS = {"retry": ("Retry", "retried"), "cancel": ("Cancel", "cancelled")}


def bulk_links(prefix: str, params: Mapping[str, str], *, only_retry: bool = False) -> Markup:
    links = [
        html(
            '<a class="button" href="$href">Retry all matching…</a>',
            href=query_url(f"{prefix}/bulk", {**params, "action": "retry"}),
        )
    ]
    if not only_retry:
        links.append(
            html(
                '<a class="button danger" href="$href">Cancel all matching…</a>',
                href=query_url(f"{prefix}/bulk", {**params, "action": "cancel"}),
            )
        )
    return html('<div class="bulk">$links</div>', links=join(links, " "))


async def form_or_none(request: Request) -> dict[str, list[str]] | None:
    try:
        return await read_form(request)
    except FormError:
        return None


async def retry_one(service: TaskService, task_id: str) -> tuple[str | None, str]:
    """The new task's id (or None) and what happened: "retried", or why not."""
    try:
        return await service.aretry(task_id), "retried"
    except TaskStillActive:
        return None, "still-active"
    except TaskConflict:
        return None, "conflict"
    except TaskNotFound:
        return None, "not-found"


async def cancel_one(service: TaskService, task_id: str) -> str:
    try:
        return "cancelled" if await service.acancel(task_id) else "not-cancelled"
    except TaskNotFound:
        return "not-found"


def add_action_routes(router: APIRouter, dashboard: Dashboard) -> None:
    access = dashboard.access
    prefix = dashboard.prefix

    async def allowed(request: Request) -> tuple[Visit, dict[str, list[str]]] | Response:
        entered = await dashboard.enter(request)
        if not isinstance(entered, Visit):
            return entered
        form = await form_or_none(request)
        if form is None or not access.action_allowed(entered, form):
            content = Markup(
                "<h1>Refused</h1><p>This action did not come from a page of this dashboard (or the page is too old)."
                " Go back, reload the page and try again.</p>"
            )
            return dashboard.page(entered, "Refused", content, status_code=403)
        return entered, form

    @router.post("/tasks/{task_id}/retry")
    async def retry(task_id: str, request: Request, service: TaskServiceDep) -> Response:
        checked = await allowed(request)
        if isinstance(checked, Response):
            return checked
        visit, _ = checked
        new_id, outcome = await retry_one(service, task_id)
        target = f"{prefix}/tasks/{new_id or task_id}?notice={outcome}"
        return access.finish(visit, RedirectResponse(target, status_code=303))

    @router.post("/tasks/{task_id}/cancel")
    async def cancel(task_id: str, request: Request, service: TaskServiceDep) -> Response:
        checked = await allowed(request)
        if isinstance(checked, Response):
            return checked
        visit, _ = checked
        outcome = await cancel_one(service, task_id)
        return access.finish(visit, RedirectResponse(f"{prefix}/tasks/{task_id}?notice={outcome}", status_code=303))

    @router.get("/bulk", response_class=HTMLResponse)
    async def bulk_confirm(request: Request, service: TaskServiceDep) -> Response:
        visit = await dashboard.enter(request)
        if not isinstance(visit, Visit):
            return visit
        action = request.query_params.get("action", "")
        if action not in VERBS:
            return dashboard.page(visit, "Bulk", Markup("<h1>Unknown action</h1>"), status_code=400)
        filters = parse_filters(request.query_params)
        try:
            matches, more = await bulk_matches(service, action, filters)
        except BackendUnavailable as exc:
            return dashboard.unavailable(visit, exc)
        verb = VERBS[action][0]
        statuses = ", ".join(status.value for status in eligible_statuses(action, filters)) or "none"
        described = html(
            "<p>Filter: status <b>$status</b>, task <b>$name</b>, enqueued from <b>$after</b> to <b>$before</b> (UTC)."
            " $verb acts on the $kinds tasks among them.</p>",
            status=filters.status.value if filters.status else "any",
            name=filters.name or "any",
            after=filters.after.isoformat() if filters.after else "the start",
            before=filters.before.isoformat() if filters.before else "now",
            verb=verb,
            kinds=statuses,
        )
        back = query_url(prefix, filters.as_params())
        if not matches:
            content = Markup(
                html("<h1>$verb: nothing to do</h1>", verb=verb)
                + described
                + html('<p><a href="$b">Back</a></p>', b=back)
            )
            return dashboard.page(visit, "Bulk", content, backend=service.backend_name)
        ids = join(hidden("id", result.id) for result in matches)
        warning = (
            html(
                '<p class="notice">More than $n tasks match: this confirms the newest $n; '
                "run it again for the rest.</p>",
                n=BULK_MAX,
            )
            if more
            else Markup("")
        )
        form = html(
            '<form method="post" action="$url" class="confirm">$csrf$action$ids'
            '<button type="submit" class="$css" id="confirm-bulk">$verb these $n tasks</button> '
            '<a href="$back">Back</a></form>',
            url=f"{prefix}/bulk",
            csrf=hidden("csrf", access.csrf(visit)),
            action=hidden("action", action),
            ids=ids,
            css="danger" if action == "cancel" else "primary",
            verb=verb,
            n=len(matches),
            back=back,
        )
        content = Markup(
            html("<h1>$verb $n tasks?</h1>", verb=verb, n=len(matches))
            + described
            + warning
            + form
            + task_table(prefix, matches)
        )
        return dashboard.page(visit, "Confirm", content, backend=service.backend_name)

    @router.post("/bulk", response_class=HTMLResponse)
    async def bulk_apply(request: Request, service: TaskServiceDep) -> Response:
        checked = await allowed(request)
        if isinstance(checked, Response):
            return checked
        visit, form = checked
        action = form.get("action", [""])[0]
        ids = list(dict.fromkeys(form.get("id", [])))
        if action not in VERBS or not ids or len(ids) > BULK_MAX:
            return dashboard.page(visit, "Bulk", Markup("<h1>Nothing to do</h1>"), status_code=400)
        done: list[Markup] = []
        skipped: list[Markup] = []
        for task_id in ids:
            if action == "retry":
                new_id, outcome = await retry_one(service, task_id)
                if new_id is not None:
                    done.append(
                        html(
                            "<li>$old → $new</li>",
                            old=task_link(prefix, task_id, task_id[:8]),
                            new=task_link(prefix, new_id),
                        )
                    )
                    continue
            else:
                outcome = await cancel_one(service, task_id)
                if outcome == "cancelled":
                    done.append(html("<li>$old</li>", old=task_link(prefix, task_id)))
                    continue
            skipped.append(html("<li>$old: $why</li>", old=task_link(prefix, task_id), why=outcome))
        verb, past = VERBS[action]
        content = Markup(
            html(
                '<h1>$past $n of $total</h1><ul class="bulk-done">$done</ul>',
                past=past.capitalize(),
                n=len(done),
                total=len(ids),
                done=join(done),
            )
            + (html('<h2>Skipped</h2><ul class="bulk-skipped">$s</ul>', s=join(skipped)) if skipped else Markup(""))
            + html('<p><a href="$home">Back to the tasks</a></p>', home=prefix)
        )
        return dashboard.page(visit, f"{verb} done", content, backend=service.backend_name)
