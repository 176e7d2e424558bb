"""The OpenAI shapes of a fine-tuning job's records, and the spec a stored job describes.

A job is stored as its ``fine_tuning.job`` body (what ``GET /v1/fine_tuning/jobs/{id}`` returns,
patched as the job goes) plus a private ``state`` (paths, provider, progress, restarts...). Its
events (``fine_tuning.job.event``) and checkpoints (``fine_tuning.job.checkpoint``) are stored as
their bodies too. The hyperparameters a backend resolves (``auto`` made concrete) are written into
both ``hyperparameters`` and ``method.<type>.hyperparameters``, as OpenAI shows them. Checkpoint
metrics hold only what was measured: the SDK types declare each optional (absent, not null).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillery.store.jobs import JobRecord
from distillery.training.base import FineTuneSpec, Hyperparameters, TrainingCheckpoint
from distillery.training.inputs import InputFile
from distillery.training.params import CreateRequest

ORGANIZATION_ID = "org-distillery"
CHECKPOINT_METRICS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


def job_body(
    req: CreateRequest,
    job_id: str,
    created_at: int,
    hyper: Hyperparameters,
    training: InputFile,
    validation: InputFile | None,
) -> dict[str, Any]:
    """The ``fine_tuning.job`` of a job just created (``validating_files``)."""
    section = {k: v for k, v in req.method.items() if k != "hyperparameters"}
    hyper_obj = dict(req.method.get("hyperparameters") or {})
    hyper_obj.update(hyper.to_dict())
    return {
        "id": job_id,
        "object": "fine_tuning.job",
        "created_at": created_at,
        "error": None,
        "fine_tuned_model": None,
        "finished_at": None,
        "hyperparameters": hyper.to_dict(),
        "model": req.model,
        "organization_id": ORGANIZATION_ID,
        "result_files": [],
        "seed": req.seed,
        "status": "validating_files",
        "trained_tokens": None,
        "training_file": training.id,
        "validation_file": validation.id if validation else None,
        "estimated_finish": None,
        "integrations": req.integrations,
        "metadata": req.metadata,
        "method": {
            "type": req.method_type,
            req.method_type: {**section, "hyperparameters": hyper_obj},
        },
        "user_provided_suffix": req.suffix,
    }


def event_body(
    event_id: str,
    created_at: int,
    *,
    level: str,
    message: str,
    type: str,
    data: dict[str, Any] | None,
) -> dict[str, Any]:
    """A ``fine_tuning.job.event``."""
    return {
        "id": event_id,
        "object": "fine_tuning.job.event",
        "created_at": created_at,
        "level": level,
        "message": message,
        "type": type,
        "data": data,
    }


def checkpoint_body(
    checkpoint_id: str,
    created_at: int,
    job_id: str,
    model_id: str,
    checkpoint: TrainingCheckpoint,
) -> dict[str, Any]:
    """A ``fine_tuning.job.checkpoint`` with the metrics measured (and the step)."""
    metrics: dict[str, float] = {
        k: float(v)
        for k, v in checkpoint.metrics.items()
        if k in CHECKPOINT_METRICS and isinstance(v, int | float) and not isinstance(v, bool)
    }
    metrics["step"] = float(checkpoint.step)
    return {
        "id": checkpoint_id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": created_at,
        "fine_tuned_model_checkpoint": model_id,
        "fine_tuning_job_id": job_id,
        "step_number": checkpoint.step,
        "metrics": metrics,
    }


def checkpoint_public(body: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint without unmeasured metrics (stored as ``null`` before; they are optional)."""
    metrics = body.get("metrics")
    if isinstance(metrics, dict) and None in metrics.values():
        body = {**body, "metrics": {k: v for k, v in metrics.items() if v is not None}}
    return body


def hyperparameters_patch(job: JobRecord, hyper: Hyperparameters) -> dict[str, Any]:
    """The values a backend resolved, in ``hyperparameters`` and in ``method``."""
    values = hyper.to_dict()
    method = dict(job.body.get("method") or {"type": "supervised"})
    mtype = str(method.get("type") or "supervised")
    section = dict(method.get(mtype) or {})
    section["hyperparameters"] = {**(section.get("hyperparameters") or {}), **values}
    method[mtype] = section
    return {"hyperparameters": values, "method": method}


def spec_of(job: JobRecord, jobs_root: Path) -> FineTuneSpec:
    """The spec a backend runs for a stored job (its folder under ``jobs_root``)."""
    body, state = job.body, job.state
    hyper = body.get("hyperparameters") or {}
    return FineTuneSpec(
        job_id=job.id,
        model=body["model"],
        provider=str(state.get("provider")),
        training_file=body["training_file"],
        training_path=Path(state["training_path"]),
        validation_file=body.get("validation_file"),
        validation_path=Path(state["validation_path"]) if state.get("validation_path") else None,
        hyperparameters=Hyperparameters(
            n_epochs=hyper.get("n_epochs", "auto"),
            batch_size=hyper.get("batch_size", "auto"),
            learning_rate_multiplier=hyper.get("learning_rate_multiplier", "auto"),
        ),
        seed=int(body["seed"]),
        suffix=body.get("user_provided_suffix"),
        job_dir=jobs_root / job.id,
        training_examples=int(state.get("training_examples") or 0),
        method=state.get("method") or {"type": "supervised", "supervised": {}},
        extras=state.get("extras") or {},
        model_path=state.get("model_path"),
    )
