"""The FastAPI application: routers mirror OpenAI's URL tree; errors in OpenAI's envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.responses import Response

from distillery import __version__
from distillery.api import errors
from distillery.api.deps import KeyCache
from distillery.api.responses import json_response
from distillery.api.routes import ROUTERS
from distillery.services import Services
from distillery.weights import preparing


def build_api(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for hook in services.extras.get("startup", []):
            await hook()
        try:
            yield
        finally:
            for hook in services.extras.get("shutdown", []):
                await hook()
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
    errors.install(app)

    @app.get("/health", include_in_schema=False)
    async def health() -> Response:
        # a dead or stuck capture writer fails the check (503) and is restarted by it
        problem = services.writer.supervise()
        spooled = services.writer.spooled()
        body = {
            "status": "failing" if problem else "degraded" if spooled else "ok",
            "version": __version__,
            "database": "sqlite" if services.store.sqlite else "postgresql",
            "spooled_completions": spooled,
            "dead_lettered_completions": services.writer.dead_letters(),
            "writer_restarts": services.writer.restarts,
            "writer_problem": problem,
            # embedded students converted for their first use right now (about a minute)
            "models_loading": sorted(preparing()),
        }
        return json_response(body, 503 if problem else 200)

    for router in ROUTERS:
        app.include_router(router)
    return app
