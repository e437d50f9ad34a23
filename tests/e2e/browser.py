"""A real browser for the end-to-end tests: Debian's headless Chromium on this machine.

`dom(url)` is the document after its scripts ran (Chromium's `--dump-dom` once the page is idle,
`--virtual-time-budget` lets its timers and fetches finish), `screenshot(url, png)` the page as
drawn. Each call starts a fresh Chromium with a throw-away profile (as root: no sandbox).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from boot import proc

CHROMIUM = "chromium"
BUDGET_MS = 4000  # virtual time for its scripts (it stands still while a request is pending)
TIMEOUT_S = 180  # real time under a loaded machine (the server is emulated)


def available() -> bool:
    return shutil.which(CHROMIUM) is not None


def _argv(profile: str, url: str, *extra: str) -> list[str]:
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", "--disable-background-networking", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--virtual-time-budget={BUDGET_MS}",
            "--window-size=1280,900", *extra, url]  # fmt: skip


def dom(url: str) -> str:
    """The page's DOM, serialised, after its scripts ran."""
    with tempfile.TemporaryDirectory(prefix="oar-live-chromium-") as profile:
        return proc.run(_argv(profile, url, "--dump-dom"), timeout=TIMEOUT_S).stdout


def screenshot(url: str, png: Path) -> Path:
    """The page as Chromium draws it, saved as `png`."""
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="oar-live-chromium-") as profile:
        proc.run(_argv(profile, url, f"--screenshot={png}"), timeout=TIMEOUT_S)
    if not png.is_file() or png.stat().st_size == 0:
        raise AssertionError(f"chromium wrote no screenshot of {url}")
    return png
