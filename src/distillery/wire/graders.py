"""``/v1/fine_tuning/alpha/graders`` shapes, as in ``openai.types.fine_tuning.alpha``:
``GraderRunParams`` / ``GraderRunResponse`` (run a grader on one sample) and
``GraderValidateParams`` / ``GraderValidateResponse`` (check a grader config)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from distillery.wire.base import WireModel


class GraderRunParams(WireModel):
    grader: dict[str, Any]
    model_sample: str = Field(description="The sample to grade: the `sample` namespace.")
    item: Any = Field(default=None, description="The dataset row: the `item` namespace.")
    # older SDKs (openai<1.80) sent it, required; OpenAI dropped it: accepted and ignored
    reference_answer: Any = None


class GraderValidateParams(WireModel):
    grader: dict[str, Any]


class GraderRunErrors(WireModel):
    """What went wrong, as OpenAI's flags (all false when the grade succeeded)."""

    formula_parse_error: bool
    sample_parse_error: bool
    truncated_observation_error: bool
    unresponsive_reward_error: bool
    invalid_variable_error: bool
    other_error: bool
    python_grader_server_error: bool
    python_grader_server_error_type: str | None
    python_grader_runtime_error: bool
    python_grader_runtime_error_details: str | None
    model_grader_server_error: bool
    model_grader_refusal_error: bool
    model_grader_parse_error: bool
    model_grader_server_error_details: str | None


class GraderRunMetadata(WireModel):
    name: str
    type: str
    errors: GraderRunErrors
    execution_time: float
    scores: dict[str, Any]
    token_usage: int | None
    sampled_model_name: str | None


class GraderRunResponse(WireModel):
    reward: float
    metadata: GraderRunMetadata
    sub_rewards: dict[str, Any]
    model_grader_token_usage_per_model: dict[str, Any]


class GraderValidateResponse(WireModel):
    grader: dict[str, Any] | None = None
