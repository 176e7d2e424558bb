"""Stored chat completions' messages: ``ChatCompletionStoreMessage`` as in ``openai.types.chat``.

``content`` and ``refusal`` are required and nullable (always sent); ``tool_calls``,
``annotations``, ``audio``, ``function_call`` and ``content_parts`` are optional (absent when the
message has none). distillery also says a message's ``name`` and ``tool_call_id`` when it has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distillery.wire.base import WireModel
from distillery.wire.content import content_text


class ChatCompletionStoreMessage(WireModel):
    id: str
    role: str
    content: str | None
    refusal: str | None
    content_parts: list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    annotations: list[dict[str, Any]] | None = None
    audio: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None
    name: str | None = None
    tool_call_id: str | None = None

    @classmethod
    def from_message(
        cls, message_id: str, message: Mapping[str, Any]
    ) -> ChatCompletionStoreMessage:
        """A request message (as the client sent it) in the stored-message shape."""
        content = message.get("content")
        parts = [p for p in content if isinstance(p, dict)] if isinstance(content, list) else None
        text = content if isinstance(content, str) else None
        if parts is not None:
            text = content_text(parts) or None
        return cls(
            id=message_id,
            role=str(message.get("role")),
            content=text,
            refusal=_str(message.get("refusal")),
            content_parts=parts,
            tool_calls=_dicts(message.get("tool_calls")),
            annotations=_dicts(message.get("annotations")),
            audio=message["audio"] if isinstance(message.get("audio"), dict) else None,
            function_call=message["function_call"]
            if isinstance(message.get("function_call"), dict)
            else None,
            name=_str(message.get("name")),
            tool_call_id=_str(message.get("tool_call_id")),
        )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dicts(value: Any) -> list[dict[str, Any]] | None:
    if not isinstance(value, list) or not value:
        return None
    return [v for v in value if isinstance(v, dict)]
