"""What the story of a fine-tuning job writes: its events, its failure, its models, its results.

Shared by the service (create, cancel, file validation, claiming) and the runner (a claimed
job's run), so both record the same way:

- an event is a ``fine_tuning.job.event``; one given a ``key`` (every event a backend reports
  has one) gets a stable id, so recording it again (a resumed worker) stores it once;
- a failure is a conditional update to ``failed`` (only from the statuses given and only by the
  worker that holds the job), with the ``JobError`` as the job's ``error`` and an error event;
  it returns whether this worker made it;
- a registered fine-tuned model (the result, or a checkpoint) is announced to ``on_model`` (the
  providers that serve it); an announcement that fails is logged, never fails the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from distillery import ids
from distillery.store.jobs import JobsRepo
from distillery.store.models import FineTunedModel, FineTunedModelsRepo
from distillery.training.base import JobError, Level, TrainingEvent
from distillery.training.inputs import FileSource
from distillery.training.job_files import result_file
from distillery.training.job_ids import stable_id
from distillery.training.job_wire import event_body

log = logging.getLogger("distillery.training")

ACTIVE = ("validating_files", "queued", "running")  # the statuses of a job that has not ended


class JobLedger:
    def __init__(
        self,
        jobs: JobsRepo,
        models: FineTunedModelsRepo,
        files: FileSource,
        on_model: Callable[[FineTunedModel], None] | None,
    ) -> None:
        self.jobs = jobs
        self.models = models
        self.files = files
        self.on_model = on_model

    def event(
        self,
        job_id: str,
        message: str,
        *,
        level: Level = "info",
        data: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> None:
        """Record one event of the service's own (a ``message``)."""
        event_id = (
            stable_id(ids.FINE_TUNING_EVENT, job_id, key)
            if key is not None
            else ids.new_id(ids.FINE_TUNING_EVENT)
        )
        created = int(time.time())
        body = event_body(
            event_id, created, TrainingEvent(key or event_id, message, level, data=data)
        )
        self.jobs.add_events(job_id, [(event_id, created, body)])

    def backend_events(self, job_id: str, events: Iterable[TrainingEvent]) -> None:
        """Record the events a backend reported, in one write; each id is derived from the
        event's key, so a resumed worker that reads the backend's output again stores it once."""
        rows = []
        for event in events:
            event_id = stable_id(ids.FINE_TUNING_EVENT, job_id, "backend", event.key)
            created = int(event.created_at or time.time())
            rows.append((event_id, created, event_body(event_id, created, event)))
        if rows:
            self.jobs.add_events(job_id, rows)

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error: JobError,
        *,
        expect: tuple[str, ...] = ACTIVE,
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
            self.event(job_id, f"Fine-tuning job failed: {error.message}", level="error")
        return updated is not None

    def register(self, model: FineTunedModel) -> None:
        """Announce a registered model to ``on_model``."""
        if self.on_model is not None:
            try:
                self.on_model(model)
            except Exception:
                log.exception("could not announce fine-tuned model %s", model.id)

    def result_files(self, job_id: str) -> list[str]:
        return result_file(self.jobs, self.files, job_id)
