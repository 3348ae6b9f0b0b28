"""The HTTP adapter: the FastAPI app (REST API under /api/v1 and the web pages) built by
``create_app(settings)``. Nothing here runs at import; engines come from the factory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cmvtrial.adapters.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from cmvtrial.adapters.api.app import create_app

        return create_app
    raise AttributeError(name)
