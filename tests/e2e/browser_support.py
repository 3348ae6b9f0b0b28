"""What the browser tests share: Debian's Chromium, headless, driven by Playwright from PyPI (no
browser is ever downloaded), and the app served on a real socket for it.

`make test` installs Chromium when it is missing; a test that needs it says so instead of skipping.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from web_support import WebTrial

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (a Playwright ``Browser``), closed afterwards."""
    assert CHROMIUM.exists(), "Debian's chromium is missing: run `make test` (it installs it) or apt-get install chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def collect_problems(page: Any, problems: list[str]) -> Any:
    """Record every console error and uncaught script error of ``page`` (a CSP refusal is one) in
    ``problems``; a test ends by asserting there were none."""
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page


@contextmanager
def serving(trial: WebTrial) -> Iterator[str]:
    """The trial's app on a real socket on 127.0.0.1 (a free port), in a thread of this process;
    yields its base URL and disposes of the trial's database afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(trial.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        trial.database.dispose()
