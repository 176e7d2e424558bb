"""The gateway's create endpoints, one route each: ``POST /v1/chat/completions``,
``POST /v1/responses`` and ``POST /v1/completions``.

Each reads its body (within ``gateway.max_body_bytes``) and hands it to the gateway with its
endpoint's adapter (``capture.exchange.Endpoint``, built in ``services.py``): routes, the response
cache, capture, redaction and pricing apply to all alike (``routing.gateway``). Adding an endpoint
to capture is its adapter in ``capture/``, its route here, and its line in ``services.py``.
The other operations on what these store (list, retrieve, update, delete) are in
``chat_completions.py`` and ``responses_api.py``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from distillery.api.deps import INGEST, ServicesDep, caller_of
from distillery.api.responses import gateway_response, read_json

router = APIRouter(dependencies=[INGEST])


@router.post("/v1/chat/completions", tags=["chat"])
async def create_chat_completion(request: Request, services: ServicesDep) -> Response:
    # no depth walk on the hot path: the provider refuses a body it cannot encode (400)
    body = await read_json(request, services.config.gateway.max_body_bytes, check_depth=False)
    return await gateway_response(services.gateway, services.chat, body, caller_of(request))


@router.post("/v1/responses", tags=["responses"])
async def create_response(request: Request, services: ServicesDep) -> Response:
    """Create a response (streamed as ``response.*`` events with ``stream: true``); stored unless
    ``store: false``; routed like a chat completion (``x-distillery-route``)."""
    body = await read_json(request, services.config.gateway.max_body_bytes)
    return await gateway_response(services.gateway, services.responses, body, caller_of(request))


@router.post("/v1/completions", tags=["completions"])
async def create_completion(request: Request, services: ServicesDep) -> Response:
    """The legacy text completions, proxied, routed and captured (``capture.legacy``)."""
    body = await read_json(request, services.config.gateway.max_body_bytes)
    return await gateway_response(
        services.gateway, services.legacy_completions, body, caller_of(request)
    )
