"""JSON in and out of the routes: orjson bodies, OpenAI list envelopes, bounded body reads."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from distillery.capture.exchange import Endpoint
from distillery.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from distillery.routing.gateway import RoutedGateway
from distillery.security.keys import Caller
from distillery.wire.base import list_object
from distillery.wire.encoding import MAX_JSON_DEPTH, too_deep


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def list_response(data: list[dict[str, Any]], has_more: bool) -> Response:
    """OpenAI's cursor list: ``{"object": "list", "data", "first_id", "last_id", "has_more"}``."""
    return json_response(list_object(data, has_more))


def metadata_filter(request: Request) -> dict[str, str]:
    """The ``metadata[KEY]=VALUE`` query parameters of a list request, as a dict.

    A malformed filter (``metadata=x``, ``metadata[]``, ``metadata[k``) is a 400: it must not
    quietly list everything.
    """
    found: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key != "metadata" and not key.startswith("metadata["):
            continue
        if not key.endswith("]") or len(key) < len("metadata[x]"):
            raise InvalidRequestError(
                f"Invalid query parameter '{key}': filter by metadata as metadata[KEY]=VALUE.",
                param=key,
                code="invalid_value",
            )
        found[key[9:-1]] = value
    return found


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, cut off with a 413 as soon as more than ``limit`` bytes have arrived (a
    declared Content-Length is checked first; a chunked body is counted as it streams in)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
                chunks.append(chunk)
    except ClientDisconnect:  # nobody to answer: no traceback in the log either
        raise InvalidRequestError("The client disconnected before its body was read.") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _parse(request: Request, raw: bytes, check_depth: bool) -> Any:
    if raw and not _is_json(request.headers.get("content-type")):
        raise UnsupportedMediaTypeError(
            "Send the request body as JSON with 'Content-Type: application/json'."
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"We could not parse the JSON body of your request: {exc}", code="invalid_json"
        ) from exc
    if check_depth and too_deep(body, MAX_JSON_DEPTH):
        raise InvalidRequestError(
            f"The JSON body of your request is nested more than {MAX_JSON_DEPTH} levels deep.",
            code="invalid_json",
        )
    return body


async def read_json(request: Request, limit: int, *, check_depth: bool = True) -> Any:
    """The parsed body: 413 beyond ``limit`` bytes, 415 unless the content type is JSON (a page
    on another site can POST ``text/plain``), 400 for invalid JSON or JSON nested deeper than
    ``MAX_JSON_DEPTH``. The gateway skips the depth walk (``check_depth=False``): its provider
    refuses what it cannot encode, at no cost to the usual request."""
    return _parse(request, await read_body(request, limit), check_depth)


async def read_object(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body (an empty body is ``{}``)."""
    raw = await read_body(request, limit)
    if not raw:
        return {}
    body = _parse(request, raw, True)
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_type")
    return body


async def gateway_response(
    gateway: RoutedGateway, endpoint: Endpoint, body: Any, caller: Caller
) -> Response:
    """A capturing endpoint's answer through the gateway (routes, cache, capture): JSON, or SSE
    events for ``stream: true``, with the headers that say who answered."""
    if isinstance(body, dict) and body.get("stream") is True:
        stream = await gateway.stream(endpoint, body, caller)
        return StreamingResponse(
            stream.events,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **stream.headers},
        )
    answer = await gateway.create(endpoint, body, caller)
    response = json_response(answer.body)
    response.headers.update(answer.headers)
    return response
