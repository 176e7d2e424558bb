"""One exchange through the gateway, whichever endpoint it came in by.

Every endpoint that captures (chat completions, the Responses API, legacy completions) is an
``Endpoint``: an adapter that reads its own wire shape into an ``Exchange``, calls a provider for
it (streamed or not) and turns the answer into the stored record and back. What every exchange
shares is written here once:

- the store rule (``Adapter.admit``): ``store`` true, or the endpoint's default; ``metadata`` only
  when storing unless ``gateway.allow_metadata_without_store``;
- the record of an exchange and its price from the answer's usage (``Recorder.completed``), and
  the record of one that failed (``Recorder.failed``), both written by the capture writer (which
  redacts, spools and commits every endpoint's records alike).

Routing (``routing.gateway.RoutedGateway``) takes any ``Endpoint``: routes, the response cache,
shadow, canary and fallback are a stage of this path, not a wrapper around one endpoint. It reads
an exchange through its chat view (``Exchange.chat``: the chat completions request the exchange
amounts to), so a route matches, grades, samples and caches a Responses request as it does a chat
one.

Adding an endpoint: its wire module (``wire/``), its adapter in ``capture/`` (an ``Adapter``
implementing ``Endpoint``), and its HTTP route (``api/routes/``), which hands the adapter to the
gateway (``api.responses.gateway_response``) and is built in ``services.py``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from distillery import ids
from distillery.capture.relayable import check_relayable
from distillery.capture.writer import CompletionWriter
from distillery.costs.prices import PriceTable
from distillery.costs.usage import Usage
from distillery.errors import DistilleryError, InvalidRequestError
from distillery.providers.registry import ProviderRegistry
from distillery.security.keys import Caller
from distillery.settings import GatewayConfig
from distillery.store.records import NewCompletion

OnDone = Callable[[dict[str, Any], str | None], None]
"""Called once a stream has ended well: the answer it assembled and the id it is stored under."""


@dataclass(frozen=True)
class RouteTag:
    """Stored with an exchange a route answered: the route's id and the model the app asked for."""

    route_id: str
    requested_model: str


@dataclass(frozen=True)
class Answering:
    """Who answers an exchange and how: ``model`` (the one asked for unless given: a route's
    student), ``tag`` (stored with it when a route answered), ``on_done`` (a stream's)."""

    model: str | None = None
    tag: RouteTag | None = None
    on_done: OnDone | None = None


AS_ASKED = Answering()


@dataclass(frozen=True)
class Exchange:
    """A validated request, as every stage of the gateway reads it."""

    endpoint: str  # "chat", "responses", "completions"
    body: dict[str, Any]  # the request in the endpoint's shape (``store``, ``metadata`` removed)
    chat: dict[str, Any]  # the chat completions request it amounts to (routes and cache read it)
    should_store: bool
    metadata: dict[str, str] | None
    extra: object = None  # what only its endpoint reads, of the endpoint's own type

    @property
    def model(self) -> str:
        return str(self.body["model"])

    @property
    def streamed(self) -> bool:
        return self.body.get("stream") is True

    def asked_of(self, by: Answering) -> dict[str, Any]:
        """The request as the model that answers gets it (``by.model``, the one asked unless given)."""
        return self.body if by.model is None else {**self.body, "model": by.model}


class Endpoint(Protocol):
    """An endpoint's adapter: its wire shape in and out; every other stage is shared."""

    name: str

    async def prepare(self, body: Any, caller: Caller) -> Exchange:
        """The request validated (400s here, before any routing or provider call)."""
        ...

    async def create(self, exchange: Exchange, by: Answering = AS_ASKED) -> dict[str, Any]:
        """A non-streamed answer, recorded when the exchange is stored."""
        ...

    async def stream(self, exchange: Exchange, by: Answering = AS_ASKED) -> AsyncIterator[bytes]:
        """A streamed answer, returned once its first bytes are ready (errors before them raise);
        ``by.on_done`` gets the assembled answer and its stored id once it has ended well."""
        ...

    def not_streamed(self, exchange: Exchange) -> Exchange:
        """The same request asked for in one piece (to grade it whole, or to shadow it)."""
        ...

    def as_chat(self, answer: Mapping[str, Any]) -> Mapping[str, Any]:
        """An answer as the chat completion it amounts to (what graders read)."""
        ...

    def replay(self, exchange: Exchange, answer: Mapping[str, Any]) -> list[bytes]:
        """A whole answer as this endpoint's stream events (an answer graded before it is sent)."""
        ...

    def cacheable(self, answer: Mapping[str, Any]) -> bool:
        """Whether ``answer`` may answer a repeat of its request."""
        ...

    async def from_cache(
        self, exchange: Exchange, answer: Mapping[str, Any], by: Answering
    ) -> dict[str, Any]:
        """A cached answer (of model ``by.model``) given afresh to ``exchange`` under a new id,
        recorded when storing."""
        ...


@dataclass(frozen=True)
class Call:
    """One provider call for an exchange: what its record is made of besides the answer."""

    endpoint: str
    model: str
    provider: str
    request: dict[str, Any]  # as stored
    metadata: dict[str, str] | None
    stream: bool
    store: bool  # whether the exchange is recorded
    tag: RouteTag | None = None
    created_at: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.perf_counter)

    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def cached(self) -> Call:
        """The same call answered from the response cache (provider ``cache``, no latency)."""
        return replace(self, provider="cache", started=time.perf_counter())


class Recorder:
    """Builds and writes the records of exchanges: one builder and one price for every endpoint."""

    def __init__(self, writer: CompletionWriter, prices: PriceTable) -> None:
        self.writer = writer
        self.prices = prices

    def completed(
        self,
        call: Call,
        response: dict[str, Any],
        *,
        id: str,
        usage: Usage | None = None,
        error: dict[str, Any] | None = None,
    ) -> NewCompletion:
        """The record of an answer (``usage``: read from ``response`` unless given); an ``error``
        (a stream that failed after it began) makes it a failed one. A cached answer costs 0."""
        usage = Usage.of(response) if usage is None else usage
        free = call.provider == "cache"
        return NewCompletion(
            id=id,
            created_at=call.created_at,
            model=call.model,
            provider=call.provider,
            status="failed" if error else "completed",
            stream=call.stream,
            request=call.request,
            response=response,
            error=error,
            metadata=call.metadata,
            prompt_tokens=usage.prompt,
            completion_tokens=usage.completion,
            cached_tokens=usage.cached,
            latency_ms=0.0 if free else call.latency_ms(),
            cost_usd=0.0 if free else self.prices.price(call.model, usage),
            requested_model=call.tag.requested_model if call.tag else None,
            route_id=call.tag.route_id if call.tag else None,
            endpoint=None if call.endpoint == "chat" else call.endpoint,
        )

    def failed(self, call: Call, exc: DistilleryError, *, id: str) -> NewCompletion:
        """The record of an exchange that got no answer (its error and HTTP status kept)."""
        return NewCompletion(
            id=id,
            created_at=call.created_at,
            model=call.model,
            provider=call.provider,
            status="failed",
            stream=call.stream,
            request=call.request,
            response=None,
            error={**exc.to_dict()["error"], "status": exc.status},
            metadata=call.metadata,
            latency_ms=call.latency_ms(),
            requested_model=call.tag.requested_model if call.tag else None,
            route_id=call.tag.route_id if call.tag else None,
        )

    async def write(self, record: NewCompletion, *, claimed: bool = False) -> str:
        """Commit ``record`` (``CompletionWriter.write``); the id it was stored under."""
        return await self.writer.write(record, claimed=claimed)


class Adapter(Endpoint):
    """What every endpoint's adapter shares: who serves a model, the recorder, the store rule,
    and how a provider's answer (or its failure) is taken."""

    id_prefix = ids.CHAT_COMPLETION  # the ids this endpoint mints (failed exchanges, cache hits)

    def __init__(
        self, *, providers: ProviderRegistry, recorder: Recorder, gateway: GatewayConfig
    ) -> None:
        self.providers = providers
        self.recorder = recorder
        self.gateway = gateway

    def admit(
        self, body: Mapping[str, Any], *, store_default: bool | None = None
    ) -> tuple[dict[str, Any], bool, dict[str, str] | None]:
        """A validated request as it goes upstream (``store`` and ``metadata`` are distillery's
        to act on, not forwarded), whether to store it, and its metadata.

        The store rule: ``store``, else ``store_default`` (the endpoint's own), else the gateway's
        ``store_by_default``; ``metadata`` without storing is a 400 unless the gateway allows it.
        """
        store = body.get("store")
        if store is not None:
            should_store = bool(store)
        elif store_default is not None:
            should_store = store_default
        else:
            should_store = self.gateway.store_by_default
        metadata = body.get("metadata")
        if metadata and not should_store and not self.gateway.allow_metadata_without_store:
            raise InvalidRequestError(
                "The 'metadata' parameter is only allowed when 'store' is enabled.",
                param="metadata",
            )
        upstream = {k: v for k, v in body.items() if k not in ("store", "metadata")}
        return upstream, should_store, metadata

    def call_of(
        self,
        exchange: Exchange,
        upstream: Mapping[str, Any],
        provider: str,
        by: Answering,
        *,
        stream: bool,
        request: dict[str, Any] | None = None,
    ) -> Call:
        """The call of ``provider`` with ``upstream`` for ``exchange`` (``request``: what its
        record keeps, the upstream request unless given)."""
        return Call(
            endpoint=self.name,
            model=str(upstream["model"]),
            provider=provider,
            request=dict(upstream) if request is None else request,
            metadata=exchange.metadata,
            stream=stream,
            store=exchange.should_store,
            tag=by.tag,
        )

    async def answered(self, call: Call, answer: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """The provider's answer, once it is one the gateway can relay; a failure (the
        provider's, or the 502 of an answer it cannot write back) is recorded when storing."""
        try:
            response = await answer
            check_relayable(response)  # before anything is stored as delivered
        except DistilleryError as exc:
            await self.failed(call, exc)
            raise
        return response

    async def first(self, call: Call, source: AsyncIterator[bytes]) -> bytes:
        """A stream's first bytes (none for an empty stream); a failure before them is recorded
        when storing, and raised so that the edge answers a JSON error."""
        try:
            return await source.__anext__()
        except StopAsyncIteration:
            return b""
        except DistilleryError as exc:
            await self.failed(call, exc)
            raise

    async def failed(self, call: Call, exc: DistilleryError) -> None:
        """Record an exchange that got no answer (when it is stored)."""
        if call.store:
            record = self.recorder.failed(call, exc, id=ids.new_id(self.id_prefix))
            await self.recorder.write(record)
