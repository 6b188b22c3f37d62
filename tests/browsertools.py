"""Debian's chromium for the browser tests (test_report, test_serve_browser), through playwright: never a
browser playwright downloads. Without chromium a browser test FAILS, saying how to install it; only
GENFORGE_SKIP_BROWSER=1 skips it, on purpose."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]


def chromium() -> str:
    """Debian's chromium, or a test failure that says how to get it (a skip only when asked for)."""
    if os.environ.get("GENFORGE_SKIP_BROWSER") == "1":
        pytest.skip("GENFORGE_SKIP_BROWSER=1")
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not on PATH: install it with `apt-get install -y chromium` "
                    "(or set GENFORGE_SKIP_BROWSER=1 to skip this test on purpose)", pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed: `pip install playwright` (it drives the system chromium; "
                    "never run `playwright install`)", pytrace=False)
    return exe


def artifacts_dir() -> Path:
    """Where screenshots go: $GENFORGE_TEST_ARTIFACTS, or tests/artifacts (ignored by git)."""
    d = Path(os.environ.get("GENFORGE_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d
