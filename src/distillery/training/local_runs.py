"""The local trainer seen through the ``TrainingBackend`` seam.

``distillery.training.local.backend.LocalTrainingBackend`` speaks the job-folder protocol (write
``job.json``, start ``python -m distillery.training.local.worker <job_dir>``, read
``events.jsonl`` and ``result.json``, cancel with a ``cancel`` file + SIGTERM). This class maps it
onto the seam: the handle is the job folder; OpenAI's hyperparameters and the ``distillery``
extension fields become a ``LocalSFTConfig``; ``"auto"`` is resolved with the trainer's own
``resolve_auto``; trainer events become job events (keyed by line number, so re-reading the file
after a restart mirrors each once) and checkpoint events become checkpoints; a worker that died
without a result is reported ``lost`` so the job service starts it again, which resumes from its
last checkpoint.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError

from distillery.errors import ConflictError, InvalidRequestError
from distillery.providers.local import LocalProviderConfig
from distillery.settings import ProviderConfig
from distillery.training.base import (
    FineTuneSpec,
    Hyperparameters,
    JobError,
    JobProgress,
    TrainerContext,
    TrainerKind,
    TrainingCheckpoint,
    TrainingEvent,
    level_of,
)
from distillery.training.local.backend import LocalTrainingBackend, worker_alive
from distillery.training.local.config import LocalSFTConfig
from distillery.wire.params import invalid_request

# set through OpenAI's own parameters, not through the `distillery` extension
_RESERVED = frozenset(
    {
        "base_model", "base_model_path", "n_epochs", "batch_size", "learning_rate_multiplier",
        "seed", "chat_template",  # the provider's setting: trained as it is served
    }
)  # fmt: skip
_KILL_AFTER_S = 15.0


def _read_pid(job_dir: Path) -> int | None:
    try:
        return int((job_dir / "worker.pid").read_text().strip())
    except (OSError, ValueError):
        return None


class LocalRunBackend:
    """LoRA (or full) fine-tuning of a local provider's model, one subprocess per job."""

    name: ClassVar[str] = "local"

    def __init__(
        self,
        *,
        defaults: Mapping[str, Any] | None = None,
        concurrency: int = 1,
        provider: LocalProviderConfig | None = None,
    ) -> None:
        """``provider``: the local provider serving the base models (its ``chat_template``)."""
        self.defaults = {k: v for k, v in (defaults or {}).items() if v is not None}
        self.provider = provider
        self.concurrency = concurrency
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._offsets: dict[str, tuple[int, int]] = {}  # handle -> (byte offset, lines read)
        self._cancelled_at: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- configuration ---------------------------------------------------------------------------

    def config(self, spec: FineTuneSpec) -> LocalSFTConfig:
        method = str(spec.method.get("type") or "supervised")
        if method != "supervised":
            raise InvalidRequestError(
                f"Method '{method}' is not available for local models; use 'supervised'.",
                param="method.type",
            )
        reserved = sorted(set(spec.extras) & _RESERVED)
        if reserved:
            raise InvalidRequestError(
                f"'distillery.{reserved[0]}' is set through the job's own parameters.",
                param=f"distillery.{reserved[0]}",
            )
        hyper = spec.hyperparameters
        values: dict[str, Any] = {
            **self.defaults,
            **spec.extras,
            "base_model": spec.model,
            "base_model_path": spec.model_path,
            "chat_template": self.provider.chat_template_for(spec.model) if self.provider else None,
            "n_epochs": hyper.n_epochs,
            "batch_size": hyper.batch_size,
            "learning_rate_multiplier": hyper.learning_rate_multiplier,
            "seed": spec.seed,
        }
        try:
            return LocalSFTConfig.model_validate(values)
        except ValidationError as exc:
            top = str(exc.errors()[0].get("loc", ("",))[0])
            prefix = "distillery" if top in spec.extras else None
            raise invalid_request(exc, prefix=prefix) from None

    def validate(self, spec: FineTuneSpec) -> Hyperparameters:
        resolved = self.config(spec).resolve_auto(spec.training_examples)
        return Hyperparameters(
            n_epochs=int(resolved.n_epochs),
            batch_size=int(resolved.batch_size),
            learning_rate_multiplier=float(resolved.learning_rate_multiplier),
        )

    # -- runs ------------------------------------------------------------------------------------

    def start(self, spec: FineTuneSpec, *, resume: str | None = None) -> str:
        job_dir = Path(resume) if resume else spec.job_dir
        handle = str(job_dir)
        if worker_alive(_read_pid(job_dir)) or (job_dir / "result.json").exists():
            return handle  # still running (re-attach), or finished: poll reports it
        if not (job_dir / "job.json").exists():
            config = self.config(spec).resolve_auto(spec.training_examples)
            LocalTrainingBackend.write_job(
                job_dir, config, spec.training_path, spec.validation_path
            )
        try:
            proc = LocalTrainingBackend.start(job_dir)
        except ConflictError:
            return handle
        with self._lock:
            self._procs[handle] = proc
        return handle

    def poll(self, handle: str) -> JobProgress:
        job_dir = Path(handle)
        with self._lock:
            offset, lines = self._offsets.get(handle, (0, 0))
            found = LocalTrainingBackend.poll(job_dir, offset)
            self._offsets[handle] = (found.next_offset, lines + len(found.events))
            proc = self._procs.get(handle)
            if proc is not None and proc.poll() is not None:
                self._procs.pop(handle, None)  # reaped
        events, checkpoints, step, total = self._convert(found.events, lines)
        result = found.result or {}
        status = found.status
        if status == "running":
            self._kill_if_stuck(handle)
            return JobProgress(
                status="running", events=events, checkpoints=checkpoints, step=step,
                total_steps=total,
            )  # fmt: skip
        hyper = result.get("hyperparameters")
        common: dict[str, Any] = {
            "events": events,
            "checkpoints": checkpoints,
            "step": step,
            "total_steps": total,
            "trained_tokens": result.get("trained_tokens"),
            "metrics": result.get("metrics") or {},
            "hyperparameters": Hyperparameters(**hyper) if isinstance(hyper, dict) else None,
        }
        if status == "succeeded":
            return JobProgress(
                status="succeeded", adapter_path=result.get("adapter_path"), **common
            )
        if status == "cancelled" or handle in self._cancelled_at:
            return JobProgress(status="cancelled", **common)
        if found.resumable:
            return JobProgress(status="lost", **common)
        err = result.get("error") or {}
        error = JobError(
            code=str(err.get("code") or "training_error"),
            message=str(err.get("message") or "the training failed"),
        )
        return JobProgress(status="failed", error=error, **common)

    def cancel(self, handle: str) -> None:
        self._cancelled_at.setdefault(handle, time.monotonic())
        LocalTrainingBackend.cancel(Path(handle))

    def _kill_if_stuck(self, handle: str) -> None:
        asked = self._cancelled_at.get(handle)
        if asked is not None and time.monotonic() - asked > _KILL_AFTER_S:
            LocalTrainingBackend.cancel(Path(handle), timeout=1.0)

    # -- events ----------------------------------------------------------------------------------

    @staticmethod
    def _convert(
        raw: list[dict[str, Any]], first_line: int
    ) -> tuple[list[TrainingEvent], list[TrainingCheckpoint], int | None, int | None]:
        events: list[TrainingEvent] = []
        checkpoints: list[TrainingCheckpoint] = []
        step = total = None
        for i, e in enumerate(raw):
            data = e.get("data") if isinstance(e.get("data"), dict) else None
            created = e.get("created_at")
            created_at = int(created) if isinstance(created, int | float) else None
            if e.get("type") == "checkpoint" and data is not None:
                metrics = {
                    k: float(v)
                    for k, v in (data.get("metrics") or {}).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
                checkpoints.append(
                    TrainingCheckpoint(
                        step=int(data.get("step") or 0),
                        epoch=data.get("epoch"),
                        metrics=metrics,
                        adapter_path=str(data["path"]) if data.get("path") else None,
                        created_at=created_at,
                    )
                )
                continue
            is_metrics = e.get("type") == "metrics"
            if is_metrics and data is not None:
                step = data.get("step", step)
                total = data.get("total_steps", total)
            events.append(
                TrainingEvent(
                    key=f"line:{first_line + i}",
                    message=str(e.get("message") or ""),
                    level=level_of(e.get("level")),
                    type="metrics" if is_metrics else "message",
                    data=data,
                    created_at=created_at,
                )
            )
        return events, checkpoints, step, total


def _trains(config: ProviderConfig) -> bool:
    """Models whose weights are here: a ``local`` provider's (embedded or at a path)."""
    return isinstance(config, LocalProviderConfig)


def _build(context: TrainerContext) -> LocalRunBackend:
    config = context.provider_config
    assert isinstance(config, LocalProviderConfig)
    training = context.training
    defaults = {"device": training.device, "threads": training.threads, "devices": training.devices}
    return LocalRunBackend(defaults=defaults, provider=config)


LOCAL_TRAINER = TrainerKind(
    kind="local",
    trains=_trains,
    build=_build,
    summary="LoRA or full fine-tuning in a subprocess on this machine (transformers + PEFT), "
    "checkpointed and resumable.",
)
