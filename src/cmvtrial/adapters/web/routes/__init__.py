"""The page routes. To add a page, write a module here with a ``router`` (include_in_schema=False)
and add it to ``web_routers``; add its menu entry in web/navigation.py (docs/web-and-api.md)."""

from __future__ import annotations

from fastapi import APIRouter


def web_routers() -> list[APIRouter]:
    from cmvtrial.adapters.web.routes import (
        admin,
        audit,
        home,
        query_pages,
        reference,
        report_pages,
        safety_pages,
        screening,
        sign_in,
        subjects,
        tokens,
        visit_pages,
    )

    return [sign_in.router, home.router, reference.router, admin.router, audit.router, tokens.router,
            subjects.router, screening.router, visit_pages.router, query_pages.router, safety_pages.router,
            report_pages.router]
