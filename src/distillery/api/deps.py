"""FastAPI dependencies: services from ``app.state`` and API-key auth with scopes.

They are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, two
thread hops on every gateway request. Only a key-cache miss reads the database, on a thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import Depends, Request

from distillery.capture.writer import is_outage
from distillery.errors import AuthenticationError, PermissionDeniedError, ServiceUnavailableError
from distillery.security.keys import NOBODY, Caller, hash_key
from distillery.services import Services

_CACHE_TTL_S = 5.0
_OUTAGE_RETRY_S = 1.0


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def caller_of(request: Request) -> Caller:
    """The caller ``require`` recorded for ``request`` (``NOBODY`` when auth is off)."""
    found = getattr(request.state, "caller", None)
    return found if isinstance(found, Caller) else NOBODY


class KeyCache:
    """Recently checked keys (by hash), so auth costs no database read per request."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Caller | None]] = {}

    def forget(self, key_hash: str) -> None:
        """Drop a key (revoked in this process: ``KeysRepo.on_revoke``), so it stops at once."""
        self._entries.pop(key_hash, None)

    async def caller_of(self, services: Services, secret: str) -> Caller | None:
        """The key's caller (scope and id), or None for an unknown or revoked key."""
        digest = hash_key(secret)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and now - hit[0] < _CACHE_TTL_S:
            return hit[1]
        try:
            caller = await asyncio.to_thread(self._lookup, services, secret)
        except Exception as exc:
            if not is_outage(exc):
                raise
            if hit is None:
                raise ServiceUnavailableError(
                    "The database is unavailable and this API key was not checked recently."
                ) from None
            # The database is unreachable: a key seen before keeps its scope (checked again
            # every second, so a revocation takes effect as soon as the database is back).
            self._entries[digest] = (now - _CACHE_TTL_S + _OUTAGE_RETRY_S, hit[1])
            return hit[1]
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (now, caller)
        return caller

    @staticmethod
    def _lookup(services: Services, secret: str) -> Caller | None:
        if services.settings.api_key and secret == services.settings.api_key:
            return Caller(scope="admin", key_id="bootstrap")
        key = services.keys.authenticate(secret)
        return Caller(scope=key.scope, key_id=key.id) if key else None


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("api-key")


def require(scope: str):  # type: ignore[no-untyped-def]
    """Dependency: when auth is on, the key must have ``scope`` (``admin`` has every scope)."""

    async def check(request: Request) -> None:
        services: Services = request.app.state.services
        if not services.config.server.auth:
            return
        secret = _bearer(request)
        if not secret:
            raise AuthenticationError(
                "You didn't provide an API key. Provide it as 'Authorization: Bearer <key>'."
            )
        caller = await request.app.state.key_cache.caller_of(services, secret)
        if caller is None:
            raise AuthenticationError("Incorrect API key provided.")
        if caller.scope != "admin" and caller.scope != scope:
            raise PermissionDeniedError(
                f"This key's scope '{caller.scope}' does not allow this call."
            )
        request.state.caller = caller

    return Depends(check)


ADMIN = require("admin")
INGEST = require("ingest")
