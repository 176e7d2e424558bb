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

from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

from distillery import ids
from distillery.capture.chat import Answered, Relaying, include_usage, usable_id
from distillery.capture.exchange import Call, Exchange
from distillery.capture.streaming import SseAccumulator
from distillery.errors import InvalidRequestError
from distillery.providers.base import LegacyCompletionsProvider
from distillery.security.keys import NOBODY, Caller
from distillery.wire.chat import validate_metadata
from distillery.wire.encoding import dumps

LEGACY_PREFIX = "cmpl-"


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


class LegacyCompletions(Relaying):
    """``/v1/completions``: forward to the provider, record the exchange when storing."""

    name = "completions"
    id_prefix = LEGACY_PREFIX

    async def prepare(self, body: Any, caller: Caller = NOBODY) -> Exchange:
        upstream, should_store, metadata = self.admit(validate_body(body))
        chat = {**upstream, "messages": _messages(upstream)}  # what a route grades and keys on
        return Exchange("completions", upstream, chat, should_store, metadata)

    def _provider(self, model: str) -> LegacyCompletionsProvider:
        return self.providers.route_completions(model)

    async def _fetch(
        self, provider: LegacyCompletionsProvider, upstream: dict[str, Any]
    ) -> dict[str, Any]:
        return await provider.completions(upstream)

    def _open(
        self, provider: LegacyCompletionsProvider, upstream: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        return provider.completions_stream(upstream)

    def _accumulator(self) -> TextCompletionAccumulator:
        return TextCompletionAccumulator()

    def _request(self, upstream: dict[str, Any]) -> dict[str, Any]:
        messages = _messages(upstream)
        return {**upstream, "messages": messages} if messages else upstream

    async def _store(self, call: Call, answer: Answered) -> str | None:
        """Write one record per prompt; the id to show when there is one record."""
        pairs = chat_records(answer.upstream, answer.response)
        stored = []
        for i, (request, chat) in enumerate(pairs):
            is_claimed = answer.claimed is not None and i == 0  # a stream showed this id already
            if answer.claimed is not None and i == 0:
                record_id = answer.claimed
            elif len(pairs) == 1:
                record_id = usable_id(answer.response, LEGACY_PREFIX)
            else:
                record_id = _new_id()
            chat = {**chat, "id": record_id}
            record = self.recorder.completed(
                replace(call, request=request), chat, id=record_id, error=answer.error
            )
            stored.append(await self.recorder.write(record, claimed=is_claimed))
        return stored[0] if len(stored) == 1 else None

    def as_chat(self, answer: Mapping[str, Any]) -> Mapping[str, Any]:
        return chat_records({"prompt": ""}, dict(answer))[0][1]

    def replay(self, exchange: Exchange, answer: Mapping[str, Any]) -> list[bytes]:
        return text_completion_events(answer, include_usage=include_usage(exchange))


def _new_id() -> str:
    return ids.new_id(LEGACY_PREFIX)


def _messages(upstream: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The chat messages a legacy request amounts to: one user message holding its prompt (none
    for token arrays or several prompts)."""
    prompts = _prompts(upstream.get("prompt"))
    if len(prompts) == 1 and isinstance(prompts[0], str):
        return [{"role": "user", "content": prompts[0]}]
    return []


def text_completion_events(answer: Mapping[str, Any], *, include_usage: bool) -> list[bytes]:
    """A whole ``text_completion`` as the events of its stream: one per choice, usage when
    asked, ``[DONE]``."""
    head = {k: answer.get(k) for k in ("id", "object", "created", "model", "system_fingerprint")}
    events = [
        b"data: " + dumps({**head, "choices": [choice]}) + b"\n\n"
        for choice in answer.get("choices") or []
    ]
    if include_usage and answer.get("usage") is not None:
        events.append(
            b"data: " + dumps({**head, "choices": [], "usage": answer["usage"]}) + b"\n\n"
        )
    return [*events, b"data: [DONE]\n\n"]


class TextCompletionAccumulator(SseAccumulator):
    """Assembles one ``text_completion`` from its streamed SSE events."""

    def _choice(self, choice: dict[str, Any]) -> None:
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
