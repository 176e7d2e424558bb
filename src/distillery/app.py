"""Composition root of the server: the ASGI app over the services."""

from __future__ import annotations

from typing import Any

from distillery.services import Services, build_services

__all__ = ["Services", "build_services", "create_app"]


def create_app(services: Services | None = None, *, run_distillations: bool = True) -> Any:
    """The ASGI app: API under /v1, dashboard at /, health at /health, behind the request guard
    (request ids, trusted hosts, cross-site requests, form body limits: ``api/guard.py``).

    ``run_distillations=False`` leaves out the runner of queued distillations: a one-off command
    that serves the API to itself (``distillery distill``, the demo) takes on no one else's."""
    from distillery.api.guard import RequestGuard
    from distillery.api.main import build_api
    from distillery.distill.service import DistillationRunner
    from distillery.web.pages import router as web_router
    from distillery.worker import install as install_worker

    services = services or build_services()
    install_worker(services)  # the job worker runs with the server (server.workers_in_serve)
    if run_distillations and "distillations" not in services.lifecycle.names:
        services.lifecycle.add(DistillationRunner(services))  # needs the server's event loop
    app = build_api(services)
    app.include_router(web_router)  # after the API: its not-found page catches the rest
    return RequestGuard(app, trusted_hosts=app.state.trusted_hosts)
