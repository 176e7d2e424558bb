"""Graders as rewards: build one from OpenAI's grader object, grade samples, run and validate it
the way OpenAI's ``/v1/fine_tuning/alpha/graders/run`` and ``.../validate`` do.

For a reinforcement fine-tuning loop::

    grader = build(job["method"]["reinforcement"]["grader"], judge=judge)   # 400s at once
    rewards = await grade_samples(grader, [(row, completion_text), ...])      # or grade_samples_sync
    [r.score for r in rewards]   # 0.0 where the grader failed (r.error says why)

``grade_samples`` grades the whole batch at once: a ``python`` grader (also inside a ``multi``)
runs many (item, sample) pairs per sandbox process; other graders grade ``concurrency`` samples
at a time. ``templating.item_references(config)`` names the item fields a config reads.

``run_request`` and ``validate_request`` answer the two HTTP endpoints from their JSON bodies
(the routes only pass them on). A grader that fails to grade is not an HTTP error: the run
answers reward 0 with OpenAI's error flags set (``metadata.errors``), as OpenAI's API does; an
invalid config is a 400 whose ``param`` starts with ``grader``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distillery.embedders import Embedder
from distillery.errors import InvalidRequestError
from distillery.evals.graders.base import (
    MODEL_PARSE_ERROR,
    MODEL_REFUSAL_ERROR,
    MODEL_SERVER_ERROR,
    OTHER_ERROR,
    PYTHON_RUNTIME_ERROR,
    PYTHON_SERVER_ERROR,
    UNRESPONSIVE_ERROR,
    Grade,
    GradeInput,
    Grader,
    GraderError,
    JudgeClient,
    grade_many,
    sample_from_output,
)
from distillery.evals.graders.registry import build_grader
from distillery.wire.graders import (
    GraderRunParams,
    GraderRunResponse,
    GraderValidateParams,
    GraderValidateResponse,
)
from distillery.wire.params import parse_params

# OpenAI's error flags of a grader run, all false when the grade succeeded
ERROR_FLAGS = (
    "formula_parse_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
    "invalid_variable_error",
    "other_error",
    "python_grader_server_error",
    "python_grader_runtime_error",
    "model_grader_server_error",
    "model_grader_refusal_error",
    "model_grader_parse_error",
)
_DETAIL_FLAGS = {
    PYTHON_RUNTIME_ERROR: "python_grader_runtime_error_details",
    UNRESPONSIVE_ERROR: "python_grader_runtime_error_details",
    MODEL_SERVER_ERROR: "model_grader_server_error_details",
}
_KNOWN_KINDS = {
    MODEL_SERVER_ERROR,
    MODEL_REFUSAL_ERROR,
    MODEL_PARSE_ERROR,
    PYTHON_RUNTIME_ERROR,
    PYTHON_SERVER_ERROR,
    UNRESPONSIVE_ERROR,
    OTHER_ERROR,
}

Sample = str | Mapping[str, Any]


def build(
    config: Mapping[str, Any],
    *,
    judge: JudgeClient | None = None,
    embedder: Embedder | None = None,
    param: str = "grader",
) -> Grader:
    """The grader an OpenAI grader object describes (``registry.build_grader``); a bad config
    raises ``InvalidRequestError`` with ``param`` under ``param`` (``grader.calculate_output``)."""
    return build_grader(config, judge=judge, embedder=embedder, param=param)


@dataclass(frozen=True)
class Reward:
    """One sample's reward: the grade's score, or 0.0 with the error when the grader failed."""

    score: float
    grade: Grade | None = None
    error: GraderError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def grade_input(item: Mapping[str, Any] | None, sample: Sample) -> GradeInput:
    """The grader's input for a row and a sample: a model's text (``sample.output_text``, with
    ``output_json`` when it is JSON) or a whole sample namespace."""
    namespace = sample_from_output(sample) if isinstance(sample, str) else dict(sample)
    return GradeInput(item=item or {}, sample=namespace)


async def grade_samples(
    grader: Grader,
    rows: Sequence[tuple[Mapping[str, Any] | None, Sample]],
    *,
    concurrency: int = 8,
) -> list[Reward]:
    """The reward of every (item, sample) pair, in order; a failed grade is 0.0 with its error."""
    graded = await grade_many(
        grader, [grade_input(item, sample) for item, sample in rows], concurrency=concurrency
    )
    return [
        Reward(0.0, error=g) if isinstance(g, GraderError) else Reward(g.score, grade=g)
        for g in graded
    ]


def grade_samples_sync(
    grader: Grader,
    rows: Sequence[tuple[Mapping[str, Any] | None, Sample]],
    *,
    concurrency: int = 8,
) -> list[Reward]:
    """``grade_samples`` from synchronous code (a training loop in a worker thread or process).

    It runs its own event loop, so it cannot be called from a coroutine (use ``grade_samples``)
    and a model judge must work in a new loop (distillery's ``ProviderJudge`` does).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(grade_samples(grader, rows, concurrency=concurrency))
    raise RuntimeError("grade_samples_sync was called inside an event loop: await grade_samples")


def error_flags(error: GraderError | None) -> dict[str, Any]:
    """OpenAI's ``metadata.errors`` for a grade that raised ``error`` (all false for None)."""
    flags: dict[str, Any] = dict.fromkeys(ERROR_FLAGS, False)
    flags |= {
        "python_grader_server_error_type": None,
        "python_grader_runtime_error_details": None,
        "model_grader_server_error_details": None,
    }
    if error is None:
        return flags
    kind = error.kind if error.kind in _KNOWN_KINDS else OTHER_ERROR
    assert kind is not None
    flags[kind] = True
    if kind == UNRESPONSIVE_ERROR:  # the user's code ran too long: a runtime error of it too
        flags[PYTHON_RUNTIME_ERROR] = True
    if kind == PYTHON_SERVER_ERROR:
        flags["python_grader_server_error_type"] = str(
            error.details.get("details") or "sandbox_error"
        )
    detail_key = _DETAIL_FLAGS.get(kind)
    if detail_key is not None:
        details = error.details.get("details")
        flags[detail_key] = f"{error.message}\n{details}" if details else error.message
    return flags


def _model_usage(grader: Grader, grade: Grade | None) -> dict[str, dict[str, int]]:
    """Tokens the model judges used, per model, from the grade's (and sub-grades') details."""
    found: dict[str, dict[str, int]] = {}

    def add(details: Mapping[str, Any]) -> None:
        usage, model = details.get("usage"), details.get("model")
        if isinstance(usage, Mapping) and isinstance(model, str):
            entry = found.setdefault(
                model,
                {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0},
            )
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                value = usage.get(key)
                entry[key] += value if isinstance(value, int) else 0
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            entry["cached_tokens"] += cached if isinstance(cached, int) else 0
        for sub in (details.get("graders") or {}).values():
            if isinstance(sub, Mapping) and isinstance(sub.get("details"), Mapping):
                add(sub["details"])

    if grade is not None:
        add(grade.details)
    return found


def _sub_rewards(grade: Grade | None, error: GraderError | None) -> dict[str, Any]:
    details = grade.details if grade is not None else error.details if error is not None else {}
    rewards = details.get("sub_rewards")
    return dict(rewards) if isinstance(rewards, Mapping) else {}


async def run_grader(
    config: Mapping[str, Any],
    model_sample: str,
    item: Mapping[str, Any] | None = None,
    *,
    judge: JudgeClient | None = None,
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """OpenAI's ``GraderRunResponse`` for ``config`` on one sample (a 400 for a bad config)."""
    grader = build(config, judge=judge, embedder=embedder)
    started = time.perf_counter()
    (reward,) = await grade_samples(grader, [(item, model_sample)])
    elapsed = time.perf_counter() - started
    usage = _model_usage(grader, reward.grade)
    sub_rewards = _sub_rewards(reward.grade, reward.error)
    response = GraderRunResponse.model_validate(
        {
            "reward": reward.score,
            "metadata": {
                "name": grader.name,
                "type": grader.type,
                "errors": error_flags(reward.error),
                "execution_time": elapsed,
                "scores": sub_rewards,
                "token_usage": sum(u["total_tokens"] for u in usage.values()) if usage else None,
                "sampled_model_name": next(iter(usage)) if len(usage) == 1 else None,
            },
            "sub_rewards": sub_rewards,
            "model_grader_token_usage_per_model": usage,
        }
    )
    return response.model_dump(mode="json")


async def run_request(
    body: Any, *, judge: JudgeClient | None = None, embedder: Embedder | None = None
) -> dict[str, Any]:
    """``POST /v1/fine_tuning/alpha/graders/run``: ``{grader, model_sample, item?}``."""
    params = parse_params(GraderRunParams, body)
    item = params.item
    if item is not None and not isinstance(item, Mapping):
        raise InvalidRequestError(
            "'item' must be an object: it is the row graders read as {{item.<field>}}.",
            param="item",
            code="invalid_type",
        )
    return await run_grader(
        params.grader, params.model_sample, item, judge=judge, embedder=embedder
    )


def validate_grader(config: Mapping[str, Any], *, param: str = "grader") -> dict[str, Any]:
    """The grader object, when it builds (formulas and python sources checked); else the 400."""
    build(config, param=param)
    return GraderValidateResponse(grader=dict(config)).to_wire()


def validate_request(body: Any) -> dict[str, Any]:
    """``POST /v1/fine_tuning/alpha/graders/validate``: ``{grader}`` -> ``{grader}``."""
    return validate_grader(parse_params(GraderValidateParams, body).grader)
