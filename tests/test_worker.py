"""Job workers: several of them (threads here) share the queue and never run the same job.

Jobs train at the fake provider (cheap), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distillery.progress import ProgressEvent
from distillery.services import Services, build_services
from distillery.settings import Settings
from distillery.worker import JobWorker, ServeWorker
from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.ft import jsonl


@pytest.fixture
def services(
    home: Path, db_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Services]:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    config = write_config(home, fake_openai)
    svc = build_services(Settings(home=home, database_url=db_url, config=config))
    yield svc
    svc.store.close()


def _upload(services: Services) -> str:
    return services.fine_tuning.files.add(jsonl(), filename="train.jsonl", purpose="fine-tune").id


def _wait_all(services: Services, job_ids: list[str], timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [services.fine_tuning.retrieve(j) for j in job_ids]
        if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
            return jobs
        assert time.monotonic() < deadline, [j["status"] for j in jobs]
        time.sleep(0.2)


def test_two_workers_share_jobs_and_never_run_the_same_one(
    services: Services, fake_openai: FakeOpenAI
) -> None:
    training = _upload(services)
    job_ids = [
        services.fine_tuning.create({"model": "gpt-4o", "training_file": training})["id"]
        for _ in range(6)
    ]
    workers = [JobWorker(services.fine_tuning, poll_s=0.05).start() for _ in range(2)]
    try:
        jobs = _wait_all(services, job_ids)
    finally:
        for w in workers:
            w.stop()
    assert [j["status"] for j in jobs] == ["succeeded"] * 6
    for job_id in job_ids:
        events = services.fine_tuning.events(job_id, limit=100).data
        assigned = [e["message"] for e in events if e["message"].startswith("Job assigned")]
        assert len(assigned) == 1, assigned
        validated = [
            e for e in events if e["message"] == "Files validated, moving job to queued state"
        ]
        # ours, plus the provider's own (mirrored)
        assert len(validated) == 2
    # each job was created once at the provider
    remote = [(j["metadata"] or {}).get("distillery_job") for j in fake_openai.ft.jobs.values()]
    assert all(remote.count(job_id) == 1 for job_id in job_ids)


def test_stopped_worker_gives_its_jobs_back(services: Services) -> None:
    training = _upload(services)
    job_id = services.fine_tuning.create({"model": "gpt-4o", "training_file": training})["id"]
    first = JobWorker(services.fine_tuning, poll_s=0.05)
    deadline = time.monotonic() + 30
    while services.fine_tuning.retrieve(job_id)["status"] != "running":
        first.tick()
        assert time.monotonic() < deadline
    assert services.fine_tuning.jobs.get(job_id).worker_id == first.worker_id
    first.release()  # what stop() does on shutdown
    assert services.fine_tuning.jobs.get(job_id).worker_id is None
    second = JobWorker(services.fine_tuning, poll_s=0.05).start()
    try:
        (job,) = _wait_all(services, [job_id])
    finally:
        second.stop()
    assert job["status"] == "succeeded"
    events = [e["message"] for e in services.fine_tuning.events(job_id, limit=100).data]
    assert any(m.startswith(f"Job resumed by worker {second.worker_id}") for m in events)


def test_run_inline_with_progress(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl())
    service = services.fine_tuning
    job = service.create_from_paths(model="gpt-4o", training=path, suffix="inline")
    seen: list[ProgressEvent] = []
    done = service.wait(job["id"], progress=seen.append, poll_s=0.05, inline=True)
    assert done["status"] == "succeeded" and done["fine_tuned_model"]
    assert service.jobs.get(job["id"]).worker_id is None
    steps = [(e.completed, e.total) for e in seen if e.total]
    assert steps and steps[-1] == (4.0, 4.0)
    assert seen[-1].info["status"] == "succeeded"
    assert "train_loss" in seen[-1].info


def _watch(component: ServeWorker, until: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Start ``component``, note its health until ``until(health)``, stop it; the healths seen."""

    async def main() -> list[dict[str, Any]]:
        seen = []
        await component.start()
        deadline = time.monotonic() + timeout
        try:
            while not seen or not until(seen[-1]):
                assert time.monotonic() < deadline, seen[-3:]
                await asyncio.sleep(0.01)
                seen.append(component.health())
        finally:
            await component.stop()
        return seen

    return asyncio.run(main())


def test_serve_worker_restarts_a_loop_that_died(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []

    def run(self: JobWorker) -> None:
        started.append(self.worker_id)
        if len(started) == 1:
            raise RuntimeError("the loop broke")
        self._stop.wait()

    monkeypatch.setattr(JobWorker, "run", run)
    component = ServeWorker(None, poll_s=0.01)  # type: ignore[arg-type]  # the loop is patched
    component.restart_delay_s = 0.05
    seen = _watch(component, lambda h: h["restarts"] == 1 and h["state"] == "running")
    assert any(h["state"] == "failed" for h in seen)  # shown while it was down
    assert "the loop broke" in str(seen[-1]["last_error"])
    assert len(started) == 2 and started[0] == started[1]  # the same worker id resumes its jobs
    assert component.health()["state"] == "stopped"


def test_a_failing_tick_is_shown_until_one_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks: list[int] = []

    def tick(self: JobWorker) -> None:
        ticks.append(1)
        if len(ticks) <= 3:
            raise RuntimeError("database unreachable")

    monkeypatch.setattr(JobWorker, "tick", tick)
    component = ServeWorker(None, poll_s=0.01)  # type: ignore[arg-type]  # tick is patched
    seen = _watch(component, lambda h: len(ticks) > 5 and h["state"] == "running")
    failed = [h for h in seen if h["state"] == "failed"]
    assert failed and "database unreachable" in str(failed[0]["last_error"])
    assert seen[-1]["restarts"] == 0  # a failing tick is no death: the loop goes on
