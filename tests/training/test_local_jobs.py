"""Real (tiny) fine-tuning jobs of the embedded student, driven through the openai SDK.

The worker inside the live gateway runs each job in its own subprocess; the job's events and
checkpoints are mirrored into the store; the fine-tuned model and every checkpoint are served by
the local provider the moment the job succeeds. Cancel stops the training process; a crashed
training resumes from its last checkpoint on another worker.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from distillery.services import Services, build_services
from distillery.settings import Settings
from distillery.training.local.backend import worker_alive
from distillery.worker import JobWorker
from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.ft import EXAMPLES, jsonl, upload, wait_for

pytestmark = pytest.mark.training

LOCAL = "smollm2-135m-instruct"
TINY = {"max_length": 64, "lora_r": 4, "lora_alpha": 8}  # keep every run small on 2 CPU cores


def _method(n_epochs: int, batch_size: int) -> dict[str, Any]:
    hyper = {"n_epochs": n_epochs, "batch_size": batch_size}
    return {"type": "supervised", "supervised": {"hyperparameters": hyper}}


def _pid(job_dir: Path, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int((job_dir / "worker.pid").read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.1)
    raise AssertionError(f"no worker.pid in {job_dir}")


def test_local_job_trains_and_its_model_is_served(client: openai.OpenAI, home: Path) -> None:
    training = upload(client)
    validation = upload(client, jsonl(EXAMPLES[:4]))
    job = client.fine_tuning.jobs.create(
        model=LOCAL,
        training_file=training,
        validation_file=validation,
        suffix="router",
        seed=7,
        method=_method(2, 12),  # one step per epoch
        # both epochs run whatever the validation measure says (no early stop)
        extra_body={"distillery": {**TINY, "early_stopping_patience": 0}},
    )
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (2, 12)
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    short = job.id.removeprefix("ftjob-")[:8]
    assert done.fine_tuned_model == f"ft:{LOCAL}:router:{short}"
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.finished_at is not None and done.estimated_finish is None
    # the step metrics, and the task's measure per epoch with the epoch kept
    steps_csv, selection_csv = (
        client.files.content(f).text.splitlines() for f in done.result_files
    )
    assert steps_csv[0].startswith("step,train_loss")
    assert selection_csv[0] == "epoch,valid_exact_match,valid_loss,kept"  # labels as answers
    assert [row.split(",")[0] for row in selection_csv[1:]] == ["0", "1", "2"]
    assert sum(int(row.split(",")[-1]) for row in selection_csv[1:]) == 1
    assert (home / "jobs" / job.id / "adapter" / "adapter_config.json").is_file()

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    texts = [e.message for e in events]
    assert texts[-1].startswith("Validating training file")  # newest first
    assert "Files validated, moving job to queued state" in texts
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and all(e.data and "train_loss" in e.data for e in metrics)  # type: ignore[operator]
    assert {e.data["step"] for e in metrics} == {1, 2}  # type: ignore[index]
    assert f"New fine-tuned model created: {done.fine_tuned_model}" in texts
    assert texts.count("The job has successfully completed") == 1
    (completed,) = [e for e in events if e.message == "The job has successfully completed"]
    assert completed.data and completed.data["peak_rss_mb"] > 100  # type: ignore[index]  # the worker's

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [2, 1]
    for c in checkpoints:
        assert c.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-{c.step_number}"
        assert c.metrics.train_loss is not None and c.metrics.valid_loss is not None
        assert c.metrics.valid_mean_token_accuracy is not None

    listed = [m.id for m in client.models.list()]
    assert done.fine_tuned_model in listed
    assert checkpoints[1].fine_tuned_model_checkpoint in listed
    for model in (done.fine_tuned_model, checkpoints[1].fine_tuned_model_checkpoint):
        answer = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "VPN password reset?"}],
            max_tokens=8,
            temperature=0,
        )
        assert answer.model == model
        assert answer.choices[0].message.content


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_full_fine_tuning_job_is_served_as_a_model_of_its_own(
    client: openai.OpenAI, home: Path
) -> None:
    job = client.fine_tuning.jobs.create(
        model=LOCAL,
        training_file=upload(client),
        suffix="full",
        method=_method(1, 12),  # one step
        extra_body={"distillery": {"method": "full", "max_length": 64}},
    )
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    final = home / "jobs" / job.id / "adapter"
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    assert not (final / "adapter_config.json").exists()
    checkpoint = client.fine_tuning.jobs.checkpoints.list(job.id).data[0]
    for model in (done.fine_tuned_model, checkpoint.fine_tuned_model_checkpoint):
        assert model is not None
        answer = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "VPN password reset?"}],
            max_tokens=8,
            temperature=0,
        )
        assert answer.model == model and answer.choices[0].message.content


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cancel_stops_the_training_process(client: openai.OpenAI, home: Path) -> None:
    job = client.fine_tuning.jobs.create(
        model=LOCAL,
        training_file=upload(client),
        method=_method(30, 4),
        extra_body={"distillery": TINY},
    )
    pid = _pid(home / "jobs" / job.id)
    deadline = time.monotonic() + 600
    while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id)):
        assert time.monotonic() < deadline, "training never reported a step"
        time.sleep(0.3)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    deadline = time.monotonic() + 60  # a generous bound: the trainer checks before every layer
    while worker_alive(pid):
        assert time.monotonic() < deadline, "the training process is still running"
        time.sleep(0.2)
    time.sleep(1.5)  # the worker mirrors the trainer's last events
    final = client.fine_tuning.jobs.retrieve(job.id)
    assert final.status == "cancelled" and final.fine_tuned_model is None
    texts = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Fine-tuning job cancelled" in texts
    short = job.id.removeprefix("ftjob-")[:8]
    assert f"ft:{LOCAL}::{short}" not in [m.id for m in client.models.list()]


@pytest.fixture
def services(home: Path, fake_openai: FakeOpenAI, tmp_path: Path) -> Iterator[Services]:
    config = write_config(home, fake_openai)
    svc = build_services(
        Settings(home=home, database_url=f"sqlite:///{tmp_path / 'w.db'}", config=config)
    )
    yield svc
    svc.store.close()


def test_crashed_training_resumes_from_its_last_checkpoint(services: Services, home: Path) -> None:
    service = services.fine_tuning
    training = service.files.add(jsonl(), filename="train.jsonl", purpose="fine-tune").id
    job_id = service.create(
        {
            "model": LOCAL,
            "training_file": training,
            "method": _method(3, 12),
            "distillery": TINY,
        }
    )["id"]
    first = JobWorker(service, poll_s=0.2).start()
    deadline = time.monotonic() + 600
    while not service.checkpoints(job_id).data:
        assert time.monotonic() < deadline, service.retrieve(job_id)
        assert service.retrieve(job_id)["status"] in ("validating_files", "queued", "running")
        time.sleep(0.2)
    # crash: the worker dies without giving the job back, and its training process with it
    first.release = lambda: None  # type: ignore[method-assign]
    first.stop()
    os.killpg(_pid(home / "jobs" / job_id), signal.SIGKILL)
    assert service.retrieve(job_id)["status"] == "running"

    service.claims.stale_after_s = 1.0  # (60 s in production)
    second = JobWorker(service, poll_s=0.2).start()
    try:
        deadline = time.monotonic() + 900
        while (job := service.retrieve(job_id))["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.3)
    finally:
        second.stop()
    assert job["status"] == "succeeded", job["error"]
    texts = [e["message"] for e in service.events(job_id, limit=100).data]
    assert any(t.startswith(f"Job resumed by worker {second.worker_id}") for t in texts)
    assert any(t.startswith("Resumed from checkpoint epoch-1") for t in texts), texts
    steps = [c["step_number"] for c in service.checkpoints(job_id).data]
    assert steps == [3, 2, 1]
    assert services.fine_tuned_models.get(job["fine_tuned_model"]) is not None
