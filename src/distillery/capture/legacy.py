"""The legacy ``POST /v1/completions`` (``text_completion``), proxied and captured.

The request goes to an ``openai``/``azure`` provider that lists the model (a local model is a 400
``model_not_supported``: distillery's students answer chat, not raw prompts). ``store`` and
``metadata`` behave as on chat completions (``store: true`` or ``gateway.store_by_default``;
``metadata`` without ``store`` is a 400) and are not forwarded.

A stored exchange goes through the same ``CompletionWriter`` as a chat completion, in the chat
shape every reader of stored completions knows, so it can be listed, filtered, annotated, evaluated
and distilled like one:

- ``request``: the request as forwarded (``prompt``, ``suffix``, ``echo``... kept) plus
  ``messages`` = one user message holding the prompt (none for a token-array prompt);
- ``response``: a ``chat.completion`` whose assistant messages hold the generated texts, with the
  upstream's own ``text_completion`` object kept under ``text_completion``.

A request with several prompts is stored as one record per prompt (``choices`` of prompt ``p``
are ``p*n .. p*n+n-1``, as OpenAI orders them), without per-prompt usage. A stream is passed through
as it arrives and stored once it ends (its ``data: [DONE]`` is released after the commit), under
the id its events show. An answer the gateway cannot write back as JSON (``capture.relayable``)
is a 502 recorded as a failed exchange; a stream whose events must be rewritten but cannot be
ends with an error event instead of ``[DONE]``, and is stored as failed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from distillery import ids
from distillery.capture.relayable import (
    check_relayable,
    close_stream,
    error_event,
    unrelayable,
)
from distillery.capture.storable import token_count
from distillery.capture.streaming import IdGate
from distillery.capture.writer import CompletionWriter
from distillery.costs.prices import PriceTable
from distillery.errors import DistilleryError, InvalidRequestError
from distillery.providers.registry import ProviderRegistry
from distillery.settings import GatewayConfig
from distillery.store.records import NewCompletion
from distillery.wire.chat import validate_metadata
from distillery.wire.encoding import UnencodableError

LEGACY_PREFIX = "cmpl-"
_NOT_FORWARDED = ("store", "metadata")


def _prompts(prompt: Any) -> list[str | list[int]]:
    """The prompts of a request: a string, strings, a token array or token arrays (else 400)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return [list(prompt)]
        if all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
            return [list(p) for p in prompt]
    raise InvalidRequestError(
        "Invalid type for 'prompt': expected a string, an array of strings, an array of "
        "integers (tokens) or an array of arrays of integers.",
        param="prompt",
        code="invalid_type",
    )


def validate_body(body: Any) -> dict[str, Any]:
    """The checks distillery acts on (``model``, ``prompt``, ``stream``, ``store``, ``metadata``)."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_type")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    if "prompt" not in body:
        raise InvalidRequestError(
            "Missing required parameter: 'prompt'.",
            param="prompt",
            code="missing_required_parameter",
        )
    _prompts(body["prompt"])
    for flag in ("stream", "store", "echo"):
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            raise InvalidRequestError(
                f"Invalid type for '{flag}': expected a boolean.", param=flag, code="invalid_type"
            )
    validate_metadata(body.get("metadata"))
    return body


def _n(upstream: dict[str, Any]) -> int:
    n = upstream.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def chat_records(
    upstream: dict[str, Any], response: dict[str, Any]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(request, response)`` in the chat shape for each prompt of a legacy exchange."""
    prompts = _prompts(upstream.get("prompt"))
    n = _n(upstream)
    choices = [c for c in response.get("choices") or [] if isinstance(c, dict)]
    out = []
    for p, prompt in enumerate(prompts):
        request = {**upstream, "prompt": prompt}
        if isinstance(prompt, str):
            request["messages"] = [{"role": "user", "content": prompt}]
        mine = [c for c in choices if _index(c) // n == p] if len(prompts) > 1 else choices
        chat_choices = [
            {
                "index": _index(c) - p * n if len(prompts) > 1 else _index(c),
                "message": {
                    "role": "assistant",
                    "content": c.get("text") if isinstance(c.get("text"), str) else "",
                    "refusal": None,
                },
                "finish_reason": c.get("finish_reason") or "stop",
                "logprobs": None,
            }
            for c in mine
        ]
        chat = {
            "id": response.get("id"),
            "object": "chat.completion",
            "created": response.get("created"),
            "model": response.get("model"),
            "choices": chat_choices,
            "usage": response.get("usage") if len(prompts) == 1 else None,
            "system_fingerprint": response.get("system_fingerprint"),
            "text_completion": response,
        }
        out.append((request, chat))
    return out


def _index(choice: dict[str, Any]) -> int:
    index = choice.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else 0


class LegacyCompletions:
    """``/v1/completions``: forward to the provider, record the exchange when storing."""

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
        body = validate_body(body)
        store = body.get("store")
        should_store = bool(store) if store is not None else self.gateway.store_by_default
        metadata = validate_metadata(body.get("metadata"))
        if metadata and not should_store and not self.gateway.allow_metadata_without_store:
            raise InvalidRequestError(
                "The 'metadata' parameter is only allowed when 'store' is enabled.",
                param="metadata",
            )
        upstream = {k: v for k, v in body.items() if k not in _NOT_FORWARDED}
        return upstream, should_store, metadata

    async def create(self, body: Any) -> dict[str, Any]:
        """A non-streamed legacy completion (the upstream's ``text_completion`` object)."""
        upstream, should_store, metadata = self._prepare(body)
        provider = self.providers.route_completions(upstream["model"])
        call = _Call(upstream, provider.name, metadata, int(time.time()), time.perf_counter())
        try:
            response = await provider.completions(upstream)
            check_relayable(response)  # before anything is stored as delivered
        except DistilleryError as exc:
            if should_store:
                await self.writer.write(self._failure(call, exc, stream=False))
            raise
        if should_store:
            stored = await self._store(call, response, stream=False)
            if len(stored) == 1 and stored[0] != response.get("id"):
                response = {**response, "id": stored[0]}
        return response

    async def stream(self, body: Any) -> AsyncIterator[bytes]:
        """A streamed legacy completion: returned once the upstream's first bytes arrived
        (errors before them raise, so the edge answers a JSON error)."""
        upstream, should_store, metadata = self._prepare(body)
        provider = self.providers.route_completions(upstream["model"])
        call = _Call(upstream, provider.name, metadata, int(time.time()), time.perf_counter())
        source = provider.completions_stream(upstream).__aiter__()
        try:
            first = await source.__anext__()
        except StopAsyncIteration:
            first = b""
        except DistilleryError as exc:
            if should_store:
                await self.writer.write(self._failure(call, exc, stream=True))
            raise
        if not should_store:
            return _passthrough(first, source)
        return self._relay(first, source, call)

    async def _relay(
        self, first: bytes, source: AsyncIterator[bytes], call: _Call
    ) -> AsyncIterator[bytes]:
        acc = TextCompletionAccumulator()
        gate = IdGate(self.writer)  # held until an event names the id to store under
        held = b""
        error: DistilleryError | None = None
        cut: DistilleryError | None = None  # an event the gateway could not write back
        pending = [first]
        try:
            while True:
                chunk = pending.pop() if pending else await source.__anext__()
                acc.feed(chunk)
                chunk = await gate.through(chunk, acc)
                if acc.done:  # hold the [DONE] event until the record is durable
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
        held = await gate.finish(held)
        stored_id = gate.id
        response = {**acc.completion(), "id": stored_id}
        err = error.to_dict()["error"] if error is not None else acc.error
        await self._store(call, response, stream=True, error=err, claimed=stored_id)
        if cut is not None:  # what is held (the rest, [DONE]) was not rewritten: not sent
            yield error_event(cut)
            return
        if held:
            yield held
        if error is not None:
            raise error

    async def _store(
        self,
        call: _Call,
        response: dict[str, Any],
        *,
        stream: bool,
        error: dict[str, Any] | None = None,
        claimed: str | None = None,
    ) -> list[str]:
        """Write one record per prompt; the ids they were stored under."""
        latency_ms = (time.perf_counter() - call.started) * 1000
        pairs = chat_records(call.upstream, response)
        stored = []
        for i, (request, chat) in enumerate(pairs):
            found = chat.get("usage")
            usage: dict[str, Any] = found if isinstance(found, dict) else {}
            prompt = token_count(usage.get("prompt_tokens"))
            completion = token_count(usage.get("completion_tokens"))
            upstream_id = response.get("id")
            is_claimed = claimed is not None and i == 0  # a stream showed this id already
            if claimed is not None and i == 0:
                record_id = claimed
            elif len(pairs) == 1 and isinstance(upstream_id, str) and 0 < len(upstream_id) <= 64:
                record_id = upstream_id
            else:
                record_id = ids.new_id(LEGACY_PREFIX)
            record = NewCompletion(
                id=record_id,
                created_at=call.created_at,
                model=call.upstream["model"],
                provider=call.provider,
                status="failed" if error else "completed",
                stream=stream,
                request=request,
                response={**chat, "id": record_id},
                error=error,
                metadata=call.metadata,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=0,
                latency_ms=latency_ms,
                cost_usd=self.prices.cost(call.upstream["model"], prompt, completion, 0),
            )
            stored.append(await self.writer.write(record, claimed=is_claimed))
        return stored

    def _failure(self, call: _Call, exc: DistilleryError, *, stream: bool) -> NewCompletion:
        request = dict(call.upstream)
        prompts = _prompts(request.get("prompt"))
        if len(prompts) == 1 and isinstance(prompts[0], str):
            request["messages"] = [{"role": "user", "content": prompts[0]}]
        return NewCompletion(
            id=ids.new_id(LEGACY_PREFIX),
            created_at=call.created_at,
            model=call.upstream["model"],
            provider=call.provider,
            status="failed",
            stream=stream,
            request=request,
            response=None,
            error={**exc.to_dict()["error"], "status": exc.status},
            metadata=call.metadata,
            latency_ms=(time.perf_counter() - call.started) * 1000,
        )


@dataclass(frozen=True)
class _Call:
    upstream: dict[str, Any]
    provider: str
    metadata: dict[str, str] | None
    created_at: int
    started: float


async def _passthrough(first: bytes, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in source:
        yield chunk


class TextCompletionAccumulator:
    """Assembles one ``text_completion`` from its streamed SSE events."""

    def __init__(self) -> None:
        self._buffer = b""
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.done = False
        self._choices: dict[int, dict[str, Any]] = {}

    def feed(self, data: bytes) -> None:
        self._buffer += data.replace(b"\r\n", b"\n")
        while b"\n\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n\n", 1)
            payload = b"".join(
                line[5:].lstrip() for line in raw.splitlines() if line.startswith(b"data:")
            )
            if payload.strip() == b"[DONE]":
                self.done = True
            elif payload:
                self._event(payload)

    def _event(self, payload: bytes) -> None:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk and "choices" not in chunk:
            err = chunk["error"]
            self.error = err if isinstance(err, dict) else {"message": str(err)}
            return
        self.id = self.id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        self.created = self.created or chunk.get("created")
        self.system_fingerprint = chunk.get("system_fingerprint") or self.system_fingerprint
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = _index(choice)
            acc = self._choices.setdefault(
                index, {"index": index, "text": "", "finish_reason": None, "logprobs": None}
            )
            if isinstance(choice.get("text"), str):
                acc["text"] += choice["text"]
            if choice.get("finish_reason"):
                acc["finish_reason"] = choice["finish_reason"]

    def completion(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [self._choices[i] for i in sorted(self._choices)],
            "usage": self.usage,
            "system_fingerprint": self.system_fingerprint,
        }
