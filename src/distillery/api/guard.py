"""The outermost ASGI layer: request ids, trusted hosts, cross-site requests, form body limits.

Plain ASGI (no ``BaseHTTPMiddleware``): on the gateway's path it costs one pass over the request
headers and one header appended to the response.

- Every response carries ``x-request-id`` (``req_`` and 32 hex digits, as OpenAI's).
- A ``Host`` the server does not trust is refused with a 400 (DNS rebinding).
- A browser request that changes state (any method but GET, HEAD, OPTIONS) to ``/v1`` from another
  origin (``Origin`` not this server, or ``Sec-Fetch-Site: cross-site``) is refused with a 403:
  it would spend the provider key, write training data or upload files. The dashboard's pages
  answer their own cross-site forms (``web.render``) with an HTML page.
- Outside ``/v1`` (dashboard forms), a body is cut off at ``form_limit`` bytes as it arrives: the
  client gets a 413 and the handler sees a disconnect. ``/v1`` limits its bodies where it reads
  them (``api.responses.read_json``, the upload route).
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distillery.api.errors import error_response
from distillery.security.origins import host_allowed, same_origin

FORM_BODY_LIMIT = 8 * 1024 * 1024
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# unique, not secret: a random prefix per process and a counter (no system call per request)
_ID_PREFIX = "req_" + secrets.token_hex(10)
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFF:012x}"


class RequestGuard:
    def __init__(
        self, app: ASGIApp, *, trusted_hosts: tuple[str, ...], form_limit: int = FORM_BODY_LIMIT
    ) -> None:
        self.app = app
        self.trusted_hosts = trusted_hosts
        self.form_limit = form_limit
        self._hosts: dict[str, bool] = {}  # Host header -> answered (a few distinct values)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id().encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        host: str | None = None
        origin: str | None = None
        fetch_site: bytes | None = None
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"sec-fetch-site":
                fetch_site = value
            elif name == b"content-length":
                length = value
        if not self._host_allowed(host):
            response = error_response(
                400,
                f"Invalid host header: {(host or '')[:100]!r} is not a trusted host.",
                code="invalid_host",
            )
            await response(scope, receive, send_with_id)
            return
        path: str = scope["path"]
        api = path.startswith("/v1/") or path == "/v1"
        if scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send_with_id)
            return
        if api and (
            fetch_site == b"cross-site"
            or (origin is not None and not same_origin(origin, host, self.trusted_hosts))
        ):
            response = error_response(
                403,
                "Cross-origin requests from browsers are refused.",
                code="cross_origin_request",
            )
            await response(scope, receive, send_with_id)
            return
        if api:
            await self.app(scope, receive, send_with_id)
            return
        if length is not None and length.isdigit() and int(length) > self.form_limit:
            await self._too_large(scope, receive, send_with_id)
            return
        await _LimitedBody(self, scope, receive, send_with_id).run()

    def _host_allowed(self, host: str | None) -> bool:
        if host is None:
            return True
        allowed = self._hosts.get(host)
        if allowed is None:
            allowed = host_allowed(host, self.trusted_hosts)
            if len(self._hosts) < 1024:
                self._hosts[host] = allowed
        return allowed

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, f"Request body exceeds the limit of {self.form_limit} bytes."
        )
        await response(scope, receive, send)


class _LimitedBody:
    """One request outside /v1 whose body is cut off at the guard's ``form_limit``."""

    def __init__(self, guard: RequestGuard, scope: Scope, receive: Receive, send: Send) -> None:
        self.guard, self.scope, self._receive, self._send = guard, scope, receive, send
        self.received = 0
        self.started = False
        self.refused = False

    async def run(self) -> None:
        await self.guard.app(self.scope, self.receive, self.send)

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.guard.form_limit:
                self.refused = True
                if not self.started:
                    self.started = True
                    await self.guard._too_large(self.scope, _no_body, self._send)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the 413 has been answered: the handler's own answer is dropped
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


async def _no_body() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}
