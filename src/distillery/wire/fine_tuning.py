"""``/v1/fine_tuning/jobs`` shapes, named as in ``openai.types.fine_tuning``: the create request
(``JobCreateParams``), the job, its events and its checkpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from distillery.wire.base import WireModel

# OpenAI's rule for ``n_epochs: "auto"`` (3 epochs, raised so a small file is seen ~100 times,
# lowered so a large one is seen at most ~25,000 times): the local trainer runs it, and a dataset's
# cost estimate bills it.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def auto_n_epochs(n_examples: int) -> int:
    """OpenAI's documented rule for ``n_epochs="auto"``."""
    n = max(1, n_examples)
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n)
    if n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n)
    return TARGET_EPOCHS


JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]


class JobCreateParams(WireModel):
    """``POST /v1/fine_tuning/jobs``; distillery's own training options go in ``distillery``."""

    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    method: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    integrations: list[dict[str, Any]] | None = None
    distillery: dict[str, Any] | None = None


class FineTuningJob(WireModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    model: str
    status: JobStatus
    training_file: str
    validation_file: str | None
    fine_tuned_model: str | None
    finished_at: int | None
    error: dict[str, Any] | None
    hyperparameters: dict[str, Any]
    organization_id: str
    result_files: list[str]
    seed: int
    trained_tokens: int | None
    metadata: dict[str, str] | None = None
    method: dict[str, Any] | None = None


class FineTuningJobEvent(WireModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] | None = None
    data: dict[str, Any] | None = None


class FineTuningJobCheckpoint(WireModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float]
