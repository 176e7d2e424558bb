"""Fine-tuning jobs (OpenAI's ``fine_tuning.job``): the service behind ``/v1/fine_tuning/jobs``,
the ``jobs`` CLI and the job worker.

The state machine::

    validating_files ──> queued ──> running ──> succeeded
           │               │           ├──────> failed
           └──> failed     └──> cancelled <─────┘ (cancel)

``create`` checks the request (400 with ``param``) and records the job in ``validating_files``. A
worker then claims it (one conditional ``UPDATE``, see ``store.jobs``), checks the JSONL files (a
job with invalid data fails here, with an ``error`` and an event that say why) and queues it; a
worker with free capacity claims the queued job as ``running``, starts its backend
(``training.base.TrainingBackend``) and mirrors what the backend reports (events, checkpoints, the
result) into the store until the job ends. Workers send heartbeats; a running job whose worker has
been silent for ``stale_after_s`` is reclaimed by another and resumed from its last checkpoint.

On success the fine-tuned model (``ft:<base>:<suffix>:<short-id>``) is registered in
``fine_tuned_models`` *before* the job is marked ``succeeded``, so it is servable the moment a
client sees the job succeed. Each checkpoint is registered too, as
``ft:<base>:<suffix>:<short-id>:ckpt-step-<N>``.

The parts: ``job_files`` (inputs checked at create and by a worker, the result file),
``job_wire`` (the job's wire shape: the create request, the OpenAI bodies of jobs, events and
checkpoints), ``job_ledger`` (events, failures and model announcements, shared by the service and
the runner), ``job_claims`` (claims, heartbeats, releases; the spec a stored job describes) and
``job_runner`` (a claimed job's run). This module is the service the HTTP and CLI edges call; the
job worker calls its ``claims`` directly, and ``on_model`` (who serves a new model) is its
``ledger``'s.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from distillery import ids
from distillery.errors import InvalidRequestError
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.store.jobs import TERMINAL, BodyRecord, JobRecord, JobsRepo, Order
from distillery.store.models import FineTunedModel, FineTunedModelsRepo
from distillery.store.records import Page
from distillery.training.base import FineTuneSpec
from distillery.training.inputs import FileSource, InputFile
from distillery.training.job_claims import STALE_AFTER_S, JobClaims
from distillery.training.job_files import FINE_TUNE_PURPOSE, count_examples, input_file
from distillery.training.job_ids import fine_tuned_model_id, new_worker_id
from distillery.training.job_ledger import JobLedger
from distillery.training.job_runner import JobRunner
from distillery.training.job_wire import checkpoint_public, job_body, parse_create
from distillery.training.registry import TrainingRegistry

HEARTBEAT_S = 5.0  # how often a job run inline (``wait(inline=True)``) tells it is alive


class FineTuningService:
    """The jobs behind the API: ``ledger`` records each job's story (and tells ``on_model`` of
    new models), ``claims`` hands jobs to the workers that run them."""

    def __init__(
        self,
        *,
        jobs: JobsRepo,
        models: FineTunedModelsRepo,
        registry: TrainingRegistry,
        files: FileSource,
        home: Path,
        on_model: Callable[[FineTunedModel], None] | None = None,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.jobs = jobs
        self.models = models
        self.registry = registry
        self.files = files
        self.jobs_root = home / "jobs"
        self.ledger = JobLedger(jobs, models, files, on_model)
        self.claims = JobClaims(
            jobs, registry, self.ledger, jobs_root=self.jobs_root, stale_after_s=stale_after_s
        )

    # -- the API ---------------------------------------------------------------------------------

    def create(self, body: Any) -> dict[str, Any]:
        """Check a ``POST /v1/fine_tuning/jobs`` body and record the job (``validating_files``)."""
        req = parse_create(body)
        start = self._start_model(req.model)
        base = start.base_model if start is not None else req.model
        resolved = self.registry.resolve(base, backend=req.backend)
        training = input_file(self.files, req.training_file, "training_file")
        validation = (
            input_file(self.files, req.validation_file, "validation_file")
            if req.validation_file
            else None
        )
        job_id = ids.new_id(ids.FINE_TUNING_JOB)
        spec = FineTuneSpec(
            job_id=job_id,
            model=req.model,
            provider=resolved.provider,
            training_file=training.id,
            training_path=training.path,
            validation_file=validation.id if validation else None,
            validation_path=validation.path if validation else None,
            hyperparameters=req.hyperparameters,
            seed=req.seed,
            suffix=req.suffix,
            job_dir=self.jobs_root / job_id,
            training_examples=count_examples(training.path),
            method={"type": req.method_type, req.method_type: req.method},
            extras=req.extras,
            model_path=resolved.model_path,
            base_model=start.base_model if start is not None else None,
            start_adapter=start.adapter_path if start is not None else None,
        )
        hyper = resolved.backend.validate(spec)
        created_at = int(time.time())
        record = self.jobs.insert(
            job_id=job_id,
            created_at=created_at,
            status="validating_files",
            backend=resolved.kind,
            body=job_body(req, job_id, created_at, hyper, training, validation),
            state={
                "provider": resolved.provider,
                "model_path": spec.model_path,
                "training_path": str(training.path),
                "validation_path": str(validation.path) if validation else None,
                "training_examples": spec.training_examples,
                "extras": req.extras,
                "method": dict(spec.method),
                "requested_hyperparameters": req.hyperparameters.to_dict(),
                "model_id": fine_tuned_model_id(base, req.suffix, job_id),
                "base_model": base,
                "start_model": req.model if start is not None else None,
                "start_adapter": spec.start_adapter,
                "restarts": 0,
            },
        )
        files = training.id + (f" and validation file: {validation.id}" if validation else "")
        self.ledger.event(job_id, f"Validating training file: {files}")
        return record.to_object()

    def _start_model(self, model: str) -> FineTunedModel | None:
        """The fine-tuned model a job starts from (``model`` an ``ft:`` id), else None."""
        if not model.startswith("ft:"):
            return None
        found = self.models.get(model)
        if found is None:
            raise InvalidRequestError(
                f"Model {model} does not exist.", param="model", code="model_not_found"
            )
        if not found.adapter_path:
            raise InvalidRequestError(
                f"Model {model} has no local weights to continue from (a provider's model); "
                "fine-tune it with its provider.",
                param="model",
                code="model_not_available",
            )
        return found

    def create_from_paths(
        self,
        *,
        model: str,
        training: Path,
        validation: Path | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Upload local JSONL files (purpose ``fine-tune``) and create a job on them."""
        body: dict[str, Any] = {
            "model": model,
            **{k: v for k, v in params.items() if v is not None},
        }
        body["training_file"] = self.upload(training).id
        if validation is not None:
            body["validation_file"] = self.upload(validation).id
        return self.create(body)

    def upload(self, path: Path) -> InputFile:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise InvalidRequestError(f"cannot read {path}: {exc}", param="file") from exc
        return self.files.add(content, filename=path.name, purpose=FINE_TUNE_PURPOSE)

    def retrieve(self, job_id: str) -> dict[str, Any]:
        return self.jobs.get(job_id).to_object()

    def list(
        self,
        *,
        after: str | None = None,
        limit: int = 20,
        metadata: Mapping[str, str] | None = None,
        order: Order = "desc",
        status: str | None = None,
    ) -> Page[dict[str, Any]]:
        page = self.jobs.list(
            after=after, limit=limit, metadata=metadata, order=order, status=status
        )
        return Page(data=[j.to_object() for j in page.data], has_more=page.has_more)

    def events(
        self, job_id: str, *, after: str | None = None, limit: int = 20, order: Order = "desc"
    ) -> Page[dict[str, Any]]:
        page = self.jobs.events(job_id, after=after, limit=limit, order=order)
        return Page(data=[e.body for e in page.data], has_more=page.has_more)

    def checkpoints(
        self, job_id: str, *, after: str | None = None, limit: int = 10, order: Order = "desc"
    ) -> Page[dict[str, Any]]:
        page = self.jobs.checkpoints(job_id, after=after, limit=limit, order=order)
        return Page(data=[checkpoint_public(c.body) for c in page.data], has_more=page.has_more)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job that has not ended; its worker stops the training within seconds."""
        updated = self.jobs.update(
            job_id,
            status="cancelled",
            cancel_requested=True,
            body={"finished_at": int(time.time()), "estimated_finish": None},
            expect_status=("validating_files", "queued", "running"),
        )
        if updated is None:
            job = self.jobs.get(job_id)
            raise InvalidRequestError(
                f"Job {job_id} has already {job.status}; only a job that has not ended can be "
                "cancelled.",
                param="fine_tuning_job_id",
                code="job_not_cancellable",
            )
        self.ledger.event(job_id, "Fine-tuning job cancelled")
        return updated.to_object()

    # -- the stored records, for the dashboard's job pages ----------------------------------------

    def job_record(self, job_id: str) -> JobRecord:
        """A job as stored (404 when unknown)."""
        return self.jobs.get(job_id)

    def job_records(
        self,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Order = "desc",
        status: str | None = None,
    ) -> Page[JobRecord]:
        return self.jobs.list(after=after, limit=limit, order=order, status=status)

    def all_events(self, job_id: str) -> builtins.list[BodyRecord]:
        """Every event of a job, oldest first."""
        return self.jobs.all_events(job_id)

    def checkpoint_records(
        self, job_id: str, *, limit: int = 10, order: Order = "desc"
    ) -> Page[BodyRecord]:
        return self.jobs.checkpoints(job_id, limit=limit, order=order)

    # -- fine-tuned models (the students jobs made, and models registered by hand) ---------------

    def list_models(self) -> builtins.list[FineTunedModel]:
        """Every fine-tuned model, oldest first."""
        return self.models.list()

    def get_model(self, model_id: str) -> FineTunedModel | None:
        return self.models.get(model_id)

    def delete_model(self, model_id: str) -> bool:
        """Remove a fine-tuned model from the store; whether it was there."""
        return self.models.delete(model_id)

    # -- following a job -------------------------------------------------------------------------

    def wait(
        self,
        job_id: str,
        *,
        progress: ProgressCallback | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        inline: bool = False,
    ) -> dict[str, Any]:
        """Follow a job until it ends and return it; ``progress`` gets step/total/loss.

        With ``inline`` this process runs the job (claiming it like a worker) whenever no worker
        holds it, as a script without a job worker needs; a job another worker holds is followed.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        worker_id = new_worker_id("inline")
        runner: JobRunner | None = None
        beat = time.monotonic()
        try:
            while True:
                job = self.jobs.get(job_id)
                report_job(progress, job)
                if runner is None and job.finished:
                    return job.to_object()
                if runner is None and inline:
                    runner = self.claims.try_claim(job, worker_id, busy={})
                if runner is not None and runner.step():
                    runner = None  # it ended: the next poll returns it
                    continue
                if runner is not None and time.monotonic() - beat > HEARTBEAT_S:
                    self.claims.heartbeat(worker_id, [job_id])
                    beat = time.monotonic()
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} is still {job.status}")
                time.sleep(poll_s)
        finally:
            if runner is not None:
                self.claims.release(worker_id, [job_id])


def report_job(progress: ProgressCallback | None, job: JobRecord) -> None:
    """One progress event for a job: step/total and the last loss (for bars)."""
    if progress is None:
        return
    p = job.state.get("progress") or {}
    info: dict[str, Any] = {"status": job.status}
    for key in ("epoch", "train_loss", "valid_loss"):
        if p.get(key) is not None:
            info[key] = p[key]
    total = p.get("total_steps")
    report(
        progress,
        ProgressEvent(
            task="fine-tuning",
            completed=float(p.get("step") or 0),
            total=float(total) if total else None,
            info=info,
        ),
    )


# TERMINAL, BodyRecord and JobRecord: the records the job methods return, for the edges
__all__ = [
    "FINE_TUNE_PURPOSE",
    "TERMINAL",
    "BodyRecord",
    "FineTuningService",
    "JobRecord",
    "JobRunner",
    "new_worker_id",
]
