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
"""

from __future__ import annotations

import builtins
import csv
import hashlib
import io
import logging
import os
import secrets
import socket
import string
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from distillery import ids
from distillery.errors import DistilleryError, InvalidRequestError, NotFoundError
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.store.jobs import JobRecord, JobsRepo, Order
from distillery.store.models import FineTunedModel, FineTunedModelsRepo
from distillery.store.records import Page
from distillery.training.base import (
    FineTuneSpec,
    Hyperparameters,
    JobError,
    JobProgress,
    TrainingBackend,
    TrainingCheckpoint,
)
from distillery.training.inputs import FileSource, InputFile
from distillery.training.params import CreateRequest, parse_create
from distillery.training.registry import TrainingRegistry
from distillery.wire.fine_tuning_jsonl import MIN_EXAMPLES, validate_jsonl

log = logging.getLogger("distillery.training")

ORGANIZATION_ID = "org-distillery"
FINE_TUNE_PURPOSE = "fine-tune"
STALE_AFTER_S = 60.0
MAX_RESTARTS = 3
MAX_POLL_FAILURES = 30
CANCEL_GRACE_S = 60.0
CHECKPOINT_METRICS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)
_B62 = string.digits + string.ascii_letters


def _checkpoint_public(body: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint without unmeasured metrics (stored as ``null`` before; they are optional)."""
    metrics = body.get("metrics")
    if isinstance(metrics, dict) and None in metrics.values():
        body = {**body, "metrics": {k: v for k, v in metrics.items() if v is not None}}
    return body


def stable_id(prefix: str, *parts: str, length: int = 24) -> str:
    """An id derived from ``parts``: mirroring the same backend output twice gives the same id."""
    n = int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest(), "big")
    chars = []
    for _ in range(length):
        n, r = divmod(n, 62)
        chars.append(_B62[r])
    return prefix + "".join(chars)


def short_id(job_id: str) -> str:
    return job_id.removeprefix(ids.FINE_TUNING_JOB)[:8]


def fine_tuned_model_id(base: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{base}:{suffix or ''}:{short_id(job_id)}"


def checkpoint_model_id(model_id: str, step: int) -> str:
    return f"{model_id}:ckpt-step-{step}"


def _count_examples(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return 0


def new_worker_id(kind: str = "worker") -> str:
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class FineTuningService:
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
        self.on_model = on_model
        self.stale_after_s = stale_after_s

    # -- the API ---------------------------------------------------------------------------------

    def create(self, body: Any) -> dict[str, Any]:
        """Check a ``POST /v1/fine_tuning/jobs`` body and record the job (``validating_files``)."""
        req = parse_create(body)
        resolved = self.registry.resolve(req.model, backend=req.backend)
        training = self._input(req.training_file, "training_file")
        validation = (
            self._input(req.validation_file, "validation_file") if req.validation_file else None
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
            training_examples=_count_examples(training.path),
            method={"type": req.method_type, req.method_type: req.method},
            extras=req.extras,
            model_path=resolved.model_path,
        )
        hyper = resolved.backend.validate(spec)
        created_at = int(time.time())
        record = self.jobs.insert(
            job_id=job_id,
            created_at=created_at,
            status="validating_files",
            backend=resolved.kind,
            body=self._job_body(req, job_id, created_at, hyper, training, validation),
            state={
                "provider": resolved.provider,
                "model_path": spec.model_path,
                "training_path": str(training.path),
                "validation_path": str(validation.path) if validation else None,
                "training_examples": spec.training_examples,
                "extras": req.extras,
                "method": dict(spec.method),
                "requested_hyperparameters": req.hyperparameters.to_dict(),
                "model_id": fine_tuned_model_id(req.model, req.suffix, job_id),
                "restarts": 0,
            },
        )
        files = training.id + (f" and validation file: {validation.id}" if validation else "")
        self._event(job_id, f"Validating training file: {files}")
        return record.to_object()

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
        return Page(data=[_checkpoint_public(c.body) for c in page.data], has_more=page.has_more)

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
        self._event(job_id, "Fine-tuning job cancelled")
        return updated.to_object()

    # -- following a job -------------------------------------------------------------------------

    def wait(
        self,
        job_id: str,
        *,
        progress: ProgressCallback | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Follow a job (run by some worker) until it ends; ``progress`` gets step/total/loss."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.jobs.get(job_id)
            report_job(progress, job)
            if job.finished:
                return job.to_object()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.status}")
            time.sleep(poll_s)

    def run(
        self,
        job_id: str,
        *,
        progress: ProgressCallback | None = None,
        poll_s: float = 0.5,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        """Run a job in this process (claiming it like a worker) and return it once it ends.

        If another worker holds the job, this follows it instead.
        """
        worker_id = worker_id or new_worker_id("inline")
        runner: JobRunner | None = None
        beat = time.monotonic()
        try:
            while True:
                if runner is None:
                    job = self.jobs.get(job_id)
                    report_job(progress, job)
                    if job.finished:
                        return job.to_object()
                    runner = self.try_claim(job, worker_id, busy={})
                if runner is not None:
                    if runner.step():
                        runner = None
                        continue
                    report_job(progress, self.jobs.get(job_id))
                    if time.monotonic() - beat > 5:
                        self.heartbeat(worker_id, [job_id])
                        beat = time.monotonic()
                time.sleep(poll_s)
        finally:
            if runner is not None:
                self.release(worker_id, [job_id])

    # -- worker side -----------------------------------------------------------------------------

    def claim_next(self, worker_id: str, *, busy: Mapping[str, int]) -> JobRunner | None:
        """Claim the oldest job this worker can take now (``busy``: runs per provider)."""
        stale_before = time.time() - self.stale_after_s
        for job in self.jobs.claimable(stale_before=stale_before, limit=20):
            runner = self.try_claim(job, worker_id, busy=busy)
            if runner is not None:
                return runner
        return None

    def try_claim(
        self, job: JobRecord, worker_id: str, *, busy: Mapping[str, int]
    ) -> JobRunner | None:
        now = time.time()
        stale_before = now - self.stale_after_s
        if job.status == "validating_files":
            if self.jobs.claim(
                job.id,
                worker_id=worker_id,
                from_status="validating_files",
                to_status="validating_files",
                now=now,
                stale_before=stale_before,
            ):
                self._validate_files(job.id, worker_id)
            return None
        provider = str(job.state.get("provider"))
        try:
            backend = self.registry.backend(job.backend, provider)
        except DistilleryError as exc:
            if self._claim_for_failure(job, worker_id, now, stale_before):
                self._fail(job.id, worker_id, JobError("backend_unavailable", exc.message))
            return None
        if busy.get(provider, 0) >= backend.concurrency:
            return None
        resumed = job.status == "running"
        if not self.jobs.claim(
            job.id,
            worker_id=worker_id,
            from_status=job.status,
            to_status="running",
            now=now,
            stale_before=stale_before if resumed else None,
        ):
            return None
        runner = JobRunner(self, self.jobs.get(job.id), worker_id, backend)
        runner.begin(resumed=resumed)
        return runner

    def _claim_for_failure(
        self, job: JobRecord, worker_id: str, now: float, stale_before: float
    ) -> bool:
        return self.jobs.claim(
            job.id,
            worker_id=worker_id,
            from_status=job.status,
            to_status=job.status,
            now=now,
            stale_before=stale_before if job.status == "running" else None,
        )

    def heartbeat(self, worker_id: str, job_ids: builtins.list[str]) -> set[str]:
        return self.jobs.heartbeat(job_ids, worker_id=worker_id, now=time.time())

    def release(self, worker_id: str, job_ids: builtins.list[str]) -> None:
        """Give jobs back (worker shutdown): another worker may resume them at once."""
        for job_id in job_ids:
            self.jobs.update(job_id, worker_id=None, heartbeat_at=None, expect_worker=worker_id)

    def spec_of(self, job: JobRecord) -> FineTuneSpec:
        body, state = job.body, job.state
        hyper = body.get("hyperparameters") or {}
        return FineTuneSpec(
            job_id=job.id,
            model=body["model"],
            provider=str(state.get("provider")),
            training_file=body["training_file"],
            training_path=Path(state["training_path"]),
            validation_file=body.get("validation_file"),
            validation_path=Path(state["validation_path"])
            if state.get("validation_path")
            else None,
            hyperparameters=Hyperparameters(
                n_epochs=hyper.get("n_epochs", "auto"),
                batch_size=hyper.get("batch_size", "auto"),
                learning_rate_multiplier=hyper.get("learning_rate_multiplier", "auto"),
            ),
            seed=int(body["seed"]),
            suffix=body.get("user_provided_suffix"),
            job_dir=self.jobs_root / job.id,
            training_examples=int(state.get("training_examples") or 0),
            method=state.get("method") or {"type": "supervised", "supervised": {}},
            extras=state.get("extras") or {},
            model_path=state.get("model_path"),
        )

    # -- internals -------------------------------------------------------------------------------

    def _input(self, file_id: str, param: str) -> InputFile:
        try:
            found = self.files.get(file_id)
        except NotFoundError:
            raise InvalidRequestError(
                f"invalid {param}: {file_id} (no such file)", param=param, code="invalid_file"
            ) from None
        if found.purpose != FINE_TUNE_PURPOSE:
            raise InvalidRequestError(
                f"invalid {param}: {file_id} has purpose '{found.purpose}'; fine-tuning files "
                f"must be uploaded with purpose '{FINE_TUNE_PURPOSE}'.",
                param=param,
                code="invalid_file_purpose",
            )
        if not found.path.is_file():
            raise InvalidRequestError(
                f"invalid {param}: the content of {file_id} is missing.", param=param
            )
        return found

    def _job_body(
        self,
        req: CreateRequest,
        job_id: str,
        created_at: int,
        hyper: Hyperparameters,
        training: InputFile,
        validation: InputFile | None,
    ) -> dict[str, Any]:
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

    def _event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
        key: str | None = None,
        created_at: int | None = None,
    ) -> None:
        event_id = (
            stable_id(ids.FINE_TUNING_EVENT, job_id, key)
            if key is not None
            else ids.new_id(ids.FINE_TUNING_EVENT)
        )
        created = created_at or int(time.time())
        body = {
            "id": event_id,
            "object": "fine_tuning.job.event",
            "created_at": created,
            "level": level,
            "message": message,
            "type": type,
            "data": data,
        }
        self.jobs.add_events(job_id, [(event_id, created, body)])

    def _validate_files(self, job_id: str, worker_id: str) -> None:
        job = self.jobs.get(job_id)
        method = (job.state.get("method") or {}).get("type", "supervised")
        checks = [("training_file", job.state.get("training_path"), MIN_EXAMPLES)]
        if job.state.get("validation_path"):
            checks.append(("validation_file", job.state.get("validation_path"), 1))
        for param, path, minimum in checks:
            error = _check_file(Path(str(path)), minimum, param, deep=method == "supervised")
            if error is not None:
                self._fail(job_id, worker_id, error, expect=("validating_files",))
                return
        updated = self.jobs.update(
            job_id,
            status="queued",
            worker_id=None,
            heartbeat_at=None,
            expect_status=("validating_files",),
            expect_worker=worker_id,
        )
        if updated is not None:
            self._event(job_id, "Files validated, moving job to queued state")

    def _fail(
        self,
        job_id: str,
        worker_id: str,
        error: JobError,
        *,
        expect: tuple[str, ...] = ("validating_files", "queued", "running"),
    ) -> bool:
        updated = self.jobs.update(
            job_id,
            status="failed",
            body={
                "error": error.to_dict(),
                "finished_at": int(time.time()),
                "estimated_finish": None,
            },
            worker_id=None,
            heartbeat_at=None,
            expect_status=expect,
            expect_worker=worker_id,
        )
        if updated is not None:
            self._event(job_id, f"Fine-tuning job failed: {error.message}", level="error")
        return updated is not None

    def _register(self, model: FineTunedModel) -> None:
        if self.on_model is not None:
            try:
                self.on_model(model)
            except Exception:
                log.exception("could not announce fine-tuned model %s", model.id)

    def _result_file(self, job_id: str) -> builtins.list[str]:
        """OpenAI's result file: a CSV of the metrics per step (purpose fine-tune-results)."""
        rows = [e.body.get("data") or {} for e in self.jobs.all_events(job_id)]
        rows = [d for d in rows if "step" in d and "train_loss" in d]
        if not rows:
            return []
        out = io.StringIO()
        cols = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
        writer = csv.writer(out)
        writer.writerow(cols)
        for d in rows:
            acc = d.get("train_mean_token_accuracy", d.get("train_accuracy"))
            writer.writerow(
                [
                    d.get("step"),
                    d.get("train_loss"),
                    acc,
                    d.get("valid_loss"),
                    d.get("valid_mean_token_accuracy"),
                ]
            )
        try:
            added = self.files.add(
                out.getvalue().encode(), filename="step_metrics.csv", purpose="fine-tune-results"
            )
        except Exception:
            log.exception("could not write the result file of %s", job_id)
            return []
        return [added.id]


def _check_file(path: Path, minimum: int, param: str, *, deep: bool) -> JobError | None:
    label = param.replace("_", " ")
    try:
        with path.open("rb") as fh:
            if not deep:
                return None
            result = validate_jsonl(fh, min_examples=minimum)
    except OSError as exc:
        return JobError("invalid_file", f"The {label} cannot be read: {exc}", param)
    if not result.ok:
        return JobError("invalid_file_format", f"Invalid {label}: {result.error_message()}", param)
    if result.n_examples < minimum:
        return JobError(
            "invalid_n_examples",
            f"The {label} has {result.n_examples} example(s), but must have at least {minimum}.",
            param,
        )
    return None


def _hyperparameters_patch(job: JobRecord, hyper: Hyperparameters) -> dict[str, Any]:
    """The values a backend resolved, in ``hyperparameters`` and in ``method``."""
    values = hyper.to_dict()
    method = dict(job.body.get("method") or {"type": "supervised"})
    mtype = str(method.get("type") or "supervised")
    section = dict(method.get(mtype) or {})
    section["hyperparameters"] = {**(section.get("hyperparameters") or {}), **values}
    method[mtype] = section
    return {"hyperparameters": values, "method": method}


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


class JobRunner:
    """Drives one claimed job: starts its backend, then mirrors each ``poll`` into the store."""

    def __init__(
        self, service: FineTuningService, job: JobRecord, worker_id: str, backend: TrainingBackend
    ) -> None:
        self.service = service
        self.jobs = service.jobs
        self.job_id = job.id
        self.worker_id = worker_id
        self.backend = backend
        self.provider = str(job.state.get("provider"))
        self.spec = service.spec_of(job)
        self.handle: str | None = job.state.get("handle")
        self.progress: dict[str, Any] = dict(job.state.get("progress") or {})
        self.cancel_sent_at: float | None = None
        self.poll_failures = 0
        self.seen_messages: set[str] = set()
        self._rate_from: tuple[float, float] | None = None  # (time, step) for estimated_finish

    def begin(self, *, resumed: bool) -> None:
        self.spec.job_dir.mkdir(parents=True, exist_ok=True)
        if resumed:
            self.service._event(
                self.job_id,
                f"Job resumed by worker {self.worker_id} (its previous worker stopped); "
                "continuing from the last checkpoint",
            )
        else:
            self.service._event(self.job_id, f"Job assigned to worker {self.worker_id}")
        try:
            self.handle = self.backend.start(self.spec, resume=self.handle)
        except Exception as exc:
            message = exc.message if isinstance(exc, DistilleryError) else repr(exc)
            log.exception("starting job %s failed", self.job_id)
            self.service._fail(self.job_id, self.worker_id, JobError("start_failed", message))
            self.handle = None
            return
        self.jobs.update(
            self.job_id,
            state={"handle": self.handle, "worker": self.worker_id},
            expect_worker=self.worker_id,
        )

    def step(self) -> bool:
        """One tick; True when this worker is done with the job."""
        try:
            job = self.jobs.get(self.job_id)
        except NotFoundError:
            return True
        if job.status == "cancelled" or job.cancel_requested:
            return self._cancel(job)
        if job.worker_id != self.worker_id or job.status != "running" or self.handle is None:
            return True
        try:
            progress = self.backend.poll(self.handle)
        except Exception as exc:
            self.poll_failures += 1
            log.warning("polling job %s failed (%d): %r", self.job_id, self.poll_failures, exc)
            if self.poll_failures >= MAX_POLL_FAILURES:
                message = exc.message if isinstance(exc, DistilleryError) else repr(exc)
                self.service._fail(self.job_id, self.worker_id, JobError("poll_failed", message))
                return True
            return False
        self.poll_failures = 0
        self._mirror(job, progress)
        return self._outcome(job, progress)

    def _outcome(self, job: JobRecord, progress: JobProgress) -> bool:
        if progress.status == "succeeded":
            self._succeed(job, progress)
            return True
        if progress.status == "failed":
            error = progress.error or JobError("training_failed", "The training failed.")
            self.service._fail(self.job_id, self.worker_id, error)
            return True
        if progress.status == "cancelled":
            self.jobs.update(
                self.job_id,
                status="cancelled",
                body={"finished_at": int(time.time()), "estimated_finish": None},
                worker_id=None,
                heartbeat_at=None,
                expect_status=("running",),
            )
            self.service._event(self.job_id, "Fine-tuning job cancelled by the backend")
            return True
        if progress.status == "lost":
            return self._restart(job)
        return False

    # -- outcomes --------------------------------------------------------------------------------

    def _cancel(self, job: JobRecord) -> bool:
        if self.handle is None:
            return True
        if self.cancel_sent_at is None:
            self.cancel_sent_at = time.monotonic()
            try:
                self.backend.cancel(self.handle)
            except Exception:
                log.exception("cancelling job %s failed", self.job_id)
        try:
            progress = self.backend.poll(self.handle)
        except Exception:
            progress = JobProgress(status="cancelled")
        self._mirror(job, progress)
        still = progress.status in ("running", "queued")
        if still and time.monotonic() - self.cancel_sent_at < CANCEL_GRACE_S:
            return False
        if still:
            log.warning(
                "job %s did not stop within %.0f s of its cancel", self.job_id, CANCEL_GRACE_S
            )
        self.jobs.update(
            self.job_id, worker_id=None, heartbeat_at=None, expect_worker=self.worker_id
        )
        return True

    def _restart(self, job: JobRecord) -> bool:
        restarts = int(job.state.get("restarts") or 0) + 1
        if restarts > MAX_RESTARTS:
            self.service._fail(
                self.job_id,
                self.worker_id,
                JobError(
                    "training_interrupted",
                    f"The training process stopped unexpectedly {restarts} times.",
                ),
            )
            return True
        self.service._event(
            self.job_id,
            "The training process stopped unexpectedly; restarting it from the last "
            f"checkpoint (restart {restarts} of {MAX_RESTARTS})",
            level="warn",
        )
        try:
            self.handle = self.backend.start(self.spec, resume=self.handle)
        except Exception as exc:
            message = exc.message if isinstance(exc, DistilleryError) else repr(exc)
            self.service._fail(self.job_id, self.worker_id, JobError("start_failed", message))
            return True
        self.jobs.update(
            self.job_id,
            state={"restarts": restarts, "handle": self.handle},
            expect_worker=self.worker_id,
        )
        return False

    def _succeed(self, job: JobRecord, progress: JobProgress) -> None:
        state = job.state
        if progress.remote_model:
            model_id = progress.remote_model
            adapter: str | None = None
        else:
            model_id = str(state["model_id"])
            adapter = progress.adapter_path
            if adapter is None:
                self.service._fail(
                    self.job_id,
                    self.worker_id,
                    JobError("no_result", "The training ended without writing an adapter."),
                )
                return
        model = self.service.models.register(
            model_id,
            base_model=job.body["model"],
            provider=self.provider,
            adapter_path=adapter,
            job_id=self.job_id,
            metadata={"suffix": job.body.get("user_provided_suffix")},
        )
        self.service._register(model)
        body: dict[str, Any] = {
            "fine_tuned_model": model_id,
            "finished_at": int(time.time()),
            "estimated_finish": None,
            "trained_tokens": progress.trained_tokens,
            "result_files": self.service._result_file(self.job_id),
        }
        if progress.hyperparameters is not None:
            body.update(_hyperparameters_patch(job, progress.hyperparameters))
        updated = self.jobs.update(
            self.job_id,
            status="succeeded",
            body=body,
            state={"result_metrics": progress.metrics},
            worker_id=None,
            heartbeat_at=None,
            expect_status=("running",),
            expect_worker=self.worker_id,
        )
        if updated is not None:
            for message in (
                f"New fine-tuned model created: {model_id}",
                "The job has successfully completed",
            ):
                if message not in self.seen_messages:
                    self.service._event(self.job_id, message)

    # -- mirroring -------------------------------------------------------------------------------

    def _mirror(self, job: JobRecord, progress: JobProgress) -> None:
        batch = []
        for event in progress.events:
            event_id = stable_id(ids.FINE_TUNING_EVENT, self.job_id, "backend", event.key)
            created = int(event.created_at or time.time())
            body = {
                "id": event_id,
                "object": "fine_tuning.job.event",
                "created_at": created,
                "level": event.level,
                "message": event.message,
                "type": event.type,
                "data": event.data,
            }
            batch.append((event_id, created, body))
            self.seen_messages.add(event.message)
            if event.type == "metrics" and event.data:
                self.progress.update(
                    {k: v for k, v in event.data.items() if isinstance(v, int | float | str)}
                )
        if batch:
            self.jobs.add_events(self.job_id, batch)
        for checkpoint in progress.checkpoints:
            self._checkpoint(job, checkpoint)
        changed = bool(batch)
        if progress.step is not None and progress.step != self.progress.get("step"):
            self.progress["step"] = progress.step
            changed = True
        if progress.total_steps is not None and progress.total_steps != self.progress.get(
            "total_steps"
        ):
            self.progress["total_steps"] = progress.total_steps
            changed = True
        if not changed:
            return
        patch: dict[str, Any] = {"estimated_finish": progress.estimated_finish or self._eta()}
        if progress.hyperparameters is not None:
            patch.update(_hyperparameters_patch(job, progress.hyperparameters))
        self.jobs.update(
            self.job_id, state={"progress": self.progress}, body=patch, expect_worker=self.worker_id
        )

    def _eta(self) -> int | None:
        step, total = self.progress.get("step"), self.progress.get("total_steps")
        if not isinstance(step, int | float) or not isinstance(total, int | float) or not total:
            return None
        now = time.time()
        if self._rate_from is None or step < self._rate_from[1]:
            self._rate_from = (now, float(step))
            return None
        t0, s0 = self._rate_from
        if step <= s0 or now <= t0:
            return None
        return int(now + (total - step) * (now - t0) / (step - s0))

    def _checkpoint(self, job: JobRecord, checkpoint: TrainingCheckpoint) -> None:
        if checkpoint.remote_model:
            model_id = checkpoint.remote_model
        elif checkpoint.adapter_path:
            model_id = checkpoint_model_id(str(job.state["model_id"]), checkpoint.step)
        else:
            return
        checkpoint_id = stable_id(ids.FINE_TUNING_CHECKPOINT, self.job_id, str(checkpoint.step))
        created = int(checkpoint.created_at or time.time())
        # only the metrics measured: the SDK types declare each optional (absent, not null)
        metrics: dict[str, float] = {
            k: float(v)
            for k, v in checkpoint.metrics.items()
            if k in CHECKPOINT_METRICS and isinstance(v, int | float) and not isinstance(v, bool)
        }
        metrics["step"] = float(checkpoint.step)
        body = {
            "id": checkpoint_id,
            "object": "fine_tuning.job.checkpoint",
            "created_at": created,
            "fine_tuned_model_checkpoint": model_id,
            "fine_tuning_job_id": self.job_id,
            "step_number": checkpoint.step,
            "metrics": metrics,
        }
        model = self.service.models.register(
            model_id,
            base_model=job.body["model"],
            provider=self.provider,
            adapter_path=checkpoint.adapter_path,
            job_id=self.job_id,
            metadata={"checkpoint_step": checkpoint.step, "epoch": checkpoint.epoch},
        )
        self.service._register(model)
        if self.jobs.add_checkpoint(self.job_id, checkpoint_id, created, body):
            epoch = f" (epoch {checkpoint.epoch})" if checkpoint.epoch is not None else ""
            self.service._event(
                self.job_id,
                f"Checkpoint created at step {checkpoint.step}{epoch}: {model_id}",
                key=f"checkpoint:{checkpoint.step}",
                data={"step": checkpoint.step, "metrics": checkpoint.metrics},
            )
