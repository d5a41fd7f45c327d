"""The reference app's tasks (``TASK_MODULES=app.tasks``): the same code runs in-process or in Celery workers.

Each task takes ids, never data ("pass an id, not the data"), reads what it needs from the
shared database and data directory, and is safe to run twice (delivery is at least once).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from app import outbox, pipeline, telemetry
from app.db import get_database
from app.imaging import THUMBNAIL_SIZES, make_thumbnails, sha256_of
from app.models import Image, Notification, UpkeepRun
from app.project_runs import ProjectRun
from app.settings import get_settings, settings_at_start
from app.storage import data_dir
from taskservice import TaskConflict, get_task_service, periodic, set_progress, task

log = logging.getLogger("app.tasks")
telemetry.install()  # workers and beat import this module: count and trace where the tasks run

MAX_THUMBNAIL_REPAIRS = 3
# An image not ready yet may just have been uploaded, its task about to be enqueued: leave it be for a while.
NEW_IMAGE_GRACE = timedelta(seconds=60)
PROGRESS_STEP_PERCENT = 2.0


@functools.cache
def _heavy_slots() -> threading.BoundedSemaphore:
    return threading.BoundedSemaphore(get_settings().heavy_task_concurrency)


@contextlib.contextmanager
def heavy_slot() -> Iterator[None]:
    """Hold one of the APP_HEAVY_TASK_CONCURRENCY slots of this process while decoding or parsing a
    big upload, so a burst of uploads cannot add up their peak memory (the in-process API runs
    TASK_THREAD_CONCURRENCY tasks at once; a Celery worker child runs one anyway)."""
    slots = _heavy_slots()
    if not slots.acquire(blocking=False):
        set_progress(0, "waiting for a free slot (APP_HEAVY_TASK_CONCURRENCY)")
        slots.acquire()
    try:
        yield
    finally:
        slots.release()


@task(name="images.make_thumbnails", max_retries=2, retry_backoff=1.0, timeout=120)
def make_image_thumbnails(image_id: str) -> dict[str, Any]:
    """Write the 150/300/600 px JPEGs of an uploaded image, record the original's SHA-256, mark it ready."""
    files = data_dir()
    db = get_database()
    with db.session() as session:
        if session.get(Image, image_id) is None:
            return {"image_id": image_id, "skipped": "no such image"}
    original = files.original(image_id)
    destinations = {size: files.thumbnail(image_id, size) for size in THUMBNAIL_SIZES}
    with heavy_slot():
        sizes = make_thumbnails(original, destinations, get_settings().max_image_pixels)
    digest = sha256_of(original)
    with db.session() as session:
        session.execute(update(Image).where(Image.id == image_id).values(sha256=digest, thumbnail_ready=True))
    return {"image_id": image_id, "sha256": digest, "thumbnails": {str(size): list(wh) for size, wh in sizes.items()}}


@task(name="projects.process", timeout=600)
def process_project(project_id: str, run_token: int) -> dict[str, Any]:
    """Parse, validate, aggregate and report a project's CSV, with progress; on bad data the project says why."""
    files = data_dir()
    run = ProjectRun(get_database(), project_id, run_token)
    if not run.start():
        return {"project_id": project_id, "skipped": "a newer run of this project took over"}
    last_reported = -PROGRESS_STEP_PERCENT

    def report(percent: float, message: str) -> None:
        nonlocal last_reported
        if percent - last_reported >= PROGRESS_STEP_PERCENT or percent >= 100:
            last_reported = percent
            set_progress(round(percent, 1), message)
            run.progress(percent)

    try:
        with heavy_slot():
            summary = pipeline.run(files.project_input(project_id), files.project_report(project_id), report)
    except pipeline.PipelineError as exc:
        run.fail(str(exc))
        raise
    except Exception as exc:  # anything else is a bug or an outage: say so on the project, keep the traceback
        run.fail(f"the pipeline crashed: {type(exc).__name__}: {exc}")
        raise
    run.complete(summary)
    return summary


@task(name="notifications.deliver")
def deliver_notification(notification_id: str) -> dict[str, Any]:
    """Deliver to the outbox; a refusal is retried with backoff, and the last one marks it ``failed``."""
    db = get_database()
    with db.session() as session:
        notification = session.get(Notification, notification_id)
        if notification is None:
            return {"notification_id": notification_id, "skipped": "no such notification"}
        if notification.status in ("sent", "cancelled"):  # a failed one may be retried (service.retry)
            return {"notification_id": notification_id, "status": notification.status}
        notification.attempts += 1
        attempt = notification.attempts
    try:
        with db.session() as session:
            notification = session.get_one(Notification, notification_id)
            outbox.deliver(session, notification, attempt)
            notification.status = "sent"
            notification.sent_at = datetime.now(UTC)
            notification.last_error = None
    except outbox.DeliveryRefused as exc:
        with db.session() as session:
            notification = session.get_one(Notification, notification_id)
            notification.last_error = str(exc)
            if attempt >= notification.max_attempts:
                notification.status = "failed"
        raise
    return {"notification_id": notification_id, "status": "sent", "attempts": attempt}


# Read when this module is imported: by the API, each worker and beat (beat's value is the one that counts).
@periodic(every=settings_at_start().upkeep_interval_s)
@task(name="upkeep.thumbnail_integrity")
def check_thumbnail_integrity() -> dict[str, int]:
    """Find images whose thumbnails are missing, re-enqueue them (a few times at most), record the run."""
    started_at = datetime.now(UTC)
    files = data_dir()
    db = get_database()
    service = get_task_service()
    counts = {"checked": 0, "missing": 0, "requeued": 0, "already_queued": 0, "given_up": 0}
    with db.session() as session:
        images = session.execute(select(Image.id, Image.thumbnail_ready, Image.repairs, Image.created_at)).all()
    for image_id, ready, repairs, created_at in images:
        counts["checked"] += 1
        if ready and all(files.thumbnail(image_id, size).is_file() for size in THUMBNAIL_SIZES):
            continue
        if not ready and started_at - created_at < NEW_IMAGE_GRACE:
            continue
        counts["missing"] += 1
        if repairs >= MAX_THUMBNAIL_REPAIRS:
            counts["given_up"] += 1
            continue
        if ready:  # its files are gone: say so before the repair task, which sets it again when done
            with db.session() as session:
                session.execute(update(Image).where(Image.id == image_id).values(thumbnail_ready=False))
        try:
            task_id = service.enqueue(make_image_thumbnails.options(unique_key=f"thumbnails:{image_id}"), image_id)
        except TaskConflict:  # its thumbnail task is still pending or running: nothing is lost yet
            counts["already_queued"] += 1
            continue
        with db.session() as session:
            session.execute(
                update(Image).where(Image.id == image_id).values(task_id=task_id, repairs=Image.repairs + 1)
            )
        counts["requeued"] += 1
    with db.session() as session:
        session.add(UpkeepRun(started_at=started_at, finished_at=datetime.now(UTC), **counts))
    if counts["requeued"] or counts["given_up"]:
        log.warning("thumbnail integrity check: %s", counts)
    return counts
