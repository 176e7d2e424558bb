"""The one place exceptions become OpenAI error JSON. Never an HTML page or a traceback."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from distillery.errors import DistilleryError

log = logging.getLogger("distillery.api")

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_response(
    status: int,
    message: str,
    *,
    type: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {
        "error": {
            "message": message,
            "type": type or _STATUS_TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def from_exception(exc: DistilleryError) -> Response:
    """The error's own envelope (``to_dict``: a subclass may add fields, e.g. a gate's numbers)."""
    return Response(
        orjson.dumps(exc.to_dict()),
        status_code=exc.status,
        media_type="application/json",
        headers=exc.headers,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(DistilleryError)
    async def _distillery(_: Request, exc: DistilleryError) -> Response:
        return from_exception(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404:
            message = "Not found."
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        return error_response(
            400,
            f"Invalid value for '{param}': {first.get('msg', 'invalid')}",
            param=param,
            code="invalid_value",
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "The server had an error while processing your request.")
