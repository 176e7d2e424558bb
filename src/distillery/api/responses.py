"""JSON in and out of the routes: orjson bodies, OpenAI list envelopes, bounded body reads."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from distillery.errors import InvalidRequestError, PayloadTooLargeError


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def list_response(data: list[dict[str, Any]], has_more: bool) -> Response:
    """OpenAI's cursor list: ``{"object": "list", "data", "first_id", "last_id", "has_more"}``."""
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )


async def read_json(request: Request, limit: int) -> Any:
    """The parsed body; 413 beyond ``limit`` bytes, 400 for invalid JSON."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLargeError(f"Request body exceeds the limit of {limit} bytes.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"We could not parse the JSON body of your request: {exc}", code="invalid_json"
        ) from exc


async def read_object(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body (an empty body is ``{}``)."""
    if not await request.body():
        return {}
    body = await read_json(request, limit)
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_type")
    return body
