"""The FastAPI application: routers mirror OpenAI's URL tree; errors in OpenAI's envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.responses import Response

from distillery import __version__
from distillery.api import errors, openapi
from distillery.api.deps import KeyCache
from distillery.api.responses import json_response
from distillery.api.routes import ROUTERS
from distillery.memory import resident_memory
from distillery.providers.base import HoldsSecrets
from distillery.security import redact
from distillery.security.origins import trusted_hosts
from distillery.services import Services
from distillery.weights import preparing


def _secrets(services: Services) -> list[str]:
    """The provider keys and the bootstrap admin key: masked in every log line."""
    found = [services.settings.api_key or ""]
    for provider in services.providers.providers.values():
        if isinstance(provider, HoldsSecrets):
            found += provider.secrets
    return [s for s in found if s]


def build_api(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # logging is configured by now (uvicorn sets up its handlers after the services are
        # built): every handler masks tokens and the configured keys from here on
        redact.install(_secrets(services))
        await services.lifecycle.start()  # the background work (``distillery.lifecycle``)
        try:
            yield
        finally:
            await services.lifecycle.stop()
            await services.aclose()

    app = FastAPI(
        title="distillery",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
    app.state.key_cache = KeyCache()
    services.keys.on_revoke(app.state.key_cache.forget)
    server = services.config.server
    app.state.trusted_hosts = trusted_hosts(server.trusted_hosts, server.host)
    errors.install(app)
    openapi.install(app)

    @app.get("/health", include_in_schema=False)
    async def health() -> Response:
        # a dead or stuck capture writer fails the check (503) and is restarted by it
        problem = services.writer.supervise()
        spooled = services.writer.spooled()
        routes = services.gateway.health()
        # route outcomes not written (the store refused them) degrade, they do not fail
        lagging = bool(routes["outcomes"]["last_error"])
        # each background component by name; one that failed (and is restarting) degrades
        components = services.lifecycle.health()
        failed = any(c["state"] == "failed" for c in components.values())
        degraded = spooled or lagging or failed
        body = {
            "status": "failing" if problem else "degraded" if degraded else "ok",
            "version": __version__,
            "database": "sqlite" if services.store.sqlite else "postgresql",
            "spooled_completions": spooled,
            "dead_lettered_completions": services.writer.dead_letters(),
            "writer_restarts": services.writer.restarts,
            "writer_problem": problem,
            # embedded students converted for their first use right now (about a minute)
            "models_loading": sorted(preparing()),
            # routes: background shadow/grading work, the outcome writer, failures counted
            "routes": routes,
            "components": components,
            "memory": resident_memory(),  # this process: resident now and its peak, MiB
        }
        return json_response(body, 503 if problem else 200)

    for router in ROUTERS:
        app.include_router(router)
    return app
