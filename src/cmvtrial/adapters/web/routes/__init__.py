"""The page routes. To add a page, write a module here with a ``router`` (include_in_schema=False)
and add it to ``web_routers``; add its menu entry in web/navigation.py (docs/web-and-api.md)."""

from __future__ import annotations

from fastapi import APIRouter


def web_routers() -> list[APIRouter]:
    from cmvtrial.adapters.web.routes import admin, audit, home, reference, sign_in, tokens

    return [sign_in.router, home.router, reference.router, admin.router, audit.router, tokens.router]
