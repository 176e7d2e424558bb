"""The exact-match response cache: a repeat of a deterministic request answered from the store.

The key is the SHA-256 of the normalised request: every field that changes the answer (the model
that would answer, messages, sampling parameters, response format, tools, ...) and none that does
not (``user``, ``metadata``, ``stream``, ``store``), plus the route and its match when a route
answered. Only requests with ``temperature: 0`` or a ``seed`` are cached unless configured
otherwise. A hit calls no model: it is stored (provider ``cache``, cost 0) when the request asks
to be stored, and its avoided cost is counted by the entry's ``hits``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from typing import Any

import orjson

from distillery import ids
from distillery.capture.service import Prepared
from distillery.capture.writer import CompletionWriter
from distillery.store.records import NewCompletion
from distillery.store.routes import CachedResponse, RoutesRepo

UNCACHED_FIELDS = ("stream", "stream_options", "user", "store", "metadata", "service_tier")


def deterministic(upstream: Mapping[str, Any]) -> bool:
    return upstream.get("temperature") == 0 or upstream.get("seed") is not None


def cache_key(
    upstream: Mapping[str, Any], *, serving: str, scope: Mapping[str, Any] | None = None
) -> str:
    """The key of ``upstream`` answered by ``serving`` (``scope``: the route and its match)."""
    normal = {k: v for k, v in upstream.items() if k not in UNCACHED_FIELDS}
    normal["model"] = serving
    key = {"request": normal, "scope": scope}
    return hashlib.sha256(orjson.dumps(key, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ResponseCache:
    def __init__(self, repo: RoutesRepo, writer: CompletionWriter) -> None:
        self.repo = repo
        self.writer = writer

    async def lookup(
        self,
        key: str,
        prepared: Prepared,
        *,
        requested_model: str | None = None,
        route_id: str | None = None,
    ) -> tuple[dict[str, Any], CachedResponse] | None:
        """The cached answer under a fresh id (stored when the request is), or ``None``."""
        now = int(time.time())
        hit = await asyncio.to_thread(self.repo.cache_get, key, now)
        if hit is None:
            return None
        response = {**hit.response, "id": ids.new_id(ids.CHAT_COMPLETION), "created": now}
        if prepared.should_store:
            record = NewCompletion(
                id=response["id"],
                created_at=now,
                model=hit.model,
                provider="cache",
                status="completed",
                stream=bool(prepared.upstream.get("stream")),
                request=prepared.upstream,
                response=response,
                error=None,
                metadata=prepared.metadata,
                cost_usd=0.0,
                latency_ms=0.0,
                requested_model=requested_model,
                route_id=route_id,
            )
            response["id"] = await self.writer.write(record)
        return response, hit

    def counted(self, key: str) -> None:
        self.repo.cache_hit(key)

    def put(
        self,
        key: str,
        *,
        route_id: str | None,
        model: str,
        response: Mapping[str, Any],
        cost_usd: float | None,
        ttl_s: int,
    ) -> None:
        if not response.get("choices"):
            return
        self.repo.cache_put(
            key,
            route_id=route_id,
            model=model,
            response=dict(response),
            cost_usd=cost_usd,
            ttl_s=ttl_s,
        )
