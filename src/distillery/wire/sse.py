"""A ChatCompletion replayed as the ``chat.completion.chunk`` events OpenAI streams.

Used when the gateway buffered an answer before sending it (a route's blocking graders must
see the whole answer first): the client still receives a stream in OpenAI's shape.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def _event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def completion_events(completion: Mapping[str, Any], *, include_usage: bool) -> Iterator[bytes]:
    """The SSE events of ``completion``: per choice a role chunk, its content (or tool calls)
    and its finish chunk; a usage chunk when asked (``stream_options.include_usage``); [DONE]."""
    head = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
        "system_fingerprint": completion.get("system_fingerprint"),
    }
    for choice in completion.get("choices") or []:
        index = choice.get("index", 0)
        message = choice.get("message") or {}

        def chunk(delta: dict[str, Any], finish: str | None = None, idx: int = index) -> bytes:
            return _event(
                {
                    **head,
                    "choices": [
                        {"index": idx, "delta": delta, "logprobs": None, "finish_reason": finish}
                    ],
                }
            )

        yield chunk({"role": message.get("role", "assistant"), "content": "", "refusal": None})
        if message.get("content"):
            yield chunk({"content": message["content"]})
        for i, call in enumerate(message.get("tool_calls") or []):
            yield chunk({"tool_calls": [{"index": i, **call}]})
        yield chunk({}, choice.get("finish_reason") or "stop")
    if include_usage:
        yield _event({**head, "choices": [], "usage": completion.get("usage")})
    yield DONE
