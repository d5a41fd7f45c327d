"""docker-compose.yml: a valid compose file, and every service's command started for real.

No Docker engine is needed: the file is checked against the compose specification's structure
(the parts that can be checked offline), then each service's own command runs here with the
file's own environment, moved onto loopback ports, a private redis-server and a temporary data
directory: the API answers, the worker runs the app's task, beat fires the periodic task, Flower
asks for credentials.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from taskservice import TaskSettings, TaskStatus
from tests.processes import (
    REPO_ROOT,
    VENV_BIN,
    base_env,
    free_port,
    require_redis_server,
    spawn,
    stop_process,
    wait_for_log,
    wait_for_port,
)

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
TASKSERVICE_SERVICES = ("api", "worker", "beat", "flower")

# From the compose specification (compose-spec.json): what may appear where.
TOP_LEVEL_KEYS = {"version", "name", "include", "services", "networks", "volumes", "configs", "secrets", "models"}
_SERVICE_KEY_NAMES = """
    annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs container_name
    cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime cpu_shares cpus cpuset credential_spec
    depends_on deploy develop device_cgroup_rules devices dns dns_opt dns_search domainname entrypoint env_file
    environment expose extends external_links extra_hosts gpus group_add healthcheck hostname image init ipc
    isolation labels links logging mac_address mem_limit mem_reservation mem_swappiness memswap_limit models
    network_mode networks oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop
    privileged profiles pull_policy read_only restart runtime scale secrets security_opt shm_size stdin_open
    stop_grace_period stop_signal storage_opt sysctls tmpfs tty ulimits use_api_socket user userns_mode uts
    volumes volumes_from working_dir"""
SERVICE_KEYS = set(_SERVICE_KEY_NAMES.split())
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
DEPENDS_ON_KEYS = {"condition", "restart", "required"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
RESTART_POLICIES = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
PORT = re.compile(r"^((\d{1,3}\.){3}\d{1,3}:)?(\d+:)?\d+(/(tcp|udp))?$")
INTERPOLATION = re.compile(r"\$(\$|\{[A-Za-z_][A-Za-z0-9_]*((:?[-?+])[^}]*)?\}|[A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


# --- the file itself ----------------------------------------------------------------------------


def test_the_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    assert set(compose) - TOP_LEVEL_KEYS <= {key for key in compose if key.startswith("x-")}
    services: dict[str, dict[str, Any]] = compose["services"]
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name), name
        unknown = {key for key in service if not key.startswith("x-")} - SERVICE_KEYS
        assert not unknown, f"{name}: not compose service keys: {unknown}"
        assert "image" in service or "build" in service, f"{name} has neither image nor build"
        command = service.get("command")
        assert command is None or (isinstance(command, list) and all(isinstance(part, str) for part in command))
        for key, value in environment(service).items():
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"{name}: environment variable {key!r}"
            assert "$" not in value.replace("$$", "") or INTERPOLATION.search(value), f"{name}: {key}={value!r}"
        for volume in service.get("volumes", []):
            source, _, target = volume.partition(":")
            assert target.startswith("/"), f"{name}: volume {volume!r} needs an absolute target"
            if not source.startswith((".", "/", "~")):
                assert source in declared_volumes, f"{name}: named volume {source!r} is not declared"
        for port in service.get("ports", []):
            assert PORT.match(str(port)), f"{name}: port {port!r}"
        depends_on = service.get("depends_on", {})
        for dependency, condition in depends_on.items() if isinstance(depends_on, dict) else []:
            assert dependency in services, f"{name} depends on unknown service {dependency!r}"
            assert set(condition) <= DEPENDS_ON_KEYS and condition["condition"] in CONDITIONS
        if "restart" in service:
            assert RESTART_POLICIES.match(service["restart"]), f"{name}: restart {service['restart']!r}"
        if "healthcheck" in service:
            check = service["healthcheck"]
            assert set(check) <= HEALTHCHECK_KEYS and check["test"][0] in ("CMD", "CMD-SHELL", "NONE")
            for key in ("interval", "timeout", "start_period"):
                assert key not in check or DURATION.match(check[key]), f"{name}: healthcheck {key}"
        if "stop_grace_period" in service:
            assert DURATION.match(service["stop_grace_period"])


def test_the_services_share_settings_and_data(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "api", "worker", "beat", "flower"} <= set(services)
    assert services["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"], "persistence on"
    assert services["api"]["command"][:2] == ["uvicorn", "app.main:app"]
    for name, subcommand in (("worker", "worker"), ("beat", "beat"), ("flower", "flower")):
        assert services[name]["command"][:4] == ["celery", "-A", "backends.celery_app", subcommand]
    for name in TASKSERVICE_SERVICES:
        env = environment(services[name])
        assert env["TASK_BACKEND"] == "celery"
        assert env["TASK_MODULES"] == "app.tasks"
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert env["DATABASE_URL"] and env["APP_DATA_DIR"] == "/data"
        assert f"app-data:{env['APP_DATA_DIR']}" in services[name]["volumes"], f"{name} must share the data"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    database_host = re.search(r"@([^:/]+)", environment(services["api"])["DATABASE_URL"])
    assert database_host is not None and database_host.group(1) in services
    assert environment(services["flower"])["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH")
    for published in (*services["api"]["ports"], *services["flower"]["ports"]):
        assert published.startswith("127.0.0.1:"), "published on the host's loopback only"


def test_the_worker_service_runs_both_pools(compose: dict[str, Any]) -> None:
    """One worker command: sync tasks on the prefork pool, async ones on the async pool it starts."""
    worker = compose["services"]["worker"]
    assert not {"-Q", "--queues", "--pool", "-P"} & set(worker["command"]), "its queues and pool are the defaults"
    assert environment(worker).get("TASK_ASYNC_WORKER", "1") != "0"
    assert worker["stop_grace_period"], "a warm shutdown gives running tasks time"


def test_the_image_the_services_build(compose: dict[str, Any]) -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and re.search(r"^FROM python:3\.1[1-9]", dockerfile, re.MULTILINE)
    for package in ("taskservice", "backends", "app"):
        assert re.search(rf"^COPY {package} ", dockerfile, re.MULTILINE), package
    assert 'pip install ".[celery,flower,app]"' in dockerfile  # Flower has its own extra
    assert re.search(r"^USER (?!root)", dockerfile, re.MULTILINE)
    for name in TASKSERVICE_SERVICES:
        executable = compose["services"][name]["command"][0]
        assert (VENV_BIN / executable).exists(), f"{executable} is installed by the image's extras"


# --- every command, for real ------------------------------------------------------------------------


class Local:
    """Where a compose value points in this test: loopback ports, a private Redis, a temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data_dir = directory / "data"
        self.data_dir.mkdir()
        self.redis_port = free_port()
        self.ports = {"api": free_port(), "flower": free_port()}
        self.secrets = {"FLOWER_BASIC_AUTH": "admin:compose-test", "APP_ADMIN_TOKEN": "compose-token"}

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def value(self, text: str) -> str:
        text = INTERPOLATION.sub(lambda match: self._interpolate(match.group(0)), text)
        text = re.sub(r"redis://redis:6379", f"redis://127.0.0.1:{self.redis_port}", text)
        if text.startswith("postgresql"):  # the app's own tests cover PostgreSQL; here: one shared file
            return f"sqlite:///{self.directory / 'app.sqlite3'}"
        return text.replace("0.0.0.0", "127.0.0.1").replace("/data", str(self.data_dir))

    def _interpolate(self, expression: str) -> str:
        name, _, default = expression.strip("${}").partition(":-")
        return self.secrets.get(name, default)

    def command(self, name: str, service: dict[str, Any]) -> list[str]:
        parts = [self.value(part) for part in service["command"]]
        if name == "redis":
            return [require_redis_server(), *parts[1:], "--port", str(self.redis_port), "--bind", "127.0.0.1",
                    "--dir", str(self.directory), "--daemonize", "no"]  # fmt: skip
        if "--port" in parts:
            parts[parts.index("--port") + 1] = str(self.ports[name])
        return [str(VENV_BIN / parts[0]), *parts[1:]]

    def env(self, name: str, service: dict[str, Any]) -> dict[str, str]:
        env = base_env(**{key: self.value(value) for key, value in environment(service).items()})
        env["APP_UPKEEP_INTERVAL_S"] = "1"  # the periodic task fires every second instead of every 5 minutes
        if name == "flower":
            env["FLOWER_PORT"] = str(self.ports["flower"])
        return env


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def running(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    local = Local(tmp_path_factory.mktemp("compose"))
    services = compose["services"]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        processes["redis"] = spawn(local.command("redis", services["redis"]), base_env(), local.directory / "redis.log")
        wait_for_port(local.redis_port, process=processes["redis"])
        for name in TASKSERVICE_SERVICES:
            command, env = local.command(name, services[name]), local.env(name, services[name])
            processes[name] = spawn(command, env, local.directory / f"{name}.log")
        wait_for_port(local.ports["api"], timeout_s=60, process=processes["api"])
        wait_for_log(local.directory / "worker.log", "ready.", processes["worker"], timeout_s=60)
        wait_for_port(local.ports["flower"], timeout_s=60, process=processes["flower"])
        yield local
    finally:
        for process in processes.values():  # all at once: each warm shutdown takes a moment
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(processes.values()):
            stop_process(process, timeout_s=15)


@pytest.mark.slow
def test_redis_runs_with_persistence(running: Local) -> None:
    assert (running.directory / "appendonlydir").is_dir() or (running.directory / "appendonly.aof").exists()


@pytest.mark.slow
def test_the_api_answers_with_the_celery_backend(running: Local) -> None:
    response = httpx.get(f"http://127.0.0.1:{running.ports['api']}/health", timeout=10)
    assert response.json() == {"status": "ok", "backend": "celery"}


@pytest.mark.slow
def test_the_worker_runs_the_apps_task(running: Local) -> None:
    base = f"http://127.0.0.1:{running.ports['api']}"
    accepted = httpx.post(
        f"{base}/notifications", json={"to": "ada@example.com", "subject": "Hi", "body": "compose"}, timeout=10
    )
    assert accepted.status_code == 202, accepted.text
    task_id, notification_id = accepted.json()["task_id"], accepted.json()["id"]

    task = wait_until(
        lambda: (
            (r := httpx.get(f"{base}/tasks/{task_id}", timeout=10).json())["status"] in ("succeeded", "failed") and r
        ),
        30,
        "the notification task did not finish",
    )
    assert (task["status"], task["name"]) == ("succeeded", "notifications.deliver"), task
    assert httpx.get(f"{base}/notifications/{notification_id}", timeout=10).json()["status"] == "sent"


@pytest.mark.slow
def test_beat_fires_the_periodic_task_as_a_normal_task(running: Local) -> None:
    from backends.celery.service import CeleryTaskService

    service = CeleryTaskService(TaskSettings(backend="celery", redis_url=running.redis_url))
    try:
        fired = wait_until(
            lambda: [
                result
                for result in service.list_tasks(status=TaskStatus.SUCCEEDED)
                if result.name == "upkeep.thumbnail_integrity"
            ],
            30,
            "beat did not fire upkeep.thumbnail_integrity (or no worker ran it)",
        )
    finally:
        service.close()
    assert fired[0].attempts == 1 and fired[0].result is not None
    assert "Sending due task upkeep.thumbnail_integrity" in (running.directory / "beat.log").read_text()
    listed = httpx.get(
        f"http://127.0.0.1:{running.ports['api']}/tasks",
        params={"status": "succeeded"},
        headers={"Authorization": f"Bearer {running.secrets['APP_ADMIN_TOKEN']}"},
        timeout=10,
    )
    assert fired[0].id in {task["id"] for task in listed.json()}


@pytest.mark.slow
def test_flower_asks_for_credentials(running: Local) -> None:
    base = f"http://127.0.0.1:{running.ports['flower']}"
    assert httpx.get(base, timeout=10).status_code == 401
    user, password = running.secrets["FLOWER_BASIC_AUTH"].split(":")
    assert httpx.get(base, auth=(user, password), timeout=10).status_code == 200
