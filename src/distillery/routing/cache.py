"""The exact-match response cache: a repeat of a deterministic request answered from the store.

The key is the SHA-256 of the normalised request: every field that changes the answer (the model
that would answer, messages, sampling parameters, response format, tools, ...) and none that does
not (``user``, ``metadata``, ``stream``, ``store``), plus the route and its match when a route
answered, and the endpoint (a chat answer never answers a Responses request). A request is keyed
by its chat view (``capture.exchange.Exchange.chat``), so a Responses request that continues a
conversation (``previous_response_id``) is keyed by the whole conversation. Only requests with
``temperature: 0`` or a ``seed`` are cached unless configured otherwise. A hit calls no model: it
is stored (provider ``cache``, cost 0) when the request asks to be stored, and its avoided cost is
counted by the entry's ``hits``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from typing import Any

import orjson

from distillery.store.routes import CachedResponse, RoutesRepo
from distillery.wire.chat import ANSWER_NEUTRAL_FIELDS, normalised_request

UNCACHED_FIELDS = ANSWER_NEUTRAL_FIELDS  # one normalisation: ``wire.chat.normalised_request``


def deterministic(upstream: Mapping[str, Any]) -> bool:
    return upstream.get("temperature") == 0 or upstream.get("seed") is not None


def cache_key(
    upstream: Mapping[str, Any], *, serving: str, scope: Mapping[str, Any] | None = None
) -> str:
    """The key of ``upstream`` answered by ``serving`` (``scope``: the route and its match)."""
    normal = normalised_request(upstream)
    normal["model"] = serving
    key = {"request": normal, "scope": scope}
    return hashlib.sha256(orjson.dumps(key, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ResponseCache:
    def __init__(self, repo: RoutesRepo) -> None:
        self.repo = repo

    async def lookup(self, key: str) -> CachedResponse | None:
        """The live entry under ``key`` (the endpoint gives it afresh: ``Endpoint.from_cache``)."""
        return await asyncio.to_thread(self.repo.cache_get, key, int(time.time()))

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
        self.repo.cache_put(
            key,
            route_id=route_id,
            model=model,
            response=dict(response),
            cost_usd=cost_usd,
            ttl_s=ttl_s,
        )
