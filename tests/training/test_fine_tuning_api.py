"""``/v1/fine_tuning/jobs`` through the openai SDK against a live gateway (SQLite + PostgreSQL).

Requests are validated like OpenAI's (400 with ``param``); ``"auto"`` hyperparameters are resolved
with the local trainer's rules; a job whose data is invalid fails at ``validating_files`` saying
why. The training runs themselves are in ``test_local_jobs.py`` and ``test_openai_ft.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.fine_tuning import FineTuningJob

from tests.support.ft import EXAMPLES, jsonl, upload, wait_for

LOCAL = "smollm2-135m-instruct"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"suffix": "s" * 65}, "suffix"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"model": "no-such-model"}, "model"),
        ({"training_file": "file-doesnotexist"}, "training_file"),
        ({"validation_file": "file-doesnotexist"}, "validation_file"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
            "method.supervised.hyperparameters.n_epochs",
        ),
        ({"hyperparameters": {"batch_size": "big"}}, "hyperparameters.batch_size"),
        (
            {"hyperparameters": {"learning_rate_multiplier": -1}},
            "hyperparameters.learning_rate_multiplier",
        ),
        ({"seed": -5}, "seed"),
        ({"method": {"type": "dpo", "dpo": {}}}, "method.type"),
        ({"extra_body": {"distillery": {"bogus": 1}}}, "distillery.bogus"),
        ({"extra_body": {"distillery": {"lora_r": 0}}}, "distillery.lora_r"),
        ({"extra_body": {"distillery": {"n_epochs": 3}}}, "distillery.n_epochs"),
        (
            {"model": "gpt-4o", "extra_body": {"distillery": {"max_length": 64}}},
            "distillery.max_length",
        ),
    ],
)
def test_create_rejects_invalid_requests(
    client: openai.OpenAI, params: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {"model": LOCAL, "training_file": upload(client), **params}
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(**body)
    assert err.value.status_code == 400
    assert err.value.body["param"] == param  # type: ignore[index]
    assert client.fine_tuning.jobs.list().data == []


def test_training_file_must_have_purpose_fine_tune(client: openai.OpenAI) -> None:
    evals_file = upload(client, b'{"item": {"q": "x"}}\n', purpose="evals")
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model=LOCAL, training_file=evals_file)
    assert err.value.body["param"] == "training_file"  # type: ignore[index]
    assert "fine-tune" in err.value.message


def test_create_resolves_auto_and_echoes_parameters(client: openai.OpenAI, gateway: Any) -> None:
    training = upload(client)
    job = client.fine_tuning.jobs.create(
        model=LOCAL,
        training_file=training,
        suffix="router-v1",
        seed=1234,
        metadata={"prompt": "router", "lang": "ja"},
        hyperparameters={"n_epochs": "auto", "batch_size": "auto"},
    )
    assert isinstance(job, FineTuningJob)
    assert job.status == "validating_files"
    assert job.model == LOCAL and job.training_file == training
    assert job.seed == 1234 and job.metadata == {"prompt": "router", "lang": "ja"}
    # OpenAI's rules via the trainer's resolve_auto: 12 examples -> 100 // 12 epochs, batch 4
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (8, 4)
    assert job.hyperparameters.learning_rate_multiplier == 1.77  # 2.5 x sqrt(4 / 8)
    assert job.method is not None and job.method.type == "supervised"
    assert job.method.supervised is not None
    assert job.method.supervised.hyperparameters is not None
    assert job.method.supervised.hyperparameters.n_epochs == 8
    # the estimate is shown, but the trainer gets "auto" and resolves it from the data
    from distillery.store.jobs import JobsRepo
    from distillery.training.job_claims import spec_of

    services = gateway.services
    spec = spec_of(JobsRepo(services.store).get(job.id), services.home / "jobs")
    assert spec.hyperparameters.n_epochs == "auto" and spec.hyperparameters.batch_size == "auto"
    # a seed is generated when absent
    other = client.fine_tuning.jobs.create(model=LOCAL, training_file=training)
    assert isinstance(other.seed, int)
    # cancel both before they train; cancelling twice is a 400
    for j in (job, other):
        cancelled = client.fine_tuning.jobs.cancel(j.id)
        assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)
    got = client.fine_tuning.jobs.retrieve(job.id)
    assert got.status == "cancelled" and got.fine_tuned_model is None
    listed = client.fine_tuning.jobs.list(metadata={"prompt": "router"})
    assert [j.id for j in listed.data] == [job.id]
    assert [j.id for j in client.fine_tuning.jobs.list(limit=1).data] == [other.id]
    assert [j.id for j in client.fine_tuning.jobs.list()] == [other.id, job.id]
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")


def test_invalid_data_fails_at_validating_files(client: openai.OpenAI, gateway: Any) -> None:
    # three examples: the upload is kept (with a warning) but a job needs at least ten
    few = upload(client, jsonl(EXAMPLES[:3]))
    job = wait_for(client, client.fine_tuning.jobs.create(model=LOCAL, training_file=few).id)
    assert job.status == "failed"
    assert job.error is not None and job.error.code == "invalid_n_examples"
    assert job.error.param == "training_file" and "at least 10" in job.error.message
    assert job.finished_at is not None and job.fine_tuned_model is None
    events = list(client.fine_tuning.jobs.list_events(job.id))
    assert any(e.level == "error" and "at least 10" in e.message for e in events)

    # a file whose content went bad after the upload
    broken = upload(client)
    path: Path = gateway.services.files.root / broken
    path.write_bytes(jsonl()[:-40] + b'\n{"messages": "nope"}\n')
    job = wait_for(client, client.fine_tuning.jobs.create(model=LOCAL, training_file=broken).id)
    assert job.status == "failed" and job.error is not None
    assert job.error.code == "invalid_file_format" and job.error.param == "training_file"
    assert "line" in job.error.message
