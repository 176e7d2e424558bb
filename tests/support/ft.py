"""Helpers of the fine-tuning job tests: tiny training files, waiting for a job."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import openai
from openai.types.fine_tuning import FineTuningJob

# ~12 short bilingual examples: a tiny, real training set for the embedded student
EXAMPLES = [
    ("VPN password reset?", "IT"),
    ("有給の申請は？", "労務"),
    ("Book a meeting room?", "総務"),
    ("経費精算の締め日は？", "経理"),
    ("Referral bonus?", "人事"),
    ("残業の上限は？", "労務"),
    ("Laptop screen broken.", "IT"),
    ("名刺の発注は？", "総務"),
    ("Performance review date?", "人事"),
    ("請求書の送付先は？", "経理"),
    ("Remote work on Fridays?", "労務"),
    ("MFAの設定は？", "IT"),
]
TERMINAL = ("succeeded", "failed", "cancelled")


def jsonl(examples: list[tuple[str, str]] = EXAMPLES) -> bytes:
    lines = [
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
            ensure_ascii=False,
        )
        for q, a in examples
    ]
    return ("\n".join(lines) + "\n").encode()


def upload(client: openai.OpenAI, data: bytes | None = None, purpose: str = "fine-tune") -> str:
    f = client.files.create(file=("train.jsonl", io.BytesIO(data or jsonl())), purpose=purpose)  # type: ignore[arg-type]
    return f.id


def wait_for(
    client: openai.OpenAI, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 900
) -> FineTuningJob:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")
        time.sleep(0.3)


def messages(client: openai.OpenAI, job_id: str) -> list[Any]:
    return list(client.fine_tuning.jobs.list_events(job_id, limit=100))
