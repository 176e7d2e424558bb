"""``POST /v1/chat/completions``: the chat endpoint's adapter (``capture.exchange.Endpoint``).

The request goes to the provider that serves ``model`` (or a route's student), unchanged but for
``store`` and ``metadata``, which are distillery's to act on. With ``store: true`` (or
``gateway.store_by_default``) the request, response, usage, latency, cost, status and error are
recorded under the completion's id before the answer is sent (a stream's ``data: [DONE]`` once
the record is committed). An answer the gateway cannot write back as JSON
(``capture.relayable``) is a 502, recorded as a failed exchange like an upstream 5xx.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from distillery import ids
from distillery.capture.exchange import AS_ASKED, Adapter, Answering, Call, Exchange
from distillery.capture.streaming import (
    IdGate,
    Relayed,
    SseAccumulator,
    StreamAccumulator,
    passthrough,
    relay,
)
from distillery.providers.base import Provider
from distillery.security.keys import NOBODY, Caller
from distillery.wire.chat import validate_create_body
from distillery.wire.sse import completion_events


def usable_id(answer: Mapping[str, Any], prefix: str) -> str:
    """The upstream's id for the record, or a fresh one when it has none the store can key on."""
    found = answer.get("id")
    return found if isinstance(found, str) and 0 < len(found) <= 64 else ids.new_id(prefix)


@dataclass(frozen=True)
class Answered:
    """An upstream's answer to record: the request it answers, the answer, the failure of a
    stream that had begun (``error``), and the id the stream showed its client (``claimed``)."""

    upstream: dict[str, Any]
    response: dict[str, Any]
    error: dict[str, Any] | None = None
    claimed: str | None = None


class Relaying(Adapter):
    """An endpoint whose answer is the upstream's own, relayed as it comes (chat and legacy
    completions): a stream passes through, assembled on the side to be recorded once it ends.
    A subclass says who serves a model, how to call it, and how its answer is recorded."""

    def _provider(self, model: str) -> Any:
        raise NotImplementedError

    async def _fetch(self, provider: Any, upstream: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _open(self, provider: Any, upstream: dict[str, Any]) -> AsyncIterator[bytes]:
        raise NotImplementedError

    def _accumulator(self) -> SseAccumulator:
        raise NotImplementedError

    def _request(self, upstream: dict[str, Any]) -> dict[str, Any]:
        """What the record keeps of the request (the chat shape every reader knows)."""
        return upstream

    async def _store(self, call: Call, answer: Answered) -> str | None:
        """Record the answer; the id to show, if one."""
        raise NotImplementedError

    def _call(self, exchange: Exchange, by: Answering, stream: bool) -> tuple[Any, Any, Call]:
        """What goes upstream (to ``by.model`` when given), who answers it, and its record's."""
        upstream = exchange.asked_of(by)
        provider = self._provider(upstream["model"])
        request = self._request(upstream)
        call = self.call_of(exchange, upstream, provider.name, by, stream=stream, request=request)
        return upstream, provider, call

    async def create(self, exchange: Exchange, by: Answering = AS_ASKED) -> dict[str, Any]:
        upstream, provider, call = self._call(exchange, by, False)
        response = await self.answered(call, self._fetch(provider, upstream))
        if exchange.should_store:
            stored_id = await self._store(call, Answered(upstream, response))
            if stored_id is not None and stored_id != response.get("id"):
                response = {**response, "id": stored_id}
        return response

    async def stream(self, exchange: Exchange, by: Answering = AS_ASKED) -> AsyncIterator[bytes]:
        upstream, provider, call = self._call(exchange, by, True)
        source = self._open(provider, upstream).__aiter__()
        first = await self.first(call, source)
        if not exchange.should_store and by.on_done is None:
            return passthrough(first, source)
        acc = self._accumulator()

        async def finish(ended: Relayed) -> None:
            answer = acc.completion()
            if ended.stored_id is not None:
                failure = ended.error.to_dict()["error"] if ended.error is not None else acc.error
                response = {**answer, "id": ended.stored_id}
                await self._store(call, Answered(upstream, response, failure, ended.stored_id))
            if by.on_done is not None and ended.error is None and acc.error is None:
                by.on_done(answer, ended.stored_id)

        gate = IdGate(self.recorder.writer) if exchange.should_store else None
        return relay(first, source, acc, gate, finish)

    def not_streamed(self, exchange: Exchange) -> Exchange:
        body = {k: v for k, v in exchange.body.items() if k != "stream_options"}
        body["stream"] = False
        own = exchange.chat is exchange.body  # a chat request is its own chat view
        chat = body if own else {**body, "messages": exchange.chat.get("messages")}
        return replace(exchange, body=body, chat=chat)

    def cacheable(self, answer: Mapping[str, Any]) -> bool:
        return bool(answer.get("choices"))

    async def from_cache(
        self, exchange: Exchange, answer: Mapping[str, Any], by: Answering
    ) -> dict[str, Any]:
        response = {**answer, "id": ids.new_id(self.id_prefix), "created": int(time.time())}
        if exchange.should_store:
            _, _, call = self._call(exchange, AS_ASKED, exchange.streamed)
            call = replace(call, model=by.model or call.model, tag=by.tag).cached()
            stored_id = await self._store(call, Answered(exchange.body, response))
            response["id"] = stored_id or response["id"]
        return response


class ChatCompletions(Relaying):
    name = "chat"

    async def prepare(self, body: Any, caller: Caller = NOBODY) -> Exchange:
        upstream, should_store, metadata = self.admit(validate_create_body(body))
        return Exchange("chat", upstream, upstream, should_store, metadata)

    def _provider(self, model: str) -> Provider:
        return self.providers.route(model)

    async def _fetch(self, provider: Provider, upstream: dict[str, Any]) -> dict[str, Any]:
        return await provider.create(upstream)

    def _open(self, provider: Provider, upstream: dict[str, Any]) -> AsyncIterator[bytes]:
        return provider.stream(upstream)

    def _accumulator(self) -> StreamAccumulator:
        return StreamAccumulator()

    async def _store(self, call: Call, answer: Answered) -> str | None:
        record_id = answer.claimed or usable_id(answer.response, ids.CHAT_COMPLETION)
        record = self.recorder.completed(call, answer.response, id=record_id, error=answer.error)
        return await self.recorder.write(record, claimed=answer.claimed is not None)

    def as_chat(self, answer: Mapping[str, Any]) -> Mapping[str, Any]:
        return answer

    def replay(self, exchange: Exchange, answer: Mapping[str, Any]) -> list[bytes]:
        return list(completion_events(answer, include_usage=include_usage(exchange)))


def include_usage(exchange: Exchange) -> bool:
    """Whether a stream of this request ends with a usage chunk (``stream_options``)."""
    options = exchange.body.get("stream_options")
    return bool(options.get("include_usage")) if isinstance(options, Mapping) else False
