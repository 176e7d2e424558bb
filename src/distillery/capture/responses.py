"""OpenAI's Responses API (``POST /v1/responses``, ``GET``/``DELETE /v1/responses/{id}``,
``GET /v1/responses/{id}/input_items``), proxied or answered by local models, and captured.

- A model of an ``openai``/``azure`` provider: the request is forwarded to the upstream's
  ``/v1/responses`` with the conversation in ``input`` and ``store: false`` (distillery keeps the
  conversation and the record; ``store``, ``metadata`` and ``previous_response_id`` are not
  forwarded), and the upstream's Response (or its SSE events, unchanged) comes back.
- Any other model (local students, ``ft:`` fine-tunes, a vLLM server): the request is translated
  to a chat completion (``distillery.wire.responses``), answered by the provider that serves it,
  and the answer translated back into a Response (streamed as OpenAI's ``response.*`` events).
  What a chat model cannot do (hosted tools, images, files, reasoning) is a 400 naming it.
- ``store`` defaults to true, as OpenAI's does. A stored response is one stored completion (the
  chat exchange it amounts to, with the Responses request under ``request.responses`` and the
  Response object under ``response.response``), written by the capture writer like any other and
  marked in the ``responses`` table: it is listed, filtered by metadata, annotated, evaluated and
  put into datasets as a chat completion is. A stream's final event (``response.completed``) is
  released once the record is committed.
- ``previous_response_id``: the stored response's conversation (its context, input and output)
  comes before this input; its ``instructions`` do not carry over (as OpenAI's). An id that is not
  a stored response (unknown, deleted, a chat completion's) is a 400 ``previous_response_not_found``
  naming ``previous_response_id``.
- An answer the gateway cannot write back as JSON (``capture.relayable``: nested deeper than orjson
  writes) is a 502 naming the problem, recorded as a failed exchange (not a stored response); a
  stream already under way ends with ``response.failed`` carrying that error instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from distillery import ids
from distillery.capture.exchange import (
    AS_ASKED,
    Adapter,
    Answering,
    Call,
    Exchange,
    OnDone,
    Recorder,
)
from distillery.capture.relayable import close_stream, unrelayable
from distillery.capture.streaming import StreamAccumulator
from distillery.costs.usage import Usage
from distillery.errors import DistilleryError, InvalidRequestError, NotFoundError
from distillery.providers.base import Provider, ResponsesProvider
from distillery.providers.registry import ProviderRegistry
from distillery.security.keys import NOBODY, Caller
from distillery.settings import GatewayConfig
from distillery.store.completions import CompletionsRepo
from distillery.store.records import StoredCompletion
from distillery.wire import responses as wire
from distillery.wire.encoding import UnencodableError, dumps


def _may_read(caller: Caller, stored: StoredCompletion) -> bool:
    """A response stored by another key is, to a key that may not read every key's data, one
    that does not exist (its existence is not revealed)."""
    if caller.sees_everything:
        return True
    responses = stored.request.get("responses")
    owner = responses.get("key_id") if isinstance(responses, Mapping) else None
    return owner == caller.key_id


@dataclass(frozen=True)
class _Target:
    """Who answers a Responses request, and the chat completions request it amounts to for them
    (strict for a chat model: what it cannot do is a 400)."""

    provider: Provider
    proxy: ResponsesProvider | None  # the upstream Responses API, when there is one
    chat: dict[str, Any]


@dataclass(frozen=True)
class _Conversation:
    """What a Responses exchange carries beyond its chat view (``Exchange.extra``): its input as
    items, the previous response's conversation, who asked, and who answers it as asked."""

    items: list[dict[str, Any]]
    context: list[dict[str, Any]]
    key_id: str | None  # the API key that asked (its stored responses are its own)
    target: _Target


def _conversation(exchange: Exchange) -> _Conversation:
    assert isinstance(exchange.extra, _Conversation)
    return exchange.extra


@dataclass(frozen=True)
class _Call:
    """One provider call for a Responses exchange."""

    exchange: Exchange
    body: dict[str, Any]  # the Responses request, naming the model that answers
    target: _Target
    record: Call  # what its stored record is made of

    @property
    def model(self) -> str:
        return str(self.body["model"])

    @property
    def should_store(self) -> bool:
        return self.exchange.should_store

    @property
    def metadata(self) -> dict[str, str] | None:
        return self.exchange.metadata

    @property
    def context(self) -> list[dict[str, Any]]:
        return _conversation(self.exchange).context

    @property
    def created_at(self) -> int:
        return self.record.created_at


def _stored_request(
    exchange: Exchange, body: Mapping[str, Any], chat: Mapping[str, Any]
) -> dict[str, Any]:
    """The record's request: the chat request, with the Responses request under ``responses``
    (``input`` as items, ``context`` the previous conversation, ``key_id`` who asked)."""
    responses = dict(body)
    conversation = _conversation(exchange)
    responses["input"] = conversation.items
    responses["context"] = conversation.context
    if conversation.key_id is not None:
        responses["key_id"] = conversation.key_id
    return {**chat, "responses": responses}


@dataclass
class _Shown:
    """What a relayed stream has shown its client: the id on its lifecycle events (``fallback_id``
    where the upstream's is unusable), the last sequence number, its final Response."""

    fallback_id: str
    id: str
    sequence: int = -1
    final: dict[str, Any] | None = None


def _renamed(exc: DistilleryError) -> DistilleryError:
    """A chat request's error as the Responses request would name it (``messages`` -> ``input``)."""
    if isinstance(exc, InvalidRequestError) and exc.param:
        exc.param = wire.responses_param(exc.param)
        exc.message = exc.message.replace("'messages'", "'input'").replace(
            "'response_format'", "'text.format'"
        )
    return exc


class ResponsesService(Adapter):
    name = "responses"
    id_prefix = wire.RESPONSE_PREFIX

    def __init__(
        self,
        *,
        providers: ProviderRegistry,
        recorder: Recorder,
        completions: CompletionsRepo,
        gateway: GatewayConfig,
    ) -> None:
        super().__init__(providers=providers, recorder=recorder, gateway=gateway)
        self.completions = completions  # the stored responses (and the conversations they hold)

    # -- stored responses ------------------------------------------------------------------------

    def stored(self, response_id: str) -> StoredCompletion:
        found = self.completions.get_response(response_id)
        if found is None:
            raise NotFoundError(f"Response with id '{response_id}' not found.", param="response_id")
        return found

    def get(self, response_id: str) -> dict[str, Any]:
        """The stored Response object (its metadata as it is now)."""
        return response_of(self.stored(response_id))

    def delete(self, response_id: str) -> dict[str, Any]:
        self.stored(response_id)
        self.completions.delete(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    def input_items(self, response_id: str) -> list[dict[str, Any]]:
        """The input items of a stored response, in the order they were sent."""
        responses = self.stored(response_id).request.get("responses")
        items = responses.get("input") if isinstance(responses, Mapping) else None
        return [dict(i) for i in items or [] if isinstance(i, Mapping)]

    def _context(self, previous_id: str, caller: Caller) -> list[dict[str, Any]]:
        found = self.completions.get_response(previous_id)
        if found is None or found.status != "completed" or not _may_read(caller, found):
            raise InvalidRequestError(
                f"Previous response with id '{previous_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        responses = found.request.get("responses")
        responses = responses if isinstance(responses, Mapping) else {}
        output = response_of(found).get("output") or []
        return [
            dict(item)
            for item in [
                *(responses.get("context") or []),
                *(responses.get("input") or []),
                *output,
            ]
            if isinstance(item, Mapping)
        ]

    # -- the endpoint ------------------------------------------------------------------------------

    async def prepare(self, body: Any, caller: Caller = NOBODY) -> Exchange:
        body = wire.validate_create(body)
        request, should_store, metadata = self.admit(body, store_default=True)  # as OpenAI's
        items = wire.input_items(body.get("input") or [])
        previous = body.get("previous_response_id")
        # a primary-key read, on a thread: the event loop never waits on the database
        context = await asyncio.to_thread(self._context, previous, caller) if previous else []
        target = self._target(request, items, context)
        extra = _Conversation(items, context, caller.key_id, target)
        return Exchange("responses", request, target.chat, should_store, metadata, extra)

    def _target(
        self, body: Mapping[str, Any], items: list[dict[str, Any]], context: list[dict[str, Any]]
    ) -> _Target:
        provider = self.providers.route_responses(body["model"])
        proxy = (
            provider if isinstance(provider, ResponsesProvider) and provider.responses_api else None
        )
        strict = proxy is None
        messages = [
            *wire.items_messages(context, instructions=body.get("instructions")),
            *wire.items_messages(items, strict=strict),
        ]
        assert isinstance(provider, Provider)
        return _Target(provider, proxy, wire.chat_body(body, messages, strict=strict))

    def _call(self, exchange: Exchange, by: Answering, stream: bool) -> _Call:
        """The call of ``by.model`` (the one asked for unless given) for ``exchange``."""
        body = exchange.asked_of(by)
        conversation = _conversation(exchange)
        target = conversation.target
        if body["model"] != exchange.model:
            try:
                target = self._target(body, conversation.items, conversation.context)
            except DistilleryError as exc:
                raise _renamed(exc) from None
        request = _stored_request(exchange, body, target.chat)
        record = self.call_of(
            exchange, body, target.provider.name, by, stream=stream, request=request
        )
        return _Call(exchange, body, target, record)

    async def create(self, exchange: Exchange, by: Answering = AS_ASKED) -> dict[str, Any]:
        """A non-streamed response: the ``Response`` object."""
        call = self._call(exchange, by, False)
        response = await self.answered(call.record, self._answer(call))
        if call.should_store:
            response = await self._store(call, response)
        return response

    async def _answer(self, call: _Call) -> dict[str, Any]:
        """The Response of the upstream's Responses API, or the chat answer translated."""
        if call.target.proxy is not None:
            forward = wire.forwarded(call.body, call.context)
            return self._patched(call, await call.target.proxy.responses(forward))
        try:
            completion = await call.target.provider.create(call.target.chat)
        except DistilleryError as exc:
            raise _renamed(exc) from None
        return wire.response_from_chat(
            completion,
            call.body,
            response_id=ids.new_id(wire.RESPONSE_PREFIX),
            created_at=call.created_at,
            store=call.should_store,
            metadata=call.metadata,
        )

    def not_streamed(self, exchange: Exchange) -> Exchange:
        chat = {k: v for k, v in exchange.chat.items() if k != "stream_options"}
        return replace(
            exchange, body={**exchange.body, "stream": False}, chat={**chat, "stream": False}
        )

    def as_chat(self, answer: Mapping[str, Any]) -> Mapping[str, Any]:
        return wire.chat_from_response(answer)

    def replay(self, exchange: Exchange, answer: Mapping[str, Any]) -> list[bytes]:
        return wire.replay_events(answer)

    def cacheable(self, answer: Mapping[str, Any]) -> bool:
        return answer.get("status") == "completed" and bool(answer.get("output"))

    async def from_cache(
        self, exchange: Exchange, answer: Mapping[str, Any], by: Answering
    ) -> dict[str, Any]:
        call = self._call(exchange, replace(by, model=None), exchange.streamed)
        call = replace(call, record=replace(call.record, model=by.model or call.model).cached())
        response = {**self._patched(call, {**answer, "id": None}), "created_at": call.created_at}
        if call.should_store:
            response = await self._store(call, response)
        return response

    def _patched(
        self, call: _Call, upstream: Mapping[str, Any], fallback_id: str | None = None
    ) -> dict[str, Any]:
        """The upstream's Response as the client asked for it (store, metadata, previous id)."""
        found = upstream.get("id")
        usable = isinstance(found, str) and 0 < len(found) <= 64
        return {
            **upstream,
            "id": found if usable else fallback_id or ids.new_id(wire.RESPONSE_PREFIX),
            "store": call.should_store,
            "metadata": dict(call.metadata or {}),
            "previous_response_id": call.body.get("previous_response_id"),
        }

    async def _store(self, call: _Call, response: dict[str, Any]) -> dict[str, Any]:
        """Commit the exchange (a stored response); the response under the id it was stored as."""
        error = None
        if response.get("status") == "failed":
            found = response.get("error")
            error = found if isinstance(found, dict) else {"message": "The response failed."}
        record = self.recorder.completed(
            call.record,
            wire.chat_from_response(response),
            id=str(response["id"]),
            usage=Usage.of(response),
            error=error,
        )
        stored_id = await self.recorder.write(record)
        return response if stored_id == response["id"] else {**response, "id": stored_id}

    # -- stream ----------------------------------------------------------------------------------

    async def stream(self, exchange: Exchange, by: Answering = AS_ASKED) -> AsyncIterator[bytes]:
        """A streamed response, returned once the first bytes are ready (errors before them
        raise, so the edge answers a JSON error)."""
        call = self._call(exchange, by, True)
        proxy = call.target.proxy
        if proxy is not None:
            forward = {**wire.forwarded(call.body, call.context), "stream": True}
            source = proxy.responses_stream(forward).__aiter__()
        else:
            chat = {**call.target.chat, "stream": True, "stream_options": {"include_usage": True}}
            source = call.target.provider.stream(chat).__aiter__()
        try:
            first = await self.first(call.record, source)
        except DistilleryError as exc:
            raise _renamed(exc) if proxy is None else exc from None
        if proxy is not None:
            return self._relay(call, first, source, by.on_done)
        return self._translate(call, first, source, by.on_done)

    async def _relay(
        self, call: _Call, first: bytes, source: AsyncIterator[bytes], on_done: OnDone | None
    ) -> AsyncIterator[bytes]:
        """The upstream's events as they come, the Response of its lifecycle events (created,
        in_progress, completed...) as on a non-streamed answer (store, metadata, previous id);
        the final one held until the record is stored. A lifecycle event that cannot be written
        back ends the stream with ``response.failed`` (a 502's error), recorded as failed."""
        fallback_id = ids.new_id(wire.RESPONSE_PREFIX)
        shown = _Shown(fallback_id, fallback_id)
        buffer = b""
        held: list[bytes] = []
        error: DistilleryError | None = None
        cut: DistilleryError | None = None  # an event the gateway could not write back
        out: list[bytes] = []
        pending = [first]
        try:
            while True:
                chunk = pending.pop() if pending else await source.__anext__()
                events, buffer = wire.sse_split(buffer + chunk)
                out = []
                for event in events:
                    event = self._relayed(call, event, shown)
                    if call.should_store and (held or shown.final is not None):
                        held.append(event)
                    else:
                        out.append(event)
                if out:
                    yield b"".join(out)
        except StopAsyncIteration:
            pass
        except DistilleryError as exc:
            error = exc
        except UnencodableError as exc:
            error = cut = unrelayable(exc)
            await close_stream(source)
        if buffer:
            held.append(buffer)
        await self._settle(call, shown.final if error is None else None, error, on_done)
        if cut is not None:  # the events before the one that failed, then the failure
            failed = self._failed(call, shown.id, cut)
            number = shown.sequence + 1
            yield b"".join(out) + wire.sse_event(
                {"type": "response.failed", "sequence_number": number, "response": failed}
            )
            return
        if held:
            yield b"".join(held)
        if error is not None:
            raise error

    async def _settle(
        self,
        call: _Call,
        final: dict[str, Any] | None,
        error: DistilleryError | None,
        on_done: OnDone | None,
    ) -> None:
        """Record a relayed stream once it has ended (its final Response, or its failure)."""
        stored_id = None
        if call.should_store:
            if final is not None:
                stored_id = (await self._store(call, final))["id"]
            else:
                ended = DistilleryError("The upstream's stream ended without a response.")
                await self.failed(call.record, error or ended)
        if on_done is not None and final is not None and final.get("status") != "failed":
            on_done(final, stored_id)

    def _relayed(self, call: _Call, event: bytes, shown: _Shown) -> bytes:
        """One upstream event as the client gets it: a lifecycle event's Response patched (as
        on a non-streamed answer; ``UnencodableError`` when it cannot be written back), what it
        showed noted in ``shown``."""
        payload = wire.sse_payload(event)
        if payload is None:
            return event
        found = payload.get("response")
        if isinstance(found, Mapping):
            patched = self._patched(call, found, shown.fallback_id)
            event = wire.sse_event({**payload, "response": patched})
            shown.id = str(patched["id"])
            if payload.get("type") in wire.TERMINAL_EVENTS:
                shown.final = patched
        number = payload.get("sequence_number")
        if isinstance(number, int) and not isinstance(number, bool):
            shown.sequence = max(shown.sequence, number)
        return event

    def _failed(self, call: _Call, response_id: str, exc: DistilleryError) -> dict[str, Any]:
        """The Response of a stream that failed with ``exc`` (status ``failed``, no output)."""
        return self._skeleton(
            call,
            response_id,
            "failed",
            error={"code": exc.code or "server_error", "message": exc.message},
        )

    def _skeleton(self, call: _Call, response_id: str, status: str, **extra: Any) -> dict[str, Any]:
        """A Response with no output yet (a stream's first events, or one that failed)."""
        return wire.response_object(
            call.body,
            response_id=response_id,
            created_at=call.created_at,
            model=call.model,
            status=status,
            output=[],
            usage=None,
            store=call.should_store,
            metadata=call.metadata,
            **extra,
        )

    async def _translate(
        self, call: _Call, first: bytes, source: AsyncIterator[bytes], on_done: OnDone | None
    ) -> AsyncIterator[bytes]:
        """A chat completion stream as the Responses API's events."""
        response_id = ids.new_id(wire.RESPONSE_PREFIX)
        events = wire.ResponseEvents()
        begun = self._skeleton(call, response_id, "in_progress")
        yield events.event("response.created", response=begun) + events.event(
            "response.in_progress", response=begun
        )
        acc = StreamAccumulator()
        buffer = b""
        items = _OpenItems(response_id, events)
        error: DistilleryError | None = None
        mark = events.sequence  # events of a chunk that cannot be written back are not sent
        pending = [first]
        try:
            while True:
                chunk = pending.pop() if pending else await source.__anext__()
                acc.feed(chunk)
                raw, buffer = wire.sse_split(buffer + chunk)
                mark = events.sequence
                out = [e for event in raw for e in items.feed(wire.sse_payload(event))]
                if out:
                    yield b"".join(out)
        except StopAsyncIteration:
            pass
        except DistilleryError as exc:
            error = _renamed(exc)
        except UnencodableError as exc:
            events.sequence = mark
            error = unrelayable(exc)
            await close_stream(source)
        response: dict[str, Any] = {}
        closing: list[bytes] = []
        if error is None and acc.error is None:
            response = wire.response_from_chat(
                acc.completion(),
                call.body,
                response_id=response_id,
                created_at=call.created_at,
                store=call.should_store,
                metadata=call.metadata,
            )
            mark = events.sequence
            try:
                closing = items.close(response)
                dumps({"response": response})  # as deep as the final event that will carry it
            except UnencodableError as exc:
                events.sequence = mark
                error = unrelayable(exc)
        failure = error.to_dict()["error"] if error is not None else acc.error
        if failure is not None:
            message = str(failure.get("message") or "failed")
            code = failure.get("code") or "server_error"
            failed = self._skeleton(
                call, response_id, "failed", error={"code": code, "message": message}
            )
            if call.should_store:
                await self.failed(call.record, error or DistilleryError(message))
            yield events.final(failed)
            return
        yield b"".join(closing)
        stored_id = None
        if call.should_store:
            response = await self._store(call, response)
            stored_id = response["id"]
        if on_done is not None and response.get("status") != "failed":
            on_done(response, stored_id)
        yield events.final(response)


class _OpenItems:
    """The output items a translated stream has begun, and the events of each chat chunk."""

    def __init__(self, response_id: str, events: wire.ResponseEvents) -> None:
        self.response_id = response_id
        self.events = events
        self.opened: dict[int, str] = {}  # output index -> item id
        self.text_at: int | None = None
        self.calls_at: dict[int, int] = {}  # tool call index -> output index

    def feed(self, chunk: Mapping[str, Any] | None) -> list[bytes]:
        out: list[bytes] = []
        for choice in (chunk or {}).get("choices") or []:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.extend(self._text(text))
            for tool in delta.get("tool_calls") or []:
                out.extend(self._call(tool))
        return out

    def close(self, response: Mapping[str, Any]) -> list[bytes]:
        """The events that finish the items of the answer ``response`` (beginning those no
        chunk began)."""
        closing: list[bytes] = []
        for index, item in enumerate(response["output"]):
            if index not in self.opened:
                closing.append(self.events.item_added(index, item))
                if item.get("type") == "message":
                    closing.append(self.events.part_added(index, str(item["id"])))
            closing.extend(self.events.item_done(index, item))
        return closing

    def _begin(self, prefix: str, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        at = len(self.opened)
        item = {"id": wire.item_id(self.response_id, prefix, at), **fields}
        self.opened[at] = item["id"]
        return at, item

    def _text(self, text: str) -> list[bytes]:
        out = []
        if self.text_at is None:
            at, item = self._begin(wire.MESSAGE_PREFIX, {"type": "message", "role": "assistant"})
            self.text_at = at
            out += [self.events.item_added(at, item), self.events.part_added(at, item["id"])]
        out.append(self.events.text_delta(self.text_at, self.opened[self.text_at], text))
        return out

    def _call(self, tool: Mapping[str, Any]) -> list[bytes]:
        out = []
        index = int(tool.get("index", 0))
        fn = tool.get("function") or {}
        if index not in self.calls_at:
            fields = {
                "type": "function_call",
                "call_id": tool.get("id") or "",
                "name": fn.get("name") or "",
            }
            at, item = self._begin(wire.FUNCTION_CALL_PREFIX, fields)
            self.calls_at[index] = at
            out.append(self.events.item_added(at, item))
        if fn.get("arguments"):
            at = self.calls_at[index]
            out.append(self.events.arguments_delta(at, self.opened[at], str(fn["arguments"])))
        return out


def response_of(stored: StoredCompletion) -> dict[str, Any]:
    """The Response object of a stored response, with its metadata as it is now."""
    answer = stored.response or {}
    response = answer.get("response") if isinstance(answer, Mapping) else None
    found = dict(response) if isinstance(response, Mapping) else {}
    return {**found, "id": stored.id, "metadata": dict(stored.metadata)}
