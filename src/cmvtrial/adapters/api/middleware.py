"""The outermost layer of every request: a request id, security headers, and bugs turned into a 500.

Why a plain ASGI middleware and not Starlette's ServerErrorMiddleware: an unexpected exception
must answer with the request id (problem+json on the API, a page for browsers) *and* the security
headers, and the traceback must go to the log only (STYLE.md "Errors"). Catching it here, before
Starlette's own last-resort handler, does all three.

The headers (issue 10): a Content-Security-Policy that allows only this origin's scripts and styles
(no inline script, no third-party code) and no framing (``frame-ancestors 'none'``, plus
X-Frame-Options for old browsers), ``nosniff``, a same-origin referrer policy, and ``no-store`` on
everything but static files, since pages show trial data.

``WriteTurns`` lets one process work on a bounded number of write requests at once (setting
``server_concurrent_writes``, 1 by default); reads are not held up. Measured with
benchmarks/bench_api_load.py (one process, 8 clients writing lab values): 5.2 ms of CPU a write when
the writes took turns, 7.9 ms when four ran at once, their threads fighting over the interpreter
lock (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import weakref
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmvtrial.adapters.api.problems import PROBLEM_MEDIA_TYPE, internal_error_body

logger = logging.getLogger("cmvtrial.web")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
REQUEST_ID_HEADER = "X-Request-Id"
#: Methods that change nothing (RFC 9110 "safe"): they never wait for a write turn.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class WriteTurns:
    """At most ``concurrent`` write requests of this process run at once; the rest wait in order."""

    def __init__(self, app: ASGIApp, concurrent: int) -> None:
        self.app = app
        self.concurrent = concurrent
        # One semaphore per event loop: tests run one app on several loops, one after the other.
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        turns = self._turns.get(loop)
        if turns is None:
            turns = self._turns.setdefault(loop, asyncio.Semaphore(self.concurrent))
        async with turns:
            await self.app(scope, receive, send)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope.get("path", "")
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers[REQUEST_ID_HEADER] = request_id
                if not path.startswith("/static/"):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            logger.exception("request %s failed: %s %s", request_id, scope.get("method"), path)
            if started:
                raise  # the response is half sent; the server closes the connection
            await _send_internal_error(path, request_id, send_with_headers)


async def _send_internal_error(path: str, request_id: str, send: Send) -> None:
    if path.startswith("/api/"):
        body = json.dumps(internal_error_body(request_id, path)).encode("utf-8")
        media_type = PROBLEM_MEDIA_TYPE
    else:
        body = _error_page(request_id).encode("utf-8")
        media_type = "text/html; charset=utf-8"
    headers: list[Any] = [
        (b"content-type", media_type.encode("ascii")),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error_page(request_id: str) -> str:
    # Deliberately without templates: the template engine may be what failed.
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error — cmvtrial</title>"
        "<link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><main class=\"page\">"
        "<h1>Something went wrong</h1><p>This is a bug in cmvtrial. Please report request id "
        f"<code>{request_id}</code>; the details are in the server log.</p>"
        "<p><a href=\"/\">Back to the dashboard</a></p></main></body></html>"
    )
