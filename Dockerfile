# The one image every taskservice process runs from: the API (uvicorn), Celery worker, beat, Flower.
# The library is installed as a package; the reference app (app/) runs from /srv/taskservice, as it
# does from a checkout, and is never installed.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/taskservice
COPY pyproject.toml README.md ./
COPY taskservice ./taskservice
COPY backends ./backends
COPY app ./app
RUN pip install ".[celery,flower,app]" \
    && useradd --create-home --uid 10001 taskservice \
    && mkdir -p /data \
    && chown taskservice /data

# Workers should not run as root (Celery warns about it), and nothing here needs root.
USER taskservice
# The shipped configuration of the reference app (compose sets the Celery variables on top).
ENV APP_DATA_DIR=/data \
    TASK_MODULES=app.tasks \
    TASK_STORE_URL=sqlite:////data/tasks.sqlite3 \
    PYTHONPATH=/srv/taskservice
VOLUME ["/data"]
EXPOSE 8000 5555

CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
