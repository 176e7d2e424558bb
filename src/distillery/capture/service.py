"""The capture hot path: call the provider that serves ``model``, record the exchange, answer.

With ``store: true`` (or ``gateway.store_by_default``) the request, response, usage, latency,
cost, status and error are recorded under the completion's id before the answer is sent.
``store`` and ``metadata`` are distillery's to act on and are not forwarded upstream.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from distillery import ids
from distillery.capture.streaming import StreamAccumulator
from distillery.capture.writer import CompletionWriter
from distillery.costs.prices import PriceTable
from distillery.errors import DistilleryError, InvalidRequestError
from distillery.providers.base import Provider
from distillery.providers.registry import ProviderRegistry
from distillery.settings import GatewayConfig
from distillery.store.records import NewCompletion
from distillery.wire.chat import validate_create_body

_NOT_FORWARDED = ("store", "metadata")


class CaptureService:
    def __init__(
        self,
        *,
        providers: ProviderRegistry,
        writer: CompletionWriter,
        gateway: GatewayConfig,
        prices: PriceTable,
    ) -> None:
        self.providers = providers
        self.writer = writer
        self.gateway = gateway
        self.prices = prices

    def _prepare(self, body: Any) -> tuple[dict[str, Any], bool, dict[str, str] | None]:
        body = validate_create_body(body)
        store = body.get("store")
        should_store = bool(store) if store is not None else self.gateway.store_by_default
        metadata = body.get("metadata")
        if metadata and not should_store and not self.gateway.allow_metadata_without_store:
            raise InvalidRequestError(
                "The 'metadata' parameter is only allowed when 'store' is enabled.",
                param="metadata",
            )
        upstream = {k: v for k, v in body.items() if k not in _NOT_FORWARDED}
        return upstream, should_store, metadata

    async def create(self, body: Any) -> dict[str, Any]:
        """Non-streaming completion."""
        upstream, should_store, metadata = self._prepare(body)
        provider = self.providers.route(upstream["model"])
        started = time.perf_counter()
        created_at = int(time.time())
        try:
            response = await provider.create(upstream)
        except DistilleryError as exc:
            if should_store:
                await self._record_failure(
                    upstream, provider, metadata, exc, created_at, started, False
                )
            raise
        if should_store:
            latency_ms = (time.perf_counter() - started) * 1000
            record = self._record(
                upstream, provider, metadata, response, created_at, latency_ms, False
            )
            stored_id = await self.writer.write(record)
            if stored_id != response.get("id"):
                response = {**response, "id": stored_id}
        return response

    async def stream(self, body: Any) -> AsyncIterator[bytes]:
        """Streaming completion, returned once the upstream has answered its first bytes.

        Errors before the first byte raise here (so the edge can answer a JSON error); the
        stream then passes the upstream's bytes through unchanged. When storing, the final
        event (``data: [DONE]``) is released only after the record is committed.
        """
        upstream, should_store, metadata = self._prepare(body)
        provider = self.providers.route(upstream["model"])
        started = time.perf_counter()
        created_at = int(time.time())
        source = provider.stream(upstream).__aiter__()
        try:
            first = await source.__anext__()
        except StopAsyncIteration:
            first = b""
        except DistilleryError as exc:
            if should_store:
                await self._record_failure(
                    upstream, provider, metadata, exc, created_at, started, True
                )
            raise
        return self._relay(
            first, source, upstream, provider, metadata, created_at, started, should_store
        )

    async def _relay(
        self,
        first: bytes,
        source: AsyncIterator[bytes],
        upstream: dict[str, Any],
        provider: Provider,
        metadata: dict[str, str] | None,
        created_at: int,
        started: float,
        should_store: bool,
    ) -> AsyncIterator[bytes]:
        if not should_store:
            yield first
            async for chunk in source:
                yield chunk
            return
        acc = StreamAccumulator()
        held = b""
        error: DistilleryError | None = None
        pending = [first]
        try:
            while True:
                chunk = pending.pop() if pending else await source.__anext__()
                acc.feed(chunk)
                if acc.done:  # hold the [DONE] event until the record is durable
                    held += chunk
                    continue
                yield chunk
        except StopAsyncIteration:
            pass
        except DistilleryError as exc:
            error = exc
        latency_ms = (time.perf_counter() - started) * 1000
        response = acc.completion()
        if error is not None or acc.error is not None:
            err = error.to_dict()["error"] if error is not None else acc.error
            record = self._record(
                upstream, provider, metadata, response, created_at, latency_ms, True, error=err
            )
        else:
            record = self._record(
                upstream, provider, metadata, response, created_at, latency_ms, True
            )
        await self.writer.write(record)
        if held:
            yield held
        if error is not None:
            raise error

    def _record(
        self,
        upstream: dict[str, Any],
        provider: Provider,
        metadata: dict[str, str] | None,
        response: dict[str, Any],
        created_at: int,
        latency_ms: float,
        stream: bool,
        *,
        error: dict[str, Any] | None = None,
    ) -> NewCompletion:
        usage = response.get("usage") or {}
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        upstream_id = response.get("id")
        completion_id = upstream_id if isinstance(upstream_id, str) and upstream_id else None
        if completion_id is None or len(completion_id) > 64:
            completion_id = ids.new_id(ids.CHAT_COMPLETION)
        model = upstream["model"]
        return NewCompletion(
            id=completion_id,
            created_at=created_at,
            model=model,
            provider=provider.name,
            status="failed" if error else "completed",
            stream=stream,
            request=upstream,
            response=response,
            error=error,
            metadata=metadata,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            latency_ms=latency_ms,
            cost_usd=self.prices.cost(model, prompt, completion, cached),
        )

    async def _record_failure(
        self,
        upstream: dict[str, Any],
        provider: Provider,
        metadata: dict[str, str] | None,
        exc: DistilleryError,
        created_at: int,
        started: float,
        stream: bool,
    ) -> None:
        record = NewCompletion(
            id=ids.new_id(ids.CHAT_COMPLETION),
            created_at=created_at,
            model=upstream["model"],
            provider=provider.name,
            status="failed",
            stream=stream,
            request=upstream,
            response=None,
            error={**exc.to_dict()["error"], "status": exc.status},
            metadata=metadata,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        await self.writer.write(record)
