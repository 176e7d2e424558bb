"""Frozen records returned by repositories (ORM rows never leave ``store/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    data: list[T]
    has_more: bool


@dataclass(frozen=True)
class NewCompletion:
    """What the gateway records for one exchange."""

    id: str
    created_at: int
    model: str
    provider: str
    status: str  # completed | failed
    stream: bool
    request: dict[str, Any]
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    metadata: dict[str, str] | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    requested_model: str | None = None  # set when a route answered with another model
    route_id: str | None = None
    redaction: dict[str, Any] | None = None  # kinds and counts replaced ([capture.redaction])
    # "responses": an exchange of the Responses API (``request.responses`` holds its request,
    # ``response.response`` its Response object), also listed in the responses table
    endpoint: str | None = None


@dataclass(frozen=True)
class StoredCompletion:
    seq: int
    id: str
    created_at: int
    model: str
    provider: str
    status: str
    stream: bool
    request: dict[str, Any]
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    metadata: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    requested_model: str | None = None
    route_id: str | None = None
    redaction: dict[str, Any] | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        msgs = self.request.get("messages")
        return list(msgs) if isinstance(msgs, list) else []

    def to_chat_completion(self) -> dict[str, Any]:
        """The stored completion as OpenAI's ``ChatCompletion`` object (with ``metadata``)."""
        response = self.response or {}
        usage = response.get("usage")
        if usage is None and self.prompt_tokens is not None:
            usage = {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens or 0,
                "total_tokens": self.prompt_tokens + (self.completion_tokens or 0),
            }
        completion = {
            "id": self.id,
            "object": "chat.completion",
            "created": response.get("created", self.created_at),
            "model": response.get("model", self.model),
            "choices": _with_refusal(response.get("choices", [])),
            "usage": usage,
            "service_tier": response.get("service_tier"),
            "system_fingerprint": response.get("system_fingerprint"),
            "metadata": self.metadata or {},
            "request_id": None,
            "tool_choice": self.request.get("tool_choice"),
            "seed": self.request.get("seed"),
            "top_p": self.request.get("top_p"),
            "temperature": self.request.get("temperature"),
            "presence_penalty": self.request.get("presence_penalty"),
            "frequency_penalty": self.request.get("frequency_penalty"),
            "input_user": None,
            "tools": self.request.get("tools"),
            "response_format": self.request.get("response_format"),
        }
        if self.redaction is not None:  # distillery's: what [capture.redaction] replaced
            completion["redaction"] = self.redaction
        return completion


def _with_refusal(choices: Any) -> Any:
    """Choices whose messages all say ``refusal`` (required and nullable in the SDK types; a
    stream assembled before it was kept, or an upstream that leaves it out, lacks it)."""
    if not isinstance(choices, list) or all(
        not isinstance(c, dict)
        or not isinstance(c.get("message"), dict)
        or "refusal" in c["message"]
        for c in choices
    ):
        return choices
    return [
        {**c, "message": {"refusal": None, **c["message"]}}
        if isinstance(c, dict) and isinstance(c.get("message"), dict)
        else c
        for c in choices
    ]
