"""The TrainingBackend seam and the values that cross it.

A backend trains a base model on an OpenAI fine-tuning JSONL file. The job service
(``distillery.training.jobs``) owns the job's state machine and the store; a worker drives a
backend through four calls:

- ``validate(spec)`` once the files are parsed: raise ``InvalidRequestError`` (with ``param``) when
  the backend cannot train this spec; return the hyperparameters with every ``"auto"`` resolved
  (a remote backend may keep ``"auto"`` and report the values later through ``poll``);
- ``start(spec, resume=handle)`` begins a run and returns its *handle*, a string the job service
  persists. After a worker crash or restart the job is reclaimed and ``start`` is called again with
  the old handle: the backend re-attaches to a run that is still going, or restarts it from its
  last checkpoint;
- ``poll(handle)`` reports the run: its status, the events and checkpoints seen since the last poll
  (each with a ``key`` that is stable within the job, so that a new process that re-reads them from
  the start mirrors each one once), and at the end the result;
- ``cancel(handle)`` asks the run to stop; a later ``poll`` reports ``cancelled``.

A *trainer kind* (:class:`TrainerKind`) is what ``[training] backend`` or a job's
``distillery.backend`` names: which providers' models it can train, its options model (the
``[training.backends.KIND]`` table) and how to build a backend for one provider. The built-in
kinds (``local``, ``openai``) and plugins are found the same way (``distillery.plugins``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from distillery.settings import ProviderConfig, TrainingConfig

Auto = Literal["auto"]
Level = Literal["info", "warn", "error"]
_LEVELS: dict[str, Level] = {"info": "info", "warn": "warn", "warning": "warn", "error": "error"}
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "lost"]
"""``lost``: the run stopped without a result (its process died); the worker restarts it."""


@dataclass(frozen=True)
class Hyperparameters:
    """OpenAI's supervised hyperparameters: each a number or ``"auto"``."""

    n_epochs: int | Auto = "auto"
    batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = "auto"

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }


@dataclass(frozen=True)
class FineTuneSpec:
    """Everything a backend needs to train one job (built by the job service)."""

    job_id: str
    model: str  # the base model, as the client named it
    provider: str  # the configured provider that serves the base model
    training_file: str  # file ids as the client gave them
    training_path: Path
    validation_file: str | None
    validation_path: Path | None
    hyperparameters: Hyperparameters
    seed: int
    suffix: str | None
    job_dir: Path  # $DISTILLERY_HOME/jobs/<job_id>/, created by the job service
    training_examples: int = 0
    method: Mapping[str, Any] = field(default_factory=dict)  # the OpenAI `method` object
    extras: Mapping[str, Any] = field(default_factory=dict)  # the `distillery` extension field
    model_path: str | None = None  # the provider's configured weights for the base, if any
    # a job on a fine-tuned model (``ft:...``, the reinforcement method): the base it was
    # trained from and its adapter folder, which the run starts from
    base_model: str | None = None
    start_adapter: str | None = None


@dataclass(frozen=True)
class TrainingEvent:
    """One event of a run, as OpenAI's ``fine_tuning.job.event`` (``type`` message or metrics)."""

    key: str  # stable within the job (line number, remote event id)
    message: str
    level: Level = "info"
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None
    created_at: int | None = None


def level_of(value: Any) -> Level:
    """An event level from untrusted data (``info`` when unknown)."""
    return _LEVELS.get(str(value), "info")


@dataclass(frozen=True)
class TrainingCheckpoint:
    """A usable checkpoint: a local adapter folder, or a remote checkpoint model."""

    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    epoch: int | None = None
    adapter_path: str | None = None
    remote_model: str | None = None
    created_at: int | None = None


@dataclass(frozen=True)
class JobError:
    code: str
    message: str
    param: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param}


@dataclass(frozen=True)
class JobProgress:
    """What ``poll`` saw. ``events``/``checkpoints`` are new since the previous poll (repeats are
    harmless: the job service mirrors each ``key`` once)."""

    status: RunStatus
    events: list[TrainingEvent] = field(default_factory=list)
    checkpoints: list[TrainingCheckpoint] = field(default_factory=list)
    step: int | None = None
    total_steps: int | None = None
    trained_tokens: int | None = None
    hyperparameters: Hyperparameters | None = None  # resolved values, when the backend knows them
    adapter_path: str | None = None  # local result
    remote_model: str | None = None  # remote result (the provider's fine_tuned_model)
    error: JobError | None = None
    estimated_finish: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class TrainingBackend(Protocol):
    name: ClassVar[str]  # "local", "openai"
    concurrency: int  # how many runs one worker drives at once with this backend

    def validate(self, spec: FineTuneSpec) -> Hyperparameters: ...

    def start(self, spec: FineTuneSpec, *, resume: str | None = None) -> str: ...

    def poll(self, handle: str) -> JobProgress: ...

    def cancel(self, handle: str) -> None: ...


class NoOptions(BaseModel):
    """The options of a trainer kind that has none (its table must be empty)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class TrainerContext:
    """What a trainer kind gets to build a backend for the models of one provider."""

    provider: str  # the provider that serves the base models
    provider_config: ProviderConfig
    options: Any  # the kind's ``[training.backends.KIND]`` table, validated with its model
    training: TrainingConfig
    home: Path
    # every configured provider: the judge models of a reinforcement job's graders are called
    # through them from the training process
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainerKind:
    """A trainer kind: what ``[training] backend`` or a job's ``distillery.backend`` names.

    ``trains(provider_config)`` says whether it can train that provider's models (the default
    backend of a model is the first kind that can); ``build(context)`` returns the backend.
    """

    kind: str
    trains: Callable[[ProviderConfig], bool]
    build: Callable[[TrainerContext], TrainingBackend]
    config: type[BaseModel] = NoOptions
    summary: str = ""
