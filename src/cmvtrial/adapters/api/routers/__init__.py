"""The /api/v1 routers. To add a service to the API, write a module here with a ``router`` and add
it to ``ROUTERS`` (docs/web-and-api.md walks through it)."""

from __future__ import annotations

from fastapi import APIRouter


def api_routers() -> list[APIRouter]:
    """Every /api/v1 router, in the order the OpenAPI schema lists them."""
    from cmvtrial.adapters.api.routers import (
        audit,
        auth,
        calculators,
        doses,
        queries,
        randomization,
        reports,
        safety,
        sites,
        subjects,
        trial,
        users,
        visits,
    )

    return [auth.router, trial.router, sites.router, users.router, audit.router, calculators.router, subjects.router,
            randomization.router, visits.router, doses.router, safety.router, queries.router, reports.router]
