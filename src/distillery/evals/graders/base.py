"""The Grader seam: what a grader receives, what it returns, and the judge it may call.

A grader scores one sample (a model's answer) against one data-source row. Grader configs mirror
OpenAI's grader types field for field (``openai.types.graders.*``); ``registry.build_grader`` turns
a config dict into a grader. Every grader is ``async`` because model judges call a provider;
CPU-heavy graders (embeddings) run their work in a thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from distillery.errors import DistilleryError
from distillery.wire.params import invalid_request

# ``GraderError.kind``: OpenAI's names for what went wrong (the flags of a grader run's errors)
MODEL_SERVER_ERROR = "model_grader_server_error"
MODEL_REFUSAL_ERROR = "model_grader_refusal_error"
MODEL_PARSE_ERROR = "model_grader_parse_error"
PYTHON_RUNTIME_ERROR = "python_grader_runtime_error"
PYTHON_SERVER_ERROR = "python_grader_server_error"
UNRESPONSIVE_ERROR = "unresponsive_reward_error"  # the user's code ran past its time limit
OTHER_ERROR = "other_error"


class GraderError(DistilleryError):
    """A grader could not produce a grade (judge failed, unparsable answer, no judge bound,
    the user's ``python`` grader raised).

    The eval runner counts the item as ``errored``, not as failed. ``kind`` says what failed in
    the words of OpenAI's grader-run error flags (``model_grader_parse_error``,
    ``python_grader_runtime_error``...; see ``run.ERROR_FLAGS``); ``details`` is what there is to
    show (a traceback, the sub-rewards a ``multi`` grader had before one of its graders failed).
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
        kind: str | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.raw = raw  # the judge's answer, when there was one
        self.kind = kind
        self.details: Mapping[str, object] = details or {}


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


@runtime_checkable
class BatchGrader(Grader, Protocol):
    """A grader that grades many inputs at once more cheaply than one by one (``python`` runs a
    batch in one sandbox process; ``multi`` passes the batch on to its graders)."""

    async def grade_many(self, inputs: Sequence[GradeInput]) -> list[Grade | GraderError]: ...


async def grade_many(
    grader: Grader, inputs: Sequence[GradeInput], *, concurrency: int = 8
) -> list[Grade | GraderError]:
    """Grade every input, in order: a ``Grade``, or the ``GraderError`` that input raised.

    A ``BatchGrader`` grades the batch itself; any other grader grades ``concurrency`` inputs at
    a time. Exceptions other than ``GraderError`` (bugs) propagate.
    """
    if isinstance(grader, BatchGrader):
        return await grader.grade_many(inputs)
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(inp: GradeInput) -> Grade | GraderError:
        async with limit:
            try:
                return await grader.grade(inp)
            except GraderError as exc:
                return exc

    return list(await asyncio.gather(*(one(inp) for inp in inputs)))


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


C = TypeVar("C", bound=GraderConfig)


def parse_config(cls: type[C], config: Mapping[str, Any], param: str) -> C:
    """Validate ``config`` into ``cls``; the first problem becomes an ``InvalidRequestError``."""
    try:
        return cls.model_validate(dict(config))
    except ValidationError as exc:
        raise invalid_request(exc, prefix=param, what="grader config") from exc


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
