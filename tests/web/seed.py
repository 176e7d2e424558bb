"""Seed every area of a live gateway through its real interfaces: completions and evals through the
openai SDK, datasets and annotation queues through their services, a fine-tuning job (with metrics
events and a checkpoint) and a fine-tuned model through their repositories."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import openai

XSS = "<script>alert(1)</script>"
JA_QUESTION = "有給休暇の申請方法を教えてください。"
JA_CORRECTION = "勤怠システムの「休暇申請」から申請してください。"

CONTAINS_ECHO = {
    "type": "string_check",
    "name": "mentions echo",
    "input": "{{sample.output_text}}",
    "reference": "echo",
    "operation": "like",
}
NEVER = {
    "type": "string_check",
    "name": "exact answer",
    "input": "{{sample.output_text}}",
    "reference": "never said",
    "operation": "eq",
}


@dataclass
class Seeded:
    ids: dict[str, str]  # completion ids by name
    dataset_id: str
    queue_id: str
    eval_id: str
    run_ids: list[str]
    job_id: str
    model_id: str


def capture(client: openai.OpenAI) -> dict[str, str]:
    """Completions through the gateway: English, Japanese, markup, another prompt, a failure."""
    sent = {
        "en": ("How do I reset my password?", {"prompt": "support", "lang": "en"}),
        "ja": (JA_QUESTION, {"prompt": "support", "lang": "ja"}),
        "ja2": ("経費精算の締め日はいつですか？", {"prompt": "support", "lang": "ja"}),
        "xss": (f"Say {XSS} please", {"prompt": "xss", "note": XSS}),
        "other": ("route me", {"prompt": "router"}),
    }
    ids = {}
    for name, (text, metadata) in sent.items():
        resp = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": text}],
            store=True,
            metadata=metadata,
        )
        ids[name] = resp.id
    with contextlib.suppress(openai.BadRequestError):  # recorded as a failed completion
        client.chat.completions.create(
            model="fail-400",
            messages=[{"role": "user", "content": "x"}],
            store=True,
            metadata={"prompt": "support"},
        )
    return ids


def eval_with_runs(client: openai.OpenAI) -> tuple[str, list[str]]:
    """An eval over stored completions and two finished runs (support, router)."""
    ev = client.evals.create(
        name="support quality 品質",
        data_source_config={"type": "logs"},
        testing_criteria=[CONTAINS_ECHO, NEVER],  # type: ignore[list-item]
    )
    run_ids = []
    for prompt in ("support", "router"):
        run = client.evals.runs.create(
            ev.id,
            name=f"gpt-4o {prompt}",
            data_source={  # type: ignore[arg-type]
                "type": "completions",
                "source": {"type": "stored_completions", "metadata": {"prompt": prompt}},
            },
        )
        run_ids.append(run.id)
    for run_id in run_ids:
        wait_run(client, ev.id, run_id)
    return ev.id, run_ids


def wait_run(client: openai.OpenAI, eval_id: str, run_id: str, timeout: float = 60) -> Any:
    deadline = time.time() + timeout
    while True:
        run = client.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status not in ("queued", "in_progress"):
            return run
        if time.time() > deadline:
            raise AssertionError(f"run {run_id} still {run.status} after {timeout}s")
        time.sleep(0.05)


def job(services: Any) -> tuple[str, str]:
    """A succeeded local fine-tuning job with loss metrics, a checkpoint and its model."""
    from distillery.store.jobs import JobsRepo
    from distillery.store.models import FineTunedModelsRepo

    jobs = JobsRepo(services.store)
    now = int(time.time())
    job_id = "ftjob-webtest0001"
    model_id = "ft:smollm2-135m-instruct:support:webtest1"
    body = {
        "id": job_id,
        "object": "fine_tuning.job",
        "created_at": now,
        "error": None,
        "fine_tuned_model": model_id,
        "finished_at": now + 60,
        "hyperparameters": {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 2.0},
        "model": "smollm2-135m-instruct",
        "status": "succeeded",
        "trained_tokens": 12345,
        "training_file": "file-train",
        "validation_file": None,
        "user_provided_suffix": "support",
        "metadata": {},
    }
    jobs.insert(
        job_id=job_id, created_at=now, status="succeeded", backend="local", body=body, state={}
    )
    events = [
        (
            f"ftevent-web{step:03d}",
            now + step,
            {
                "id": f"ftevent-web{step:03d}",
                "object": "fine_tuning.job.event",
                "created_at": now + step,
                "level": "info",
                "message": f"Step {step}/10: training loss={2.5 - step * 0.2:.2f}",
                "type": "metrics",
                "data": {"step": step, "train_loss": 2.5 - step * 0.2, "total_steps": 10},
            },
        )
        for step in range(1, 11)
    ]
    events.append(
        (
            "ftevent-webdone",
            now + 60,
            {
                "id": "ftevent-webdone",
                "object": "fine_tuning.job.event",
                "created_at": now + 60,
                "level": "info",
                "message": f"The job has successfully completed <{model_id}>",
                "type": "message",
                "data": None,
            },
        )
    )
    jobs.add_events(job_id, events)
    jobs.add_checkpoint(
        job_id,
        "ftckpt-web5",
        now + 5,
        {
            "id": "ftckpt-web5",
            "object": "fine_tuning.job.checkpoint",
            "created_at": now + 5,
            "fine_tuned_model_checkpoint": model_id + ":ckpt-step-5",
            "fine_tuning_job_id": job_id,
            "step_number": 5,
            "metrics": {"step": 5.0, "train_loss": 1.5, "valid_loss": None},
        },
    )
    FineTunedModelsRepo(services.store).register(
        model_id,
        base_model="smollm2-135m-instruct",
        provider="local",
        adapter_path="/tmp/adapter",
        job_id=job_id,
    )
    return job_id, model_id


def everything(client: openai.OpenAI, services: Any) -> Seeded:
    ids = capture(client)
    version = services.datasets.create_version(
        "support-ja", {"source": {"metadata": {"prompt": "support"}}}
    )
    queue = services.annotations.create_queue(
        {
            "name": "support review レビュー",
            "source": {"type": "completions", "completion_ids": [ids["ja"], ids["en"]]},
            "priority": "oldest",
        }
    )
    eval_id, run_ids = eval_with_runs(client)
    job_id, model_id = job(services)
    return Seeded(
        ids=ids,
        dataset_id=version.dataset_id,
        queue_id=queue.id,
        eval_id=eval_id,
        run_ids=run_ids,
        job_id=job_id,
        model_id=model_id,
    )
