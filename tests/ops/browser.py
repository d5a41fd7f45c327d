"""Headless Chromium from the system's packages (``chromium``, ``chromium-driver``), driven by Selenium.

No browser is downloaded: the binary and the driver are the Debian ones at fixed paths, each
session gets a fresh profile directory, and background networking is off. Screenshots go to
``tests/ops/screenshots/`` (kept by CI, ignored by git).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.app.live import wait_until

CHROMIUM = Path(os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER_BINARY", "/usr/bin/chromedriver"))
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)
T = TypeVar("T")

if "SE_OFFLINE" not in os.environ:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or a driver


def require_chromium() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        message = f"{', '.join(missing)} not found (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": browser tests must not be skipped in CI")
        pytest.skip(message)


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A Selenium ``webdriver.Chrome`` on the system Chromium, with a fresh profile; closed afterwards."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="taskservice-chromium-"))
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: object, name: str) -> Path:
    """Save the page as ``screenshots/<name>.png``; return the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    return path


def eventually(probe: Callable[[], T | None], timeout_s: float = 30.0, what: str = "", interval_s: float = 0.2) -> T:
    """``wait_until`` with the argument order these tests read best in."""
    return wait_until(probe, timeout_s, interval_s, what)
