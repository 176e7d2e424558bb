"""The job worker: claims fine-tuning jobs from the store and drives them to the end.

It runs inside ``distillery serve`` (a thread started and stopped with the server, unless
``[server] workers_in_serve = false``) and on its own as ``distillery worker``. Any number of
workers, in any processes or machines sharing the database, may run: a job is claimed with one
conditional ``UPDATE`` (``store.jobs``), so two workers never run the same job. Each tick
(``poll_s``) a worker steps its jobs (each training runs in its own subprocess and folder under
``$DISTILLERY_HOME/jobs/<job_id>/``; see ``training.jobs``), sends heartbeats every
``heartbeat_s``, and claims more work when it has capacity: files to validate, queued jobs, and
running jobs whose worker has been silent for ``stale_after_s`` (resumed from their last
checkpoint). On shutdown a worker gives its jobs back so that the next worker resumes them at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from typing import Any

from distillery.lifecycle import SupervisedTask, describe
from distillery.services import Services
from distillery.training.jobs import FineTuningService, JobRunner, new_worker_id

log = logging.getLogger("distillery.worker")


class JobWorker:
    def __init__(
        self,
        service: FineTuningService,
        *,
        worker_id: str | None = None,
        poll_s: float = 0.5,
        heartbeat_s: float = 5.0,
    ) -> None:
        self.service = service
        self.worker_id = worker_id or new_worker_id()
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.runners: dict[str, JobRunner] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat = 0.0
        self.failing = False  # the last tick failed (the database is down, say)
        self.last_error: str | None = None  # what failed last: a tick, or the loop itself

    # -- one tick --------------------------------------------------------------------------------

    def tick(self) -> None:
        """Heartbeats, one step of every job held, then claim more work if there is room."""
        now = time.monotonic()
        if self.runners and now - self._last_beat >= self.heartbeat_s:
            owned = self.service.claims.heartbeat(self.worker_id, list(self.runners))
            for job_id in set(self.runners) - owned:
                log.warning("job %s was taken over by another worker", job_id)
                self.runners.pop(job_id)
            self._last_beat = now
        for job_id, runner in list(self.runners.items()):
            try:
                done = runner.step()
            except Exception:
                log.exception("job %s: step failed", job_id)
                done = False
            if done:
                self.runners.pop(job_id, None)
        busy = Counter(r.provider for r in self.runners.values())
        claimed = self.service.claims.claim_next(self.worker_id, busy=busy)
        if claimed is not None:
            log.info("worker %s claimed job %s", self.worker_id, claimed.job_id)
            self.runners[claimed.job_id] = claimed
            self._last_beat = time.monotonic()

    # -- loop ------------------------------------------------------------------------------------

    def run(self) -> None:
        """Tick until ``stop()``; then give the jobs held back. A tick that fails is logged and
        shown (``failing``, ``last_error``) until one succeeds; an error of the loop itself ends
        the thread (its supervisor, ``ServeWorker``, starts another)."""
        try:
            while not self._stop.is_set():
                try:
                    self.tick()
                except Exception as exc:
                    self.failing, self.last_error = True, describe(exc)
                    log.exception("worker %s: tick failed", self.worker_id)
                else:
                    self.failing = False
                self._stop.wait(self.poll_s)
        except Exception as exc:  # tick's own errors are caught: this is the loop's
            self.last_error = describe(exc)
            log.exception("worker %s: stopped by an error", self.worker_id)
            raise
        finally:
            self.release()

    def request_stop(self) -> None:
        """Ask the loop to end after its current tick."""
        self._stop.set()

    def release(self) -> None:
        if self.runners:
            self.service.claims.release(self.worker_id, list(self.runners))
            self.runners.clear()

    def start(self) -> JobWorker:
        """Run in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=self.worker_id, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class ServeWorker(SupervisedTask):
    """The job worker of ``serve``, as the ``worker`` component of the server's lifecycle: its
    loop runs on a thread, and a loop that dies (its jobs given back) is counted, shown and
    started again by the supervisor, under the same worker id, so it resumes those jobs."""

    def __init__(self, service: FineTuningService, *, poll_s: float = 0.5) -> None:
        super().__init__("worker", self._work, after_stop=self._joined)
        self.service = service
        self.poll_s = poll_s
        self.worker_id = new_worker_id()
        self.worker: JobWorker | None = None
        self._thread: asyncio.Future[None] | None = None

    async def _work(self) -> None:
        worker = self.worker = JobWorker(self.service, worker_id=self.worker_id, poll_s=self.poll_s)
        self._thread = asyncio.get_running_loop().run_in_executor(None, worker.run)
        try:
            await asyncio.shield(self._thread)
        except asyncio.CancelledError:
            worker.request_stop()
            raise

    async def _joined(self) -> None:
        """After stop: wait for the loop to give its jobs back (30 s at most)."""
        if self._thread is not None:
            await asyncio.wait([self._thread], timeout=30.0)

    def health(self) -> dict[str, Any]:
        health = super().health()
        worker = self.worker
        if worker is not None and worker.failing and health["state"] == "running":
            health = {**health, "state": "failed", "last_error": worker.last_error}
        return {**health, "jobs": len(worker.runners) if worker is not None else 0}


def install(services: Services) -> None:
    """Run a worker inside the server (``serve``): started and stopped with the app."""
    if services.config.server.workers_in_serve:
        services.lifecycle.add(ServeWorker(services.fine_tuning))
