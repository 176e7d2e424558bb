"""The provider backend end to end: a job on an `openai` provider's model runs at the provider
(the fake's files and fine-tuning endpoints), is mirrored to ``succeeded`` with its events and
checkpoints, and its model is registered and served through that provider (SQLite + PostgreSQL).
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
from sqlalchemy import select

from distillery.store.tables import FineTuningJobRow
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.ft import upload, wait_for

KEY = "sk-test-secret-value-123456"  # the fake provider's key (tests/conftest.py's gateway)


def _remote(fake: FakeOpenAI, job_id: str) -> dict[str, Any] | None:
    """The fake provider's job created for distillery job ``job_id``."""
    for job in list(fake.ft.jobs.values()):
        if (job["metadata"] or {}).get("distillery_job") == job_id:
            return job
    return None


def test_openai_job_is_mirrored_and_its_model_served(
    client: openai.OpenAI, gateway: Any, fake_openai: FakeOpenAI
) -> None:
    training, validation = upload(client), upload(client)
    calls_before = len(fake_openai.ft.calls)
    job = client.fine_tuning.jobs.create(
        model="gpt-4o",
        training_file=training,
        validation_file=validation,
        suffix="router",
        seed=42,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        metadata={"team": "support"},
    )
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == "auto"
    done = wait_for(client, job.id, timeout=120)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model is not None
    assert done.fine_tuned_model.startswith("ft:gpt-4o:org-fake:router:")
    assert done.trained_tokens == 1234 and done.finished_at is not None
    # the values the provider resolved replace "auto"
    assert (
        done.hyperparameters.batch_size == 1
        and done.hyperparameters.learning_rate_multiplier == 1.8
    )
    assert len(done.result_files) == 1
    assert client.files.retrieve(done.result_files[0]).purpose == "fine-tune-results"

    # what reached the provider: two uploads and one job, with the provider's key
    remote_job = _remote(fake_openai, job.id)
    assert remote_job is not None and remote_job["model"] == "gpt-4o"
    assert remote_job["seed"] == 42 and remote_job["validation_file"] is not None
    assert remote_job["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    calls = fake_openai.ft.calls[calls_before:]
    assert [c[1] for c in calls if c[0] == "POST"][:3] == [
        "/v1/files",
        "/v1/files",
        "/v1/fine_tuning/jobs",
    ]
    assert all(c[2].get("authorization") == f"Bearer {KEY}" for c in calls)

    # events and checkpoints mirrored
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    texts = [e.message for e in events]
    assert any(t.startswith("Step 4/4") for t in texts)
    assert "The job has successfully completed" in texts
    assert sum(t == "The job has successfully completed" for t in texts) == 1
    assert any(e.type == "metrics" and e.data and e.data["step"] == 2 for e in events)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [4, 2]
    assert checkpoints[0].metrics.valid_loss == pytest.approx(2.5 / 4)
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-4"

    # registered and served through the provider
    listed = {m.id: m.owned_by for m in client.models.list()}
    assert listed[done.fine_tuned_model] == "fake"
    assert client.models.retrieve(done.fine_tuned_model).id == done.fine_tuned_model
    answer = client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "ping"}]
    )
    assert answer.choices[0].message.content == "echo: ping"
    assert fake_openai.requests[-1]["model"] == done.fine_tuned_model
    ckpt = checkpoints[1].fine_tuned_model_checkpoint
    client.chat.completions.create(model=ckpt, messages=[{"role": "user", "content": "x"}])
    assert fake_openai.requests[-1]["model"] == ckpt

    # the provider's key is nowhere in the store
    with gateway.services.store.read() as session:
        row = session.scalar(select(FineTuningJobRow).where(FineTuningJobRow.id == job.id))
        assert KEY not in json.dumps([row.body, row.state])


def test_provider_failure_and_cancel_are_mirrored(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    failed = client.fine_tuning.jobs.create(model="fail-500", training_file=upload(client))
    done = wait_for(client, failed.id, timeout=120)
    assert done.status == "failed"
    assert done.error is not None and done.error.message == "scripted failure"
    assert any(e.level == "error" for e in client.fine_tuning.jobs.list_events(failed.id))

    running = client.fine_tuning.jobs.create(model="gpt-4o", training_file=upload(client))
    wait_for(client, running.id, statuses=("running",), timeout=60)
    # wait until the remote job exists, then cancel: the remote job is cancelled too
    deadline = time.monotonic() + 60
    while (remote := _remote(fake_openai, running.id)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert remote is not None
    assert client.fine_tuning.jobs.cancel(running.id).status == "cancelled"
    while remote["status"] != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert remote["status"] == "cancelled"
    assert client.fine_tuning.jobs.retrieve(running.id).status == "cancelled"
