"""Distillations as resources: created by the API, the dashboard or the CLI, run by one runner.

``create`` checks the request and the data at once (an unknown prompt is a 404 listing the
prompts that have traffic; too little data a 400 saying how much more) and records the
distillation ``queued``; a :class:`DistillationRunner` (a component of every ``distillery serve``)
claims it, runs the pipeline on a thread and writes its step, progress, report or error into
the record. The CLI creates the record already claimed by itself and runs it in the foreground.

A runner that stops (shutdown) gives its distillation back; one that dies stops sending
heartbeats and another runner (or the next start) takes the distillation over. The pipeline
reuses every artifact a previous attempt made, so either way it resumes where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from distillery import ids
from distillery.distill.pipeline import Distillation, DistillOptions, Interrupted
from distillery.distill.report import DistillReport
from distillery.errors import ConflictError, DistilleryError, NotFoundError
from distillery.lifecycle import Periodic, describe
from distillery.progress import ProgressEvent
from distillery.security.redact import redact
from distillery.services import Services
from distillery.store.distillations import DistillationRecord, DistillationsRepo, Order
from distillery.store.records import Page
from distillery.wire.params import parse_params

log = logging.getLogger("distillery.distill")

STALE_AFTER_S = 120.0  # a running distillation whose runner is silent this long is taken over
SAVE_EVERY_S = 2.0  # progress written at most this often (each write is a heartbeat)
TERMINAL = ("succeeded", "failed", "cancelled")


def new_runner_id() -> str:
    return ids.new_id("distill-runner-", 12)


class DistillationsService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.repo = DistillationsRepo(services.store)

    # -- resources -------------------------------------------------------------------------------

    def create(self, body: Any, *, runner_id: str | None = None) -> dict[str, Any]:
        """Check the options and the prompt's data, then record the distillation (``queued``,
        or ``running`` under ``runner_id`` when the caller runs it itself)."""
        options = parse_params(DistillOptions, body)
        try:
            self.services.providers.route(options.student)
        except NotFoundError:
            raise NotFoundError(
                f"No provider serves the student {options.student!r}: add it to a provider's "
                "models in distillery.toml (a `local` one trains on this machine).",
                param="student",
                code="model_not_found",
            ) from None
        inventory = Distillation(self.services, options).take_inventory()
        inventory.check_enough()
        now = time.time()
        record = self.repo.create(
            ids.new_id(ids.DISTILLATION),
            created_at=int(now),
            status="running" if runner_id else "queued",
            prompt=options.prompt,
            body={
                "options": options.model_dump(mode="json"),
                "inventory": inventory.to_json(),
                "step": None,
                "progress": None,
                "report": None,
                "error": None,
                "finished_at": None,
            },
            worker_id=runner_id,
            heartbeat_at=now if runner_id else None,
        )
        return self.to_object(record)

    def get(self, distillation_id: str) -> dict[str, Any]:
        return self.to_object(self.repo.get(distillation_id))

    def list(
        self, *, after: str | None = None, limit: int = 20, order: Order = "desc"
    ) -> Page[dict[str, Any]]:
        page = self.repo.list(after=after, limit=limit, order=order)
        return Page([self.to_object(r) for r in page.data], page.has_more)

    def cancel(self, distillation_id: str) -> dict[str, Any]:
        """Stop a distillation that has not ended (its runner stops at its next check; the
        artifacts made so far stay)."""
        record = self.repo.get(distillation_id)
        if record.status in TERMINAL:
            raise ConflictError(
                f"Distillation {distillation_id} has already {record.status}.",
                param="distillation_id",
            )
        body = {**record.body, "finished_at": int(time.time())}
        self.repo.update(
            distillation_id, body=body, status="cancelled", expect_status=("queued", "running")
        )
        return self.get(distillation_id)

    @staticmethod
    def to_object(record: DistillationRecord) -> dict[str, Any]:
        return {
            "id": record.id,
            "object": "distillery.distillation",
            "created_at": record.created_at,
            "status": record.status,
            "prompt": record.prompt,
            **record.body,
        }

    # -- running ---------------------------------------------------------------------------------

    def run(
        self,
        distillation_id: str,
        *,
        runner_id: str,
        progress: Callable[[ProgressEvent], None] | None = None,
        say: Callable[[str], None] = lambda _m: None,
        stopping: threading.Event | None = None,
    ) -> DistillReport | None:
        """Run a distillation this runner holds to its end; returns its report (None when it
        was stopped, cancelled or failed: the record says which)."""
        record = self.repo.get(distillation_id)
        options = DistillOptions.model_validate(record.body["options"])
        body = dict(record.body)
        last_save = 0.0
        cancelled = False

        def save(force: bool = False, **changes: Any) -> None:
            nonlocal last_save, cancelled
            body.update(changes)
            now = time.time()
            if not force and now - last_save < SAVE_EVERY_S:
                return
            last_save = now
            held = self.repo.update(
                distillation_id,
                body=body,
                worker_id=runner_id,
                heartbeat_at=now,
                expect_status=("running",),
            )
            cancelled = cancelled or not held

        def on_progress(event: ProgressEvent) -> None:
            save(progress={"task": event.task, "done": event.completed, "total": event.total})
            if progress is not None:
                progress(event)

        def should_stop() -> bool:
            save()  # a heartbeat; a cancel (or a takeover) is seen here
            return cancelled or (stopping is not None and stopping.is_set())

        pipeline = Distillation(
            self.services,
            options,
            progress=on_progress,
            say=say,
            on_step=lambda name: save(force=True, step=name),
            should_stop=should_stop,
        )
        try:
            report = pipeline.run()
        except Interrupted:
            if not cancelled:
                self.repo.release(distillation_id, worker_id=runner_id)
            return None
        except Exception as exc:
            error = _error_of(exc)
            log.warning("distillation %s failed: %s", distillation_id, error["message"])
            self.repo.update(
                distillation_id,
                body={**body, "error": error, "finished_at": int(time.time())},
                status="failed",
                worker_id=runner_id,
                expect_status=("running",),
            )
            if isinstance(exc, DistilleryError):
                raise
            return None
        folder = self.services.settings.home / "reports" / f"{distillation_id}"
        report.write(folder)
        self.repo.update(
            distillation_id,
            body={
                **body,
                "step": "done",
                "report": report.to_json(),
                "finished_at": int(time.time()),
            },
            status="succeeded",
            worker_id=runner_id,
            expect_status=("running",),
        )
        return report

    def claim_next(self, runner_id: str) -> str | None:
        now = time.time()
        for record in self.repo.claimable(stale_before=now - STALE_AFTER_S):
            if self.repo.claim(
                record.id, worker_id=runner_id, now=now, stale_before=now - STALE_AFTER_S
            ):
                return record.id
        return None


def _error_of(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, DistilleryError):
        return {"code": exc.code or exc.type, "message": redact(exc.message)}
    return {"code": "distillation_failed", "message": describe(exc)}


class DistillationRunner(Periodic):
    """The component of ``distillery serve`` that runs queued distillations, one at a time, on
    a thread (the eval runs they start use the server's event loop)."""

    def __init__(self, services: Services, interval_s: float = 2.0) -> None:
        super().__init__("distillations", interval_s, self._tick, at_start=True)
        self.service = DistillationsService(services)
        self.runner_id = new_runner_id()
        self.current: str | None = None
        self._halt = threading.Event()

    async def _tick(self) -> None:
        claimed = await asyncio.to_thread(self.service.claim_next, self.runner_id)
        if claimed is None:
            return
        self.current = claimed
        log.info("running distillation %s", claimed)
        try:
            await asyncio.to_thread(self._run_one, claimed)
        finally:
            self.current = None

    def _run_one(self, distillation_id: str) -> None:
        # a DistilleryError is the data's fault, recorded as the distillation's error; anything
        # else was recorded too, and dies here as a failure of this runner's tick
        with contextlib.suppress(DistilleryError):
            self.service.run(distillation_id, runner_id=self.runner_id, stopping=self._halt)

    async def start(self) -> None:
        self._halt.clear()
        await super().start()

    async def stop(self) -> None:
        self._halt.set()  # the pipeline stops at its next check and gives the run back
        await super().stop()

    def health(self) -> dict[str, Any]:
        return {**super().health(), "running": self.current}
