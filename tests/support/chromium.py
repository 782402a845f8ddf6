"""Headless Chromium (Debian's ``chromium``) for the tests that load our HTML pages: the
page's DOM after loading, or a screenshot of it, with no network. Tests that need it are
marked :data:`needs_chromium` and skip cleanly where it is not installed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
"""The browser's path, or ``None`` where none is installed."""

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not "
                                    "installed (make test installs it when run as root)")

_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=90)


def dump_dom(page: Path) -> str:
    """The DOM of ``page`` after headless Chromium loaded it (with no network)."""
    return _chromium("--dump-dom", page.as_uri()).stdout


def screenshot(page: Path, target: Path, width: int = 1000, height: int = 1400) -> Path:
    """A PNG of ``page`` as headless Chromium drew it in a ``width`` x ``height`` window."""
    proc = _chromium(f"--screenshot={target}", f"--window-size={width},{height}",
                     "--hide-scrollbars", page.as_uri())
    assert target.exists(), proc.stderr[-2000:]
    return target
