"""The wheel: what it holds, and that it installs beside a user's own package called ``app``.

The most common name of a FastAPI package is ``app``. The wheel must ship ``taskservice`` and
``backends`` only (the reference app runs from the checkout), and the library must not import
any task module of its own accord (``TASK_MODULES`` is empty by default). Checked on a real
wheel built from this checkout, installed with pip into a fresh virtual environment next to a
regular install of a user distribution whose package is ``app``, running one task in-process
and one on a real Celery worker with a private redis-server.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from taskservice.testing import processes
from tests.processes import REPO_ROOT, redis_server

pytestmark = pytest.mark.slow

LUA_DIR = REPO_ROOT / "backends" / "celery" / "store" / "lua"
COPY_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "data", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "bench", "tests"
)

USER_TASKS = '''
"""The user's own tasks, in the user's own package called app."""
from taskservice import task


@task(name="user.add")
def add(a: int, b: int) -> int:
    return a + b
'''

RUN_ONE_TASK = """
import sys
from pathlib import Path

import app
from app.tasks import add
from taskservice import get_task_service
from taskservice.registry import registered_tasks

service = get_task_service()
task_id = service.enqueue(add, 2, 3)
result = service.wait(task_id, timeout_s=30)
print("app from", Path(app.__file__).parent)
print("backend", service.backend_name, "result", result.status.value, result.result)
print("tasks", sorted(registered_tasks()))
service.close()
"""


def _build_wheel(source: Path, out: Path) -> Path:
    """``pip wheel`` of a copy of ``source`` (the build never writes into the checkout)."""
    tree = out / "src"
    shutil.copytree(source, tree, ignore=COPY_IGNORED)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), "."],
        cwd=tree,
        check=True,
        capture_output=True,
    )
    [wheel] = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_wheel(REPO_ROOT, tmp_path_factory.mktemp("wheel"))


def test_the_wheel_ships_the_library_only_with_its_lua_scripts(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}

    assert top_level == {"taskservice", "backends"}, f"unexpected top-level entries: {sorted(top_level)}"
    shipped_lua = {Path(name).name for name in names if name.startswith("backends/celery/store/lua/")}
    assert shipped_lua == {path.name for path in LUA_DIR.glob("*.lua")} and shipped_lua
    assert "taskservice/testing/pytest_plugin.py" in names
    [entry_points] = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    assert "taskservice = taskservice.testing.pytest_plugin" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _user_distribution(root: Path) -> Path:
    """A user project whose package is ``app``, built as a wheel of its own (a regular install)."""
    project = root / "userproject"
    (project / "app").mkdir(parents=True)
    (project / "app" / "__init__.py").write_text('"""The user\'s app."""\n')
    (project / "app" / "tasks.py").write_text(USER_TASKS)
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "userproject"
            version = "1.0"

            [tool.setuptools]
            packages = ["app"]
            """
        )
    )
    return _build_wheel(project, root / "userwheel")


def _fresh_venv(root: Path) -> Path:
    """A new virtual environment; the third-party dependencies come from this one (no download)."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Appended after the new venv's own site-packages, and its .pth files (this checkout's
    # editable install among them) are not processed: only what the wheels install is taskservice.
    Path(site, "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _pip_install(python: Path, *wheels: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index"]
        + [str(wheel) for wheel in wheels],
        check=True,
        capture_output=True,
    )


def _run(python: Path, cwd: Path, **env: str) -> str:
    script = cwd / "run_one_task.py"
    script.write_text(RUN_ONE_TASK)
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), **env}
    completed = subprocess.run(
        [str(python), str(script)], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_installed_beside_a_user_package_named_app_it_runs_a_task_on_both_backends(wheel: Path, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path)
    _pip_install(python, _user_distribution(tmp_path))
    _pip_install(python, wheel)
    site = Path(
        subprocess.run(
            [str(python), "-c", "import app, os; print(os.path.dirname(app.__file__))"],
            check=True,
            capture_output=True,
            text=True,
            cwd=tmp_path,
        ).stdout.strip()
    )
    assert (site / "tasks.py").read_text() == USER_TASKS, "taskservice's wheel overwrote the user's app"
    workdir = tmp_path / "work"
    workdir.mkdir()

    inprocess = _run(python, workdir, TASK_MODULES="app.tasks")

    assert "backend fastapi result succeeded 5" in inprocess
    assert "tasks ['user.add']" in inprocess, "only the user's tasks are registered"
    assert not (workdir / "data").exists(), "nothing of the reference app ran in the user's folder"

    with redis_server(tmp_path / "redis") as redis:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TASK_BACKEND": "celery", "REDIS_URL": redis.url}
        env["TASK_MODULES"] = "app.tasks"
        log = tmp_path / "worker.log"
        args = [str(python), "-m", "celery", "-A", "backends.celery_app", "worker", "--pool=prefork"]
        args += ["--concurrency=1", "--without-gossip", "--without-mingle", "--loglevel=INFO"]
        worker = processes.spawn(args, env, log, cwd=workdir)  # not the checkout: its app is not the user's
        try:
            processes.wait_for_log(log, "ready.", worker, timeout_s=60)
            on_celery = _run(python, workdir, **env)
        finally:
            processes.stop_process(worker, timeout_s=15)

    assert "backend celery result succeeded 5" in on_celery, log.read_text()[-3000:]
    assert "user.add" in log.read_text()

    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "uninstall", "--quiet", "--yes", "taskservice"],
        check=True,
        capture_output=True,
    )
    assert (site / "tasks.py").read_text() == USER_TASKS, "uninstalling taskservice removed the user's files"
