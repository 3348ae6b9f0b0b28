"""Who is calling: bearer tokens for scripts, the session cookie for browsers, CSRF for the latter.

Authentication only: *what* the caller may do is decided by the services (permissions.require),
so the API and the pages cannot disagree.

- ``Authorization: Bearer cmvt_…`` — a script's API token (services/api_tokens.py). A token is
  never sent by a browser on its own, so such requests need no CSRF token.
- The ``cmvtrial_session`` cookie (HttpOnly, SameSite=Lax, Secure over HTTPS) — a browser's
  session (services/sessions.py). Because a browser attaches it to requests another site makes,
  every state-changing request signed in this way must also carry the CSRF token: a form field
  ``csrf_token`` on pages, the ``X-CSRF-Token`` header on the API. The token is an HMAC of the
  session token, so it needs no storage and dies with the session.
- Before sign-in the login form is protected the same way with a random pre-session cookie
  (login CSRF would sign a victim into the attacker's account).

Sign-in attempts are also rate-limited per client address (``LoginThrottle``) on top of the
per-account lockout in services/accounts.py (issue 9 "login rate-limited").
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import Request, Response
from starlette.datastructures import FormData

from cmvtrial.adapters.api.middleware import SAFE_METHODS
from cmvtrial.errors import AuthenticationFailed, CsrfRejected, TooManyAttempts
from cmvtrial.services.permissions import Actor

SESSION_COOKIE = "cmvtrial_session"
PRESESSION_COOKIE = "cmvtrial_presession"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_CSRF_LABEL = b"cmvtrial-csrf-v1"


def csrf_token_for(secret: str) -> str:
    """The CSRF token bound to a session (or pre-session) secret."""
    return hmac.new(secret.encode("utf-8"), _CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_matches(secret: str | None, offered: str | None) -> bool:
    return bool(secret) and bool(offered) and hmac.compare_digest(csrf_token_for(secret or ""), offered or "")


@dataclass(frozen=True, slots=True)
class SignedIn:
    actor: Actor
    via: Literal["session", "token"]
    session_token: str | None = None


def signed_in(request: Request, *, allow_bearer: bool = True) -> SignedIn:
    """The caller of ``request``, or AuthenticationFailed. Resolved once per request."""
    cached = getattr(request.state, "signed_in", None)
    if cached is not None:
        return cached
    from cmvtrial.services.api_tokens import actor_for_token
    from cmvtrial.services.sessions import resume_session

    context = request.app.state.cmvtrial
    header = request.headers.get("authorization")
    if header and allow_bearer:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationFailed("the Authorization header must be `Bearer <token>`", field="Authorization")
        result = SignedIn(actor_for_token(context.uow(), value.strip()), "token")
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise AuthenticationFailed(
                "sign in first: send `Authorization: Bearer <token>`, or the session cookie from "
                "POST /api/v1/auth/login"
            )
        active = resume_session(context.uow(), cookie, policy=context.session_policy)
        result = SignedIn(active.actor, "session", cookie)
    request.state.signed_in = result
    return result


def api_actor(request: Request) -> Actor:
    """FastAPI dependency of every authenticated API route: the actor, CSRF-checked when needed."""
    caller = signed_in(request)
    if caller.via == "session" and request.method not in SAFE_METHODS:
        if not csrf_matches(caller.session_token, request.headers.get(CSRF_HEADER)):
            raise CsrfRejected(
                f"a browser session must send the {CSRF_HEADER} header given at sign-in "
                "(scripts: use a bearer token instead)",
                field=CSRF_HEADER,
            )
    return caller.actor


def page_actor(request: Request) -> Actor:
    """FastAPI dependency of every signed-in page: the session's actor (no bearer tokens on pages)."""
    return signed_in(request, allow_bearer=False).actor


def check_form_csrf(request: Request, form: FormData) -> None:
    """Refuse a page form whose ``csrf_token`` does not match the session (or pre-session) cookie."""
    secret = request.cookies.get(SESSION_COOKIE) or request.cookies.get(PRESESSION_COOKIE)
    offered = form.get(CSRF_FIELD)
    if not csrf_matches(secret, offered if isinstance(offered, str) else None):
        raise CsrfRejected(
            "this form has expired or did not come from cmvtrial; reload the page and try again",
            field=CSRF_FIELD,
        )


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class LoginThrottle:
    """At most ``limit`` sign-in attempts per client address in any ``window`` seconds.

    In memory, per server process: enough against one client guessing across many accounts (the
    per-account lockout handles one account). Thread-safe: sync routes run in a thread pool.
    """

    def __init__(self, limit: int, *, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._attempts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Count one attempt from ``client``, or refuse it with TooManyAttempts."""
        now = self.clock()
        with self._lock:
            if len(self._attempts) > 10_000:  # forget idle clients so memory stays bounded
                self._attempts = {k: v for k, v in self._attempts.items() if v and v[-1] > now - self.window}
            attempts = self._attempts.setdefault(client, deque())
            while attempts and attempts[0] <= now - self.window:
                attempts.popleft()
            if len(attempts) >= self.limit:
                wait = max(1, math.ceil(attempts[0] + self.window - now))
                raise TooManyAttempts(
                    f"too many sign-in attempts from this address; try again in {wait} s",
                    retry_after=wait,
                )
            attempts.append(now)


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    """The session cookie: unreadable by scripts, not sent on cross-site POSTs, Secure over HTTPS.
    No Max-Age: it goes when the browser closes; the server ends it on its own schedule anyway."""
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="lax", secure=request.url.scheme == "https", path="/"
    )
    response.delete_cookie(PRESESSION_COOKIE, path="/")


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
