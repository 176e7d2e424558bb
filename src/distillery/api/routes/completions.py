"""``/v1/completions``: the legacy text completions, proxied, routed and captured
(``distillery.capture.legacy``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from distillery.api.deps import INGEST, ServicesDep, caller_of
from distillery.api.responses import gateway_response, read_json

router = APIRouter(prefix="/v1/completions", tags=["completions"])


@router.post("", dependencies=[INGEST])
async def create_completion(request: Request, services: ServicesDep) -> Response:
    body = await read_json(request, services.config.gateway.max_body_bytes)
    return await gateway_response(
        services.gateway, services.legacy_completions, body, caller_of(request)
    )
