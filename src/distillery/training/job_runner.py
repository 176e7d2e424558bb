"""Running a claimed fine-tuning job: its backend started, then each ``poll`` mirrored.

A :class:`JobRunner` belongs to the worker that claimed the job. ``begin`` starts the backend
(``TrainingBackend.start``, resuming from the job's last handle when another worker held it);
each ``step`` polls the backend and mirrors what it reports into the store: events (stable ids,
so a replay stores them once), metrics into the job's progress (and ``estimated_finish`` from
the observed step rate), checkpoints (each registered as a servable model), the resolved
hyperparameters. A step ends the job when the backend says so:

- ``succeeded``: the fine-tuned model (a remote model id, or the adapter the backend wrote) is
  registered and announced *before* the job is marked ``succeeded``, with its result file;
- ``failed`` / ``cancelled``: the job ends so;
- ``lost`` (the training process died): it is restarted from its last checkpoint, at most
  ``MAX_RESTARTS`` times;
- a cancel request is sent to the backend once, then the job is left once the backend stops or
  ``CANCEL_GRACE_S`` passes; ``MAX_POLL_FAILURES`` failed polls in a row fail the job.

A runner whose job was taken by another worker, or deleted, stops without writing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from distillery import ids
from distillery.errors import DistilleryError, NotFoundError
from distillery.store.jobs import JobRecord
from distillery.training.base import (
    FineTuneSpec,
    JobError,
    JobProgress,
    TrainingBackend,
    TrainingCheckpoint,
)
from distillery.training.job_ids import checkpoint_model_id, stable_id
from distillery.training.job_ledger import JobLedger
from distillery.training.job_wire import checkpoint_body, hyperparameters_patch

log = logging.getLogger("distillery.training")

MAX_RESTARTS = 3
MAX_POLL_FAILURES = 30
CANCEL_GRACE_S = 60.0


class JobRunner:
    """Drives one claimed job: starts its backend, then mirrors each ``poll`` into the store."""

    def __init__(
        self,
        ledger: JobLedger,
        job: JobRecord,
        worker_id: str,
        backend: TrainingBackend,
        spec: FineTuneSpec,
    ) -> None:
        self.ledger = ledger
        self.jobs = ledger.jobs
        self.job_id = job.id
        self.worker_id = worker_id
        self.backend = backend
        self.provider = str(job.state.get("provider"))
        self.spec = spec
        self.handle: str | None = job.state.get("handle")
        self.progress: dict[str, Any] = dict(job.state.get("progress") or {})
        self.cancel_sent_at: float | None = None
        self.poll_failures = 0
        self.seen_messages: set[str] = set()
        self._rate_from: tuple[float, float] | None = None  # (time, step) for estimated_finish

    def begin(self, *, resumed: bool) -> None:
        self.spec.job_dir.mkdir(parents=True, exist_ok=True)
        if resumed:
            self.ledger.event(
                self.job_id,
                f"Job resumed by worker {self.worker_id} (its previous worker stopped); "
                "continuing from the last checkpoint",
            )
        else:
            self.ledger.event(self.job_id, f"Job assigned to worker {self.worker_id}")
        try:
            self.handle = self.backend.start(self.spec, resume=self.handle)
        except Exception as exc:
            message = exc.message if isinstance(exc, DistilleryError) else repr(exc)
            log.exception("starting job %s failed", self.job_id)
            self.ledger.fail(self.job_id, self.worker_id, JobError("start_failed", message))
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
                self.ledger.fail(self.job_id, self.worker_id, JobError("poll_failed", message))
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
            self.ledger.fail(self.job_id, self.worker_id, error)
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
            self.ledger.event(self.job_id, "Fine-tuning job cancelled by the backend")
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
            self.ledger.fail(
                self.job_id,
                self.worker_id,
                JobError(
                    "training_interrupted",
                    f"The training process stopped unexpectedly {restarts} times.",
                ),
            )
            return True
        self.ledger.event(
            self.job_id,
            "The training process stopped unexpectedly; restarting it from the last "
            f"checkpoint (restart {restarts} of {MAX_RESTARTS})",
            level="warn",
        )
        try:
            self.handle = self.backend.start(self.spec, resume=self.handle)
        except Exception as exc:
            message = exc.message if isinstance(exc, DistilleryError) else repr(exc)
            self.ledger.fail(self.job_id, self.worker_id, JobError("start_failed", message))
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
                self.ledger.fail(
                    self.job_id,
                    self.worker_id,
                    JobError("no_result", "The training ended without writing an adapter."),
                )
                return
        model = self.ledger.models.register(
            model_id,
            base_model=str(job.state.get("base_model") or job.body["model"]),
            provider=self.provider,
            adapter_path=adapter,
            job_id=self.job_id,
            metadata={"suffix": job.body.get("user_provided_suffix")},
        )
        self.ledger.register(model)
        body: dict[str, Any] = {
            "fine_tuned_model": model_id,
            "finished_at": int(time.time()),
            "estimated_finish": None,
            "trained_tokens": progress.trained_tokens,
            "result_files": self.ledger.result_files(self.job_id),
        }
        if progress.hyperparameters is not None:
            body.update(hyperparameters_patch(job, progress.hyperparameters))
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
                    self.ledger.event(self.job_id, message)

    # -- mirroring -------------------------------------------------------------------------------

    def _mirror(self, job: JobRecord, progress: JobProgress) -> None:
        self.ledger.backend_events(self.job_id, progress.events)
        for event in progress.events:
            self.seen_messages.add(event.message)
            if event.type == "metrics" and event.data:
                self.progress.update(
                    {k: v for k, v in event.data.items() if isinstance(v, int | float | str)}
                )
        for checkpoint in progress.checkpoints:
            self._checkpoint(job, checkpoint)
        changed = bool(progress.events)
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
            patch.update(hyperparameters_patch(job, progress.hyperparameters))
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
        body = checkpoint_body(checkpoint_id, created, self.job_id, model_id, checkpoint)
        model = self.ledger.models.register(
            model_id,
            base_model=str(job.state.get("base_model") or job.body["model"]),
            provider=self.provider,
            adapter_path=checkpoint.adapter_path,
            job_id=self.job_id,
            metadata={"checkpoint_step": checkpoint.step, "epoch": checkpoint.epoch},
        )
        self.ledger.register(model)
        if self.jobs.add_checkpoint(self.job_id, checkpoint_id, created, body):
            epoch = f" (epoch {checkpoint.epoch})" if checkpoint.epoch is not None else ""
            self.ledger.event(
                self.job_id,
                f"Checkpoint created at step {checkpoint.step}{epoch}: {model_id}",
                key=f"checkpoint:{checkpoint.step}",
                data={"step": checkpoint.step, "metrics": checkpoint.metrics},
            )
