"""``POST /v1/completions`` (legacy text completions): the documented request and
``openai.types.Completion``. The fields not named here pass through to the provider."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict

from distillery.wire.base import WireModel


class CompletionCreateParams(WireModel):
    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    stream: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None


class Completion(WireModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
