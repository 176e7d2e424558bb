"""Which worker holds which fine-tuning job: claims, heartbeats, releases.

A claim is one conditional ``UPDATE`` (``store.jobs``): it succeeds for one worker only, when the
job is in the expected status and has no worker or a worker silent for ``stale_after_s``. A
``validating_files`` job is claimed to check its files (queued, or failed saying why) and given
back. A queued job, or a running one whose worker went silent (resumed from its last
checkpoint), is claimed as ``running`` when the worker has room for its provider (the backend's
``concurrency``) and gets a started :class:`~distillery.training.job_runner.JobRunner`. A job
whose backend cannot be had fails (``backend_unavailable``) under a claim, so only one worker
fails it. Workers send heartbeats for the jobs they hold and release them on shutdown, so that
another worker may resume them at once. A claimed job runs the spec its stored record describes
(:func:`spec_of`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from distillery.errors import DistilleryError
from distillery.store.jobs import JobRecord, JobsRepo
from distillery.training.base import FineTuneSpec, Hyperparameters, JobError
from distillery.training.job_files import check_file
from distillery.training.job_ledger import JobLedger
from distillery.training.job_runner import JobRunner
from distillery.training.registry import TrainingRegistry
from distillery.wire.fine_tuning_jsonl import MIN_EXAMPLES

STALE_AFTER_S = 60.0


@dataclass(eq=False)
class JobClaims:
    """The claims of the workers on the jobs in ``jobs`` (a job's folder: under ``jobs_root``)."""

    jobs: JobsRepo
    registry: TrainingRegistry
    ledger: JobLedger
    _: KW_ONLY
    jobs_root: Path
    stale_after_s: float = STALE_AFTER_S  # a running job whose worker is silent this long is free

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
        """Claim ``job`` if this worker may take it now: a ``validating_files`` job is checked
        (and released) at once; a queued or stale running job returns its started runner."""
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
                self.validate_files(job.id, worker_id)
            return None
        provider = str(job.state.get("provider"))
        try:
            backend = self.registry.backend(job.backend, provider)
        except DistilleryError as exc:
            if self._claim_for_failure(job, worker_id, now, stale_before):
                self.ledger.fail(job.id, worker_id, JobError("backend_unavailable", exc.message))
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
        claimed = self.jobs.get(job.id)
        runner = JobRunner(
            self.ledger, claimed, worker_id, backend, spec_of(claimed, self.jobs_root)
        )
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

    def heartbeat(self, worker_id: str, job_ids: list[str]) -> set[str]:
        return self.jobs.heartbeat(job_ids, worker_id=worker_id, now=time.time())

    def release(self, worker_id: str, job_ids: list[str]) -> None:
        """Give jobs back (worker shutdown): another worker may resume them at once."""
        for job_id in job_ids:
            self.jobs.update(job_id, worker_id=None, heartbeat_at=None, expect_worker=worker_id)

    def validate_files(self, job_id: str, worker_id: str) -> None:
        """Check a claimed ``validating_files`` job's files: queue it, or fail it saying why."""
        job = self.jobs.get(job_id)
        method = (job.state.get("method") or {}).get("type", "supervised")
        checks = [("training_file", job.state.get("training_path"), MIN_EXAMPLES)]
        if job.state.get("validation_path"):
            checks.append(("validation_file", job.state.get("validation_path"), 1))
        for param, path, minimum in checks:
            error = check_file(Path(str(path)), minimum, param, deep=method == "supervised")
            if error is not None:
                self.ledger.fail(job_id, worker_id, error, expect=("validating_files",))
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
            self.ledger.event(job_id, "Files validated, moving job to queued state")


def spec_of(job: JobRecord, jobs_root: Path) -> FineTuneSpec:
    """The spec a backend runs for a stored job (its folder under ``jobs_root``)."""
    body, state = job.body, job.state
    # what the client asked ("auto" stays "auto": a local trainer resolves it from the data),
    # not the estimate shown at creation
    hyper = state.get("requested_hyperparameters") or body.get("hyperparameters") or {}
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
        base_model=state.get("base_model") if state.get("start_model") else None,
        start_adapter=state.get("start_adapter"),
    )
