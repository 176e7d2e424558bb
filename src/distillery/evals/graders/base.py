"""The Grader seam: what a grader receives, what it returns, and the judge it may call.

A grader scores one sample (a model's answer) against one data-source row. Grader configs mirror
OpenAI's grader types field for field (``openai.types.graders.*``); ``registry.build_grader`` turns
a config dict into a grader. Every grader is ``async`` because model judges call a provider;
CPU-heavy graders (embeddings) run their work in a thread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from distillery.errors import DistilleryError


class GraderError(DistilleryError):
    """A grader could not produce a grade (judge failed, unparsable answer, no judge bound).

    The eval runner counts the item as ``errored``, not as failed.
    """

    status = 500
    type = "server_error"
    default_code = "grader_error"

    def __init__(
        self,
        message: str,
        *,
        raw: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.raw = raw  # the judge's answer, when there was one


@dataclass(frozen=True)
class GradeInput:
    item: Mapping[str, Any]  # the data-source row, ``{{item.x}}``
    sample: Mapping[str, Any]  # {"output_text": str, "output_json": Any | None, ...}


@dataclass(frozen=True)
class Grade:
    score: float
    passed: bool | None
    reason: str | None = None
    details: Mapping[str, object] = field(default_factory=dict)


@runtime_checkable
class Grader(Protocol):
    type: ClassVar[str]
    name: str

    async def grade(self, inp: GradeInput) -> Grade: ...


class JudgeClient(Protocol):
    """Calls a chat model; bound by the eval runner to distillery's providers."""

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Return a ChatCompletion JSON dict."""
        ...


class GraderConfig(BaseModel):
    """Base of every grader config: unknown fields are rejected, like OpenAI's API does."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str) -> Any:
    """Strict JSON (RFC 8259): like ``json.loads`` but refuses NaN and Infinity."""
    return json.loads(text, parse_constant=_reject_constant)


def sample_from_output(output_text: str) -> dict[str, Any]:
    """The ``sample`` namespace for a model answer; ``output_json`` is set when it is valid JSON."""
    try:
        output_json = parse_json(output_text)
    except ValueError:
        output_json = None
    return {"output_text": output_text, "output_json": output_json}


def score_passed(score: float, pass_threshold: float | None) -> bool | None:
    return None if pass_threshold is None else score >= pass_threshold


def preview(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters for a human-readable reason."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
