"""What ``celery -A backends.celery_app worker|beat|flower`` names: the app lives in ``backends.celery.app``."""

from backends.celery.app import app as app
