"""The error envelope of every failed call: ``{"error": {"message", "type", "param", "code"}}``.

``Error`` is named as in OpenAI's OpenAPI document (``openai.types.shared.ErrorObject`` in the
SDK); ``ErrorResponse`` is the body that carries it. An error may say more than the four fields
(a parity-gate refusal adds ``gate``: ``routing.service.GateRefused``).
"""

from __future__ import annotations

from pydantic import ConfigDict

from distillery.wire.base import WireModel


class Error(WireModel):
    model_config = ConfigDict(extra="allow")

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(WireModel):
    error: Error
