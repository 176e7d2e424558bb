"""``/v1/embeddings``: proxied to the provider that lists the model, or answered locally
(``all-minilm-l6-v2``, see ``distillery.capture.embeddings``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from distillery.api.deps import INGEST, ServicesDep
from distillery.api.responses import json_response, read_json

router = APIRouter(prefix="/v1/embeddings", tags=["embeddings"])


@router.post("", dependencies=[INGEST])
async def create_embeddings(request: Request, services: ServicesDep) -> Response:
    body = await read_json(request, services.config.gateway.max_body_bytes)
    return json_response(await services.embeddings.create(body))
