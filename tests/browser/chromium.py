"""Drive the system Chromium (Debian packages `chromium` + `chromium-driver`) with Playwright for Python.

Playwright's own browser download is never used (`playwright install` needs the network): we launch
/usr/bin/chromium headless with the network-quiet flags below and collect console errors, page errors
and dialogs, so a test can assert that a page loads cleanly and that no injected script ran.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def skip_reason() -> str | None:
    """Why a browser test cannot run here, or None. Only a missing Chromium is a reason (CI installs it)."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is absent: apt-get install -y chromium chromium-driver"
    return None


@dataclass
class PageLog:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@contextlib.contextmanager
def open_page(url: str, viewport: tuple[int, int] = (1400, 1000)) -> Iterator[tuple[object, PageLog]]:
    """Open `url` in headless Chromium; yields (playwright Page, PageLog)."""
    from playwright.sync_api import sync_playwright

    log = PageLog()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on("console", lambda msg: log.console_errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: log.page_errors.append(str(exc)))

            def on_dialog(dialog) -> None:
                log.dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", on_dialog)
            page.on("request", lambda req: log.requests.append(req.url))
            page.goto(url, wait_until="load")
            yield page, log
        finally:
            browser.close()


def save_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
