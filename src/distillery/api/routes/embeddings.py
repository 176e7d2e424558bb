"""``/v1/embeddings``: proxied to the provider that lists the model, or answered locally
(``all-minilm-l6-v2``, see ``distillery.capture.embeddings``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from distillery.api.deps import INGEST, ServicesDep
from distillery.api.responses import json_response, read_json
from distillery.capture.embeddings import EmbeddingsService
from distillery.services import Services

router = APIRouter(prefix="/v1/embeddings", tags=["embeddings"])


def embeddings_service(services: Services) -> EmbeddingsService:
    """The process's embeddings service (built on first use, kept with the services)."""
    found = services.extras.get("embeddings")
    if not isinstance(found, EmbeddingsService):
        found = services.extras["embeddings"] = EmbeddingsService(services.providers)
    return found


@router.post("", dependencies=[INGEST])
async def create_embeddings(request: Request, services: ServicesDep) -> Response:
    body = await read_json(request, services.config.gateway.max_body_bytes)
    return json_response(await embeddings_service(services).create(body))
