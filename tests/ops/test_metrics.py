"""``/metrics`` of the reference app on a real uvicorn: the same names and labels on both backends, counts that
come from where the attempts ran (Celery workers through Redis), and several uvicorn workers that add up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskservice.testing import processes
from tests.app.flows import wait_for_task
from tests.app.live import LiveApp, app_env
from tests.ops.browser import eventually
from tests.processes import REPO_ROOT

pytestmark = pytest.mark.slow

TASK = "notifications.deliver"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

COUNTERS = {
    "taskservice_tasks_enqueued_total": {"task"},
    "taskservice_tasks_finished_total": {"task", "status"},
    "taskservice_task_retries_total": {"task"},
}
GAUGES = {
    "taskservice_tasks": {"status"},
    "taskservice_oldest_pending_task_age_seconds": set(),
    "taskservice_backend_up": set(),
}


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def label_names(samples: Samples) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for name, labels in samples:
        names.setdefault(name, set()).update(key for key, _ in labels)
    return names


def notify(client: httpx.Client, to: str) -> str:
    response = client.post("/notifications", json={"to": to, "subject": "s", "body": "b"})
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def run_mix(client: httpx.Client) -> None:
    """3 delivered at once, 2 delivered after one refusal each, 1 refused on all 4 attempts (3 retries)."""
    task_ids = [notify(client, f"a{i}@example.com") for i in range(3)]
    task_ids += [notify(client, f"b{i}@fail-1.invalid") for i in range(2)]
    task_ids.append(notify(client, "c@nowhere.invalid"))
    for task_id in task_ids:
        wait_for_task(client, task_id)


def expect_mix(before: Samples, after: Samples) -> bool:
    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    return (
        delta("taskservice_tasks_enqueued_total", task=TASK) == 6
        and delta("taskservice_tasks_finished_total", task=TASK, status="succeeded") == 5
        and delta("taskservice_tasks_finished_total", task=TASK, status="failed") == 1
        and delta("taskservice_task_retries_total", task=TASK) == 2 + 3
        and delta("taskservice_task_duration_seconds_count", task=TASK) == 3 + 2 * 2 + 4
    )


def test_same_names_and_labels_and_the_counts_of_where_tasks_ran(ops_live: LiveApp) -> None:
    with ops_live.client() as client:
        before = scrape(client)
        run_mix(client)
        after = eventually(lambda: (lambda s: s if expect_mix(before, s) else None)(scrape(client)), 15, "the counts")

    names = label_names(after)
    for name, labels in {**COUNTERS, **GAUGES}.items():
        assert names.get(name) == labels, (name, names.get(name))
    assert names["taskservice_task_duration_seconds_bucket"] == {"task", "le"}
    assert value(after, "taskservice_backend_up") == 1
    assert value(after, "taskservice_tasks", status="failed") >= 1
    assert {status for (name, labels) in after if name == "taskservice_tasks" for key, status in labels} == {
        "pending", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled",
    }  # fmt: skip
    assert value(after, "taskservice_task_duration_seconds_bucket", task=TASK, le="+Inf") == value(
        after, "taskservice_task_duration_seconds_count", task=TASK
    )
    if ops_live.backend == "celery" and "taskservice_workers_alive" in names:
        assert value(after, "taskservice_workers_alive") >= 1


def test_oldest_pending_age_grows_while_nothing_consumes(tmp_path: Path) -> None:
    """On Celery with no worker, pending tasks wait: the gauge says for how long."""
    from tests.processes import redis_server, uvicorn_server

    env = app_env("celery", tmp_path)
    with redis_server(tmp_path / "redis") as redis:
        env["REDIS_URL"] = redis.url
        with uvicorn_server(env, tmp_path / "api.log") as url, httpx.Client(base_url=url, timeout=30) as client:
            notify(client, "waiting@example.com")
            first = value(scrape(client), "taskservice_oldest_pending_task_age_seconds")
            second = eventually(
                lambda: (lambda v: v if v >= first + 1 else None)(
                    value(scrape(client), "taskservice_oldest_pending_task_age_seconds")
                ),
                10,
                "the age to grow",
            )
            assert value(scrape(client), "taskservice_tasks", status="pending") == 1
            assert second > first >= 0


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The app under ``uvicorn --workers 2`` on one SQLite store, prometheus_client in multiprocess mode."""
    env = app_env("fastapi", tmp_path)
    env["TASK_STORE_URL"] = f"sqlite:///{tmp_path / 'tasks.sqlite3'}"
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prometheus")
    (tmp_path / "prometheus").mkdir()
    with processes.uvicorn_server(
        env, tmp_path / "api.log", "app.main:app", cwd=REPO_ROOT, extra_args=["--workers", "2"]
    ) as url:
        yield url, tmp_path / "prometheus"


def test_several_uvicorn_workers_add_up(two_workers: tuple[str, Path]) -> None:
    url, multiproc_dir = two_workers
    with httpx.Client(base_url=url, timeout=30) as first:
        before = scrape(first)
    for _ in range(3):  # a new connection per call: the kernel spreads them over both workers
        with httpx.Client(base_url=url, timeout=30, headers={"Connection": "close"}) as client:
            run_mix(client)
    counting_pids = {path.stem.rsplit("_", 1)[-1] for path in multiproc_dir.glob("counter_*.db")}
    assert len(counting_pids) == 2, f"both workers ran tasks and counted them: {sorted(counting_pids)}"

    def three_mixes(samples: Samples) -> bool:
        return all(
            value(samples, name, **labels) - value(before, name, **labels) == 3 * expected
            for name, labels, expected in (
                ("taskservice_tasks_enqueued_total", {"task": TASK}, 6),
                ("taskservice_tasks_finished_total", {"task": TASK, "status": "succeeded"}, 5),
                ("taskservice_tasks_finished_total", {"task": TASK, "status": "failed"}, 1),
                ("taskservice_task_retries_total", {"task": TASK}, 5),
            )
        )

    for _ in range(8):  # whichever worker answers a scrape tells the whole story
        with httpx.Client(base_url=url, timeout=30, headers={"Connection": "close"}) as fresh:
            eventually(lambda c=fresh: three_mixes(scrape(c)), 15, "the sums of both workers")
