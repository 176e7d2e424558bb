"""Composition root of the server: the ASGI app over the services."""

from __future__ import annotations

from typing import Any

from distillery.services import Services, build_services

__all__ = ["Services", "build_services", "create_app"]


def create_app(services: Services | None = None) -> Any:
    """The ASGI app: API under /v1, dashboard at /, health at /health."""
    from distillery.api.main import build_api

    return build_api(services or build_services())
