"""The dashboard's HTML, built from ``TaskResult`` snapshots; every value goes through ``markup.escape``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from taskservice.dashboard.markup import Markup, escape, html, join, render
from taskservice.models import TaskResult, TaskStats, TaskStatus

RETRYABLE = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})
CANCELLABLE = frozenset({TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RETRYING})
NOTICES = {
    "retried": "Retried: this is the new task.",
    "cancelled": "Cancelled: it will not run.",
    "not-cancelled": "Not cancelled: the task had already started or finished.",
    "still-active": "Not retried: the task is still active.",
    "conflict": "Not retried: another active task holds its unique_key.",
    "not-found": "No task with that id (never enqueued, or its record expired).",
    "bad-time": "A time filter was not a date and time; it was left out.",
    "logged-out": "Logged out.",
}


NONE = Markup('<span class="none">&#8211;</span>')


def when(moment: datetime | None) -> Markup:
    if moment is None:
        return NONE
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return html('<time datetime="$iso">$text</time>', iso=moment.isoformat(), text=text)


def seconds_between(start: datetime | None, end: datetime | None) -> Markup:
    if start is None or end is None:
        return NONE
    seconds = max((end - start).total_seconds(), 0.0)
    text = (
        f"{seconds * 1000:.0f} ms"
        if seconds < 1
        else f"{seconds:.1f} s"
        if seconds < 120
        else f"{seconds / 60:.1f} min"
    )
    return escape(text)


def status_badge(status: TaskStatus) -> Markup:
    return html('<span class="status status-$status">$status</span>', status=status.value)


def pretty_json(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def query_url(base: str, params: Mapping[str, str | None]) -> str:
    kept = [(key, value) for key, value in params.items() if value]
    return f"{base}?{urlencode(kept)}" if kept else base


def task_link(prefix: str, task_id: str, text: str | None = None) -> Markup:
    return html('<a href="$href"><code>$text</code></a>', href=f"{prefix}/tasks/{task_id}", text=text or task_id)


def hidden(name: str, value: str) -> Markup:
    return html('<input type="hidden" name="$name" value="$value">', name=name, value=value)


def action_form(url: str, label: str, csrf: str, css: str = "", confirm: str | None = None) -> Markup:
    confirm_attr = html(' data-confirm="$text"', text=confirm) if confirm else Markup("")
    return html(
        '<form method="post" action="$url" class="inline"$confirm>$csrf<button type="submit" class="$css">$label'
        "</button></form>",
        url=url,
        confirm=confirm_attr,
        csrf=hidden("csrf", csrf),
        css=css,
        label=label,
    )


def task_actions(prefix: str, result: TaskResult, csrf: str) -> Markup:
    parts: list[Markup] = []
    if result.status in RETRYABLE:
        parts.append(action_form(f"{prefix}/tasks/{result.id}/retry", "Retry", csrf, "primary"))
    if result.status in CANCELLABLE:
        parts.append(action_form(f"{prefix}/tasks/{result.id}/cancel", "Cancel", csrf, "danger"))
    return join(parts)


def notice(code: str | None, extra: str | None = None) -> Markup:
    text = NOTICES.get(code or "")
    if text is None:
        return Markup("")
    return html('<p class="notice" role="status">$text$extra</p>', text=text, extra=f" {extra}" if extra else "")


def counts(prefix: str, stats: TaskStats, current: TaskStatus | None) -> Markup:
    items = []
    for status in TaskStatus:
        css = "count selected" if status is current else "count"
        items.append(
            html(
                '<a class="$css status-$status" href="$href" data-count="$status"><b>$n</b> $status</a>',
                css=css,
                status=status.value,
                href=query_url(prefix, {"status": status.value}),
                n=stats.counts.get(status, 0),
            )
        )
    return html('<section class="counts" aria-label="Tasks by status">$items</section>', items=join(items))


def filter_form(prefix: str, filters: Mapping[str, str], names: Sequence[str]) -> Markup:
    options = [html('<option value="">any status</option>')]
    for status in TaskStatus:
        selected = " selected" if filters.get("status") == status.value else ""
        options.append(html('<option value="$v"$s>$v</option>', v=status.value, s=Markup(selected)))
    datalist = join(html('<option value="$n">', n=name) for name in names)
    return render(
        "filters.html",
        action=prefix,
        status_options=join(options),
        name=filters.get("name", ""),
        names=datalist,
        after=filters.get("after", ""),
        before=filters.get("before", ""),
        clear=prefix,
    )


def task_rows(prefix: str, results: Sequence[TaskResult]) -> Markup:
    if not results:
        return Markup('<tr><td colspan="8" class="empty">No tasks match.</td></tr>')
    rows = []
    for result in results:
        progress = "" if result.progress is None else f"{result.progress:g} %"
        rows.append(
            html(
                '<tr data-task-id="$id"><td>$link</td><td class="name">$name</td><td>$badge</td><td>$attempts</td>'
                "<td>$enqueued</td><td>$started</td><td>$finished</td><td>$progress</td></tr>",
                id=result.id,
                link=task_link(prefix, result.id, result.id[:8]),
                name=result.name,
                badge=status_badge(result.status),
                attempts=result.attempts,
                enqueued=when(result.enqueued_at),
                started=when(result.started_at),
                finished=when(result.finished_at),
                progress=progress,
            )
        )
    return join(rows)


def task_table(prefix: str, results: Sequence[TaskResult]) -> Markup:
    return html(
        '<table class="tasks"><thead><tr><th>Id</th><th>Task</th><th>Status</th><th>Attempts</th><th>Enqueued</th>'
        "<th>Started</th><th>Finished</th><th>Progress</th></tr></thead><tbody>$rows</tbody></table>",
        rows=task_rows(prefix, results),
    )


def pager(base: str, filters: Mapping[str, str], next_cursor: str | None, paged: bool) -> Markup:
    links = []
    if paged:
        links.append(html('<a href="$href">« Newest</a>', href=query_url(base, {**filters, "cursor": None})))
    if next_cursor:
        links.append(
            html('<a href="$href" rel="next">Older »</a>', href=query_url(base, {**filters, "cursor": next_cursor}))
        )
    return html('<nav class="pages">$links</nav>', links=join(links, " "))


def inbox_items(prefix: str, results: Sequence[TaskResult], csrf: str) -> Markup:
    if not results:
        return Markup('<p class="empty">No failed tasks. Nothing to do.</p>')
    items = []
    for result in results:
        retried = (
            html(
                '<p class="retried">Retried as $links</p>',
                links=join((task_link(prefix, r, r[:8]) for r in result.retried_as), ", "),
            )
            if result.retried_as
            else Markup("")
        )
        items.append(
            html(
                '<article class="failure" data-task-id="$id"><header><span class="name">$name</span> $link '
                '<span class="meta">failed $finished after $attempts attempt(s)</span> $actions</header>'
                '<pre class="error">$error</pre>$retried'
                '<details><summary>Traceback</summary><pre class="traceback">$traceback</pre></details></article>',
                id=result.id,
                name=result.name,
                link=task_link(prefix, result.id, result.id[:8]),
                finished=when(result.finished_at),
                attempts=result.attempts,
                actions=task_actions(prefix, result, csrf),
                error=result.error or "",
                retried=retried,
                traceback=result.traceback or "(no traceback recorded)",
            )
        )
    return join(items)


def task_page(prefix: str, result: TaskResult, csrf: str) -> Markup:
    progress = (
        result.progress if result.progress is not None else (100.0 if result.status is TaskStatus.SUCCEEDED else 0.0)
    )
    return render(
        "task.html",
        status=result.status.value,
        events_url=f"{prefix}/tasks/{result.id}/events",
        home=prefix,
        task_id=result.id,
        name=result.name,
        actions=task_actions(prefix, result, csrf),
        progress_value=f"{progress:g}",
        progress_text=f"{progress:g} %",
        progress_message=result.progress_message or "",
        attempts=result.attempts,
        enqueued_at=when(result.enqueued_at),
        run_at=when(result.run_at),
        started_at=when(result.started_at),
        finished_at=when(result.finished_at),
        waited=seconds_between(result.run_at or result.enqueued_at, result.started_at),
        ran=seconds_between(result.started_at, result.finished_at),
        retry_of=task_link(prefix, result.retry_of) if result.retry_of else NONE,
        retried_as=join((task_link(prefix, r) for r in result.retried_as), ", ") or NONE,
        arguments=pretty_json({"args": result.args, "kwargs": result.kwargs}),
        result=pretty_json(result.result),
        error=result.error or "-",
        traceback=result.traceback or "-",
    )
