"""The /api/v1 routers. To add a service to the API, write a module here with a ``router`` and add
it to ``ROUTERS`` (docs/web-and-api.md walks through it)."""

from __future__ import annotations

from fastapi import APIRouter


def api_routers() -> list[APIRouter]:
    """Every /api/v1 router, in the order the OpenAPI schema lists them."""
    from cmvtrial.adapters.api.routers import audit, auth, calculators, sites, trial, users

    return [auth.router, trial.router, sites.router, users.router, audit.router, calculators.router]
