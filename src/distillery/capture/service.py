"""The capture hot path: call the provider that serves ``model``, record the exchange, answer.

With ``store: true`` (or ``gateway.store_by_default``) the request, response, usage, latency,
cost, status and error are recorded under the completion's id before the answer is sent.
``store`` and ``metadata`` are distillery's to act on and are not forwarded upstream.
An answer the gateway cannot write back as JSON (``capture.relayable``) is a 502, recorded as a
failed exchange like an upstream 5xx.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

from distillery import ids
from distillery.capture.relayable import (
    check_relayable,
    close_stream,
    error_event,
    unrelayable,
)
from distillery.capture.storable import token_count
from distillery.capture.streaming import IdGate, StreamAccumulator
from distillery.capture.writer import CompletionWriter
from distillery.costs.prices import PriceTable
from distillery.errors import DistilleryError, InvalidRequestError
from distillery.providers.base import Provider
from distillery.providers.registry import ProviderRegistry
from distillery.settings import GatewayConfig
from distillery.store.records import NewCompletion
from distillery.wire.chat import validate_create_body
from distillery.wire.encoding import UnencodableError

_NOT_FORWARDED = ("store", "metadata")


@dataclass(frozen=True)
class RouteTag:
    """Stored with a completion a route answered: its id and the model the app asked for."""

    route_id: str
    requested_model: str


@dataclass(frozen=True)
class Prepared:
    """A validated create request: the upstream body, whether to store it, its metadata."""

    upstream: dict[str, Any]
    should_store: bool
    metadata: dict[str, str] | None

    @property
    def model(self) -> str:
        return str(self.upstream["model"])

    def for_model(self, model: str | None) -> tuple[dict[str, Any], bool, dict[str, str] | None]:
        upstream = self.upstream if model is None else {**self.upstream, "model": model}
        return upstream, self.should_store, self.metadata


@dataclass(frozen=True)
class _Relay:
    upstream: dict[str, Any]
    provider: Provider
    metadata: dict[str, str] | None
    created_at: int
    started: float
    tag: RouteTag | None
    on_done: Callable[[dict[str, Any], str | None], None] | None


async def _passthrough(first: bytes, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in source:
        yield chunk


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

    def prepare(self, body: Any) -> Prepared:
        """Validate a create body: what goes upstream, whether to store, the metadata."""
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
        return Prepared(upstream, should_store, metadata)

    async def create(self, body: Any) -> dict[str, Any]:
        """Non-streaming completion."""
        return await self.create_prepared(self.prepare(body))

    async def create_prepared(
        self, prepared: Prepared, *, model: str | None = None, tag: RouteTag | None = None
    ) -> dict[str, Any]:
        """Non-streaming completion of a prepared request, answered by ``model`` when given
        (a route's student) and stored with ``tag``."""
        upstream, should_store, metadata = prepared.for_model(model)
        provider = self.providers.route(upstream["model"])
        started = time.perf_counter()
        created_at = int(time.time())
        try:
            response = await provider.create(upstream)
            check_relayable(response)  # before anything is stored as delivered
        except DistilleryError as exc:
            if should_store:
                await self._record_failure(
                    upstream, provider, metadata, exc, created_at, started, False, tag
                )
            raise
        if should_store:
            latency_ms = (time.perf_counter() - started) * 1000
            record = self._record(
                upstream, provider, metadata, response, created_at, latency_ms, False, tag=tag
            )
            stored_id = await self.writer.write(record)
            if stored_id != response.get("id"):
                response = {**response, "id": stored_id}
        return response

    async def stream(self, body: Any) -> AsyncIterator[bytes]:
        """Streaming completion (see ``stream_prepared``)."""
        return await self.stream_prepared(self.prepare(body))

    async def stream_prepared(
        self,
        prepared: Prepared,
        *,
        model: str | None = None,
        tag: RouteTag | None = None,
        on_done: Callable[[dict[str, Any], str | None], None] | None = None,
    ) -> AsyncIterator[bytes]:
        """Streaming completion, returned once the upstream has answered its first bytes.

        Errors before the first byte raise here (so the edge can answer a JSON error); the
        stream then passes the upstream's bytes through unchanged. When storing, the final
        event (``data: [DONE]``) is released only after the record is committed. ``on_done``
        receives the assembled completion and its stored id once the stream has ended. A stream
        whose events must be rewritten (``IdGate``) but cannot be written back ends with an
        error event (a 502's) instead of ``[DONE]``, and is stored as failed.
        """
        upstream, should_store, metadata = prepared.for_model(model)
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
                    upstream, provider, metadata, exc, created_at, started, True, tag
                )
            raise
        relay = _Relay(upstream, provider, metadata, created_at, started, tag, on_done)
        if not should_store and on_done is None:
            return _passthrough(first, source)
        return self._relay(first, source, relay, should_store)

    async def _relay(
        self, first: bytes, source: AsyncIterator[bytes], relay: _Relay, should_store: bool
    ) -> AsyncIterator[bytes]:
        acc = StreamAccumulator()
        gate = IdGate(self.writer) if should_store else None
        held = b""
        error: DistilleryError | None = None
        cut: DistilleryError | None = None  # an event the gateway could not write back
        pending = [first]
        try:
            while True:
                chunk = pending.pop() if pending else await source.__anext__()
                acc.feed(chunk)
                if gate is not None:
                    chunk = await gate.through(chunk, acc)
                if acc.done and gate is not None:  # hold [DONE] until the record is durable
                    held += chunk
                elif chunk:
                    yield chunk
        except StopAsyncIteration:
            pass
        except DistilleryError as exc:
            error = exc
        except UnencodableError as exc:
            error = cut = unrelayable(exc)
            await close_stream(source)
        completion = acc.completion()
        stored_id: str | None = None
        if gate is not None:
            held = await gate.finish(held)
            latency_ms = (time.perf_counter() - relay.started) * 1000
            err = error.to_dict()["error"] if error is not None else acc.error
            record = self._record(
                relay.upstream,
                relay.provider,
                relay.metadata,
                completion,
                relay.created_at,
                latency_ms,
                True,
                error=err,
                tag=relay.tag,
            )
            if record.response is not None:
                record = replace(record, response={**record.response, "id": gate.id})
            stored_id = await self.writer.write(replace(record, id=gate.id), claimed=True)
        if relay.on_done is not None and error is None and acc.error is None:
            relay.on_done(completion, stored_id)
        if cut is not None:  # what is held (the rest, [DONE]) was not rewritten: not sent
            yield error_event(cut)
            return
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
        tag: RouteTag | None = None,
    ) -> NewCompletion:
        # a usage (or its details) that is not an object is kept as sent, but counts nothing
        usage = response.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        details = usage.get("prompt_tokens_details")
        details = details if isinstance(details, dict) else {}
        # counts the integer columns cannot hold (an upstream's 2**63) are not counts: None
        prompt = token_count(usage.get("prompt_tokens"))
        completion = token_count(usage.get("completion_tokens"))
        cached = token_count(details.get("cached_tokens")) or 0
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
            requested_model=tag.requested_model if tag else None,
            route_id=tag.route_id if tag else None,
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
        tag: RouteTag | None = None,
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
            requested_model=tag.requested_model if tag else None,
            route_id=tag.route_id if tag else None,
        )
        await self.writer.write(record)
