"""``/v1/completions``: the legacy text completions, proxied and captured
(``distillery.capture.legacy``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.responses import Response

from distillery.api.deps import INGEST, ServicesDep
from distillery.api.responses import json_response, read_json

router = APIRouter(prefix="/v1/completions", tags=["completions"])


@router.post("", dependencies=[INGEST])
async def create_completion(request: Request, services: ServicesDep) -> Response:
    body = await read_json(request, services.config.gateway.max_body_bytes)
    legacy = services.legacy_completions
    if isinstance(body, dict) and body.get("stream") is True:
        return StreamingResponse(
            await legacy.stream(body),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    return json_response(await legacy.create(body))
