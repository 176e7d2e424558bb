"""The wire shape of a fine-tuning job (OpenAI's ``/v1/fine_tuning/jobs``), in one place: the
create request checked as OpenAI checks it, the bodies stored and returned, and their
documentation models for the OpenAPI document.

``POST /v1/fine_tuning/jobs`` (:func:`parse_create`, a 400 with ``param`` for what is wrong):
both the deprecated top-level ``hyperparameters`` and ``method`` are accepted; ``n_epochs``,
``batch_size`` and ``learning_rate_multiplier`` are each a number or ``"auto"``. distillery's own
options (for the local trainer: ``max_length``, ``lora_r``...) travel in a ``distillery`` object,
which the openai SDK sends with ``extra_body={"distillery": {...}}``.

A job is stored as its ``fine_tuning.job`` body (what ``GET /v1/fine_tuning/jobs/{id}`` returns,
patched as the job goes) plus a private ``state`` (paths, provider, progress, restarts...). Its
events (``fine_tuning.job.event``) and checkpoints (``fine_tuning.job.checkpoint``) are stored as
their bodies too. The hyperparameters a backend resolves (``auto`` made concrete) are written into
both ``hyperparameters`` and ``method.<type>.hyperparameters``, as OpenAI shows them. Checkpoint
metrics hold only what was measured: the SDK types declare each optional (absent, not null).

The pydantic models (:class:`JobCreateParams`, :class:`FineTuningJob`...), named as in
``openai.types.fine_tuning``, document these shapes in the OpenAPI document (``api.openapi``);
the bodies themselves are built here as plain dicts.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ConfigDict, Field

from distillery.errors import InvalidRequestError
from distillery.store.jobs import JobRecord
from distillery.training.base import Hyperparameters, TrainingCheckpoint, TrainingEvent
from distillery.training.inputs import InputFile
from distillery.wire.base import WireModel
from distillery.wire.chat import validate_metadata

# --- the create request -------------------------------------------------------------------------

SUFFIX_MAX = 64
SEED_MAX = 2**31 - 1
METHODS = ("supervised", "dpo", "reinforcement")
KNOWN_PARAMS = frozenset(
    {
        "model",
        "training_file",
        "validation_file",
        "suffix",
        "seed",
        "metadata",
        "method",
        "hyperparameters",
        "integrations",
        "distillery",
    }
)
_LIMITS: dict[str, tuple[float, float]] = {
    "n_epochs": (1, 50),
    "batch_size": (1, 256),
    "learning_rate_multiplier": (1e-6, 100.0),
}


@dataclass(frozen=True)
class CreateRequest:
    """A create request that passed the checks (:func:`parse_create`), defaults filled in."""

    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    method_type: str
    method: dict[str, Any]  # the client's `method` object (other fields than hyperparameters kept)
    hyperparameters: Hyperparameters
    integrations: list[Any] | None
    extras: dict[str, Any] = field(default_factory=dict)
    backend: str | None = None  # the trainer kind asked for (``distillery.backend``)


def _string(body: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidRequestError(f"Missing required parameter: '{key}'.", param=key)
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"Invalid '{key}': expected a non-empty string.", param=key)
    return value


def _suffix(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequestError("Invalid 'suffix': expected a string.", param="suffix")
    if len(value) > SUFFIX_MAX:
        raise InvalidRequestError(
            f"Invalid 'suffix': string too long. Expected a string with maximum length "
            f"{SUFFIX_MAX}, but got a string with length {len(value)} instead.",
            param="suffix",
            code="string_above_max_length",
        )
    if ":" in value or any(ch.isspace() for ch in value):
        raise InvalidRequestError(
            "Invalid 'suffix': it may not contain ':' or whitespace.", param="suffix"
        )
    return value


def _seed(value: Any) -> int:
    if value is None:
        return secrets.randbelow(SEED_MAX)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise InvalidRequestError(
            f"Invalid 'seed': expected an integer between 0 and {SEED_MAX}.", param="seed"
        )
    return value


def _number(name: str, value: Any, param: str) -> int | float | str:
    if value is None or value == "auto":
        return "auto"
    low, high = _LIMITS[name]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and name != "learning_rate_multiplier":
        ok = float(value).is_integer()
        value = int(value) if ok else value
    if not ok or not low <= value <= high:
        kind = "a number" if name == "learning_rate_multiplier" else "an integer"
        raise InvalidRequestError(
            f"Invalid '{param}': expected \"auto\" or {kind} between {low:g} and {high:g}, "
            f"got {value!r}.",
            param=param,
        )
    return float(value) if name == "learning_rate_multiplier" else value


# each method's own hyperparameters beside the three shared ones (OpenAI's method objects)
METHOD_HYPERPARAMETERS: dict[str, frozenset[str]] = {
    "supervised": frozenset(),
    "dpo": frozenset({"beta"}),
    "reinforcement": frozenset(
        {"compute_multiplier", "eval_interval", "eval_samples", "reasoning_effort"}
    ),
}
_RFT_LIMITS: dict[str, tuple[float, float]] = {
    "compute_multiplier": (0.00001, 10.0),
    "eval_interval": (1, 1_000_000),
    "eval_samples": (1, 1_000),
}
REASONING_EFFORTS = ("default", "low", "medium", "high")


def _reinforcement_extra(name: str, value: Any, param: str) -> Any:
    """One of the reinforcement method's own hyperparameters, checked as OpenAI's."""
    if value is None or value == "auto":
        return "auto"
    if name == "reasoning_effort":
        if value not in REASONING_EFFORTS:
            raise InvalidRequestError(
                f"Invalid '{param}': expected one of {', '.join(REASONING_EFFORTS)}.", param=param
            )
        return value
    low, high = _RFT_LIMITS[name]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    integer = name != "compute_multiplier"
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise InvalidRequestError(
            f"Invalid '{param}': expected \"auto\" or {kind} between {low:g} and {high:g}, "
            f"got {value!r}.",
            param=param,
        )
    return int(value) if integer else float(value)


def method_extras(method: str, value: Any, prefix: str) -> dict[str, Any]:
    """The method's own hyperparameters in ``value`` (checked; absent ones left out)."""
    if method != "reinforcement" or not isinstance(value, Mapping):
        return {}
    return {
        k: _reinforcement_extra(k, value[k], f"{prefix}.{k}")
        for k in sorted(METHOD_HYPERPARAMETERS["reinforcement"])
        if k in value
    }


def parse_hyperparameters(value: Any, prefix: str, method: str = "supervised") -> Hyperparameters:
    """A ``hyperparameters`` object (at ``prefix`` in the body); absent ones are ``"auto"``."""
    if value is None:
        return Hyperparameters()
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"Invalid '{prefix}': expected an object.", param=prefix)
    own = METHOD_HYPERPARAMETERS.get(method, frozenset())
    unknown = sorted(
        set(value) - set(_LIMITS) - own - ({"beta"} if method == "supervised" else set())
    )
    if unknown:
        raise InvalidRequestError(
            f"Unrecognized hyperparameter '{unknown[0]}'.", param=f"{prefix}.{unknown[0]}"
        )
    got = {k: _number(k, value.get(k), f"{prefix}.{k}") for k in _LIMITS}
    return Hyperparameters(**got)  # type: ignore[arg-type]


def _method(body: Mapping[str, Any]) -> tuple[str, dict[str, Any], Hyperparameters]:
    top = body.get("hyperparameters")
    method = body.get("method")
    if method is None:
        return "supervised", {}, parse_hyperparameters(top, "hyperparameters")
    if not isinstance(method, Mapping):
        raise InvalidRequestError("Invalid 'method': expected an object.", param="method")
    mtype = method.get("type", "supervised")
    if mtype not in METHODS:
        raise InvalidRequestError(
            f"Invalid 'method.type': expected one of {', '.join(METHODS)}.", param="method.type"
        )
    section = method.get(mtype) or {}
    if not isinstance(section, Mapping):
        raise InvalidRequestError(f"Invalid 'method.{mtype}'.", param=f"method.{mtype}")
    prefix = f"method.{mtype}.hyperparameters"
    hyper = parse_hyperparameters(section.get("hyperparameters"), prefix, str(mtype))
    method_extras(str(mtype), section.get("hyperparameters"), prefix)
    if mtype == "reinforcement":
        _check_reinforcement(section)
    if top:
        legacy = parse_hyperparameters(top, "hyperparameters")
        if section.get("hyperparameters") and legacy != hyper:
            raise InvalidRequestError(
                "Specify hyperparameters either in 'method' or in the deprecated top-level "
                "'hyperparameters', not both.",
                param="hyperparameters",
            )
        hyper = legacy
    return str(mtype), dict(section), hyper


REINFORCEMENT_FIELDS = frozenset({"grader", "hyperparameters", "response_format"})


def _check_reinforcement(section: Mapping[str, Any]) -> None:
    """The shape of ``method.reinforcement`` (the grader itself is built by the backend)."""
    unknown = sorted(set(section) - REINFORCEMENT_FIELDS)
    if unknown:
        raise InvalidRequestError(
            f"Unrecognized argument supplied: 'method.reinforcement.{unknown[0]}'.",
            param=f"method.reinforcement.{unknown[0]}",
        )
    grader = section.get("grader")
    if grader is None:
        raise InvalidRequestError(
            "Missing required parameter: 'method.reinforcement.grader'.",
            param="method.reinforcement.grader",
            code="missing_required_parameter",
        )
    if not isinstance(grader, Mapping):
        raise InvalidRequestError(
            "Invalid 'method.reinforcement.grader': expected a grader object.",
            param="method.reinforcement.grader",
        )
    fmt = section.get("response_format")
    if fmt is not None and not isinstance(fmt, Mapping):
        raise InvalidRequestError(
            "Invalid 'method.reinforcement.response_format': expected an object.",
            param="method.reinforcement.response_format",
        )


def parse_create(body: Any) -> CreateRequest:
    """Check a ``POST /v1/fine_tuning/jobs`` body as OpenAI does (a 400 naming the ``param``)."""
    if not isinstance(body, Mapping):
        raise InvalidRequestError("The request body must be a JSON object.")
    unknown = sorted(set(body) - KNOWN_PARAMS)
    if unknown:
        raise InvalidRequestError(
            f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0]
        )
    model = _string(body, "model", required=True)
    training_file = _string(body, "training_file", required=True)
    assert model is not None and training_file is not None
    mtype, section, hyper = _method(body)
    integrations = body.get("integrations")
    if integrations is not None and not isinstance(integrations, list):
        raise InvalidRequestError("Invalid 'integrations': expected a list.", param="integrations")
    raw_extras = body.get("distillery") or {}
    if not isinstance(raw_extras, Mapping):
        raise InvalidRequestError("Invalid 'distillery': expected an object.", param="distillery")
    extras = dict(raw_extras)
    backend = extras.pop("backend", None)
    if backend is not None and not (isinstance(backend, str) and backend):
        raise InvalidRequestError(
            "Invalid 'distillery.backend': expected the name of a trainer kind.",
            param="distillery.backend",
        )
    return CreateRequest(
        model=model,
        training_file=training_file,
        validation_file=_string(body, "validation_file", required=False),
        suffix=_suffix(body.get("suffix")),
        seed=_seed(body.get("seed")),
        metadata=validate_metadata(body.get("metadata")),
        method_type=mtype,
        method=section,
        hyperparameters=hyper,
        integrations=integrations,
        extras=extras,
        backend=backend,
    )


# --- the stored bodies --------------------------------------------------------------------------

ORGANIZATION_ID = "org-distillery"
CHECKPOINT_METRICS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
    # reinforcement jobs: the mean reward of the step's samples and of the validation prompts
    "reward_mean",
    "valid_reward_mean",
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


def event_body(event_id: str, created_at: int, event: TrainingEvent) -> dict[str, Any]:
    """A ``fine_tuning.job.event`` (its ``id`` stands for the event's ``key``)."""
    return {
        "id": event_id,
        "object": "fine_tuning.job.event",
        "created_at": created_at,
        "level": event.level,
        "message": event.message,
        "type": event.type,
        "data": event.data,
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


# --- the documentation models (api.openapi) -----------------------------------------------------

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]


class JobCreateParams(WireModel):
    """``POST /v1/fine_tuning/jobs``; distillery's own training options go in ``distillery``."""

    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = Field(default=None, max_length=SUFFIX_MAX)
    seed: int | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    method: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    integrations: list[dict[str, Any]] | None = None
    distillery: dict[str, Any] | None = None


class _JobObject(WireModel):
    """What the job, its events and its checkpoints share: an OpenAI object's head, and stored
    bodies that may hold more than is documented."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str  # each subclass names its own (the field keeps its place)
    created_at: int


class FineTuningJob(_JobObject):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
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


class FineTuningJobEvent(_JobObject):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] | None = None
    data: dict[str, Any] | None = None


class FineTuningJobCheckpoint(_JobObject):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float]
