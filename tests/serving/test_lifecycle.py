"""Lazy imports and loading, load failures, shutdown, and batching equivalence."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from distillery import weights
from distillery.errors import DistilleryError
from distillery.serving import LocalProvider

from .conftest import MODEL, chat, make_provider, run

PROMPTS = [
    "What is the capital of France?",
    "Name three colours.",
    "有給休暇の申請方法を教えてください。",
    "How do I reset my password?",
    "Write a haiku about the sea.",
]


def test_importing_serving_does_not_import_torch() -> None:
    code = (
        "import sys, distillery.serving\n"
        "from distillery import plugins\n"
        "from distillery.serving import LocalProvider, AdapterRef\n"
        "from distillery.providers.local_config import LocalProviderConfig\n"
        "plugins.load('distillery.providers', 'local')\n"
        "LocalProvider('local', LocalProviderConfig(models=['smollm2-135m-instruct']))\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'llguidance') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def lifecycle(model_dir: Path, broken_dir: Path) -> Any:
    p = make_provider(model_dir, models=[MODEL, "broken"], paths={"broken": str(broken_dir)})
    yield p
    run(p.aclose())


@pytest.mark.local_model
def test_first_requests_share_one_load_off_the_event_loop(lifecycle: LocalProvider) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        tick_task = asyncio.create_task(ticker())
        responses = await asyncio.gather(
            *(lifecycle.create(chat(p, temperature=0, max_tokens=4)) for p in PROMPTS[:3])
        )
        done.set()
        await tick_task
        return responses, ticks

    responses, ticks = run(scenario())
    assert len(responses) == 3
    assert ticks > 3  # the loop kept running while the weights loaded in the engine thread
    (status,) = lifecycle.status()
    assert status.loaded and status.load_count == 1


@pytest.mark.local_model
def test_a_corrupt_model_fails_clearly_and_others_keep_serving(lifecycle: LocalProvider) -> None:
    broken = {"model": "broken", "messages": [{"role": "user", "content": "Hi"}]}
    for _ in range(2):  # a failed load is retried by the next request, and fails the same way
        with pytest.raises(DistilleryError) as info:
            run(lifecycle.create(broken))
        assert info.value.code == "model_load_failed"
        assert "broken" in info.value.message
    response = run(lifecycle.create(chat("Hi", max_tokens=3)))
    assert response["choices"][0]["message"]["content"]


@pytest.mark.local_model
def test_aclose_stops_the_engine_threads(lifecycle: LocalProvider) -> None:
    run(lifecycle.create(chat("Hi", max_tokens=2)))
    engines = list(lifecycle._engines.values())
    assert engines and all(e.thread.is_alive() for e in engines)
    run(lifecycle.aclose())
    assert not any(e.thread.is_alive() for e in engines)
    with pytest.raises(DistilleryError):
        run(lifecycle.create(chat("Hi", max_tokens=2)))


def generate_alone(model_dir: Path, conversations: list[list[dict[str, str]]]) -> list[str]:
    """What plain ``model.generate`` answers (float32, greedy, 16 tokens) to each conversation."""
    import torch

    source = weights.resolve_source(MODEL, model_dir)
    tokenizer = weights.load_tokenizer(source)
    model = weights.load_model(source, dtype="float32")
    expected = []
    with torch.inference_mode():
        for messages in conversations:
            ids = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            x = torch.tensor([ids])
            out = model.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=16, do_sample=False
            )
            expected.append(tokenizer.decode(out[0, x.shape[1] :], skip_special_tokens=True))
    return expected


@pytest.mark.local_model
def test_batched_generation_equals_one_at_a_time_and_generate(model_dir: Path) -> None:
    """In float32 the batch composition does not change greedy results: concurrent requests that
    join and leave the running batch produce exactly what ``model.generate`` produces alone."""
    expected = generate_alone(model_dir, [[{"role": "user", "content": p}] for p in PROMPTS])
    provider = make_provider(model_dir, dtype="float32", max_batch_size=3)

    async def staggered(i: int, prompt: str) -> dict[str, Any]:
        await asyncio.sleep(0.15 * i)  # join a batch that is already decoding
        return await provider.create(chat(prompt, temperature=0, max_tokens=16))

    async def scenario() -> tuple[list[str], list[str]]:
        together = await asyncio.gather(
            *(provider.create(chat(p, temperature=0, max_tokens=16)) for p in PROMPTS)
        )
        joined = await asyncio.gather(*(staggered(i, p) for i, p in enumerate(PROMPTS)))
        return (
            [r["choices"][0]["message"]["content"] for r in together],
            [r["choices"][0]["message"]["content"] for r in joined],
        )

    try:
        together, joined = run(scenario())
    finally:
        run(provider.aclose())
    assert together == expected
    assert joined == expected


@pytest.mark.local_model
def test_prefix_cache_reuses_the_system_prompt_without_changing_answers(model_dir: Path) -> None:
    """Requests sent one after the other with one system prompt: all but the first reuse its KV
    from the prefix cache, and every answer equals ``model.generate``'s for the full prompt."""
    system = (
        "You are the routing assistant of an internal helpdesk. Classify each inquiry as "
        "Labour, HR, General Affairs, Accounting or IT and answer with one word."
    )
    conversations = [
        [{"role": "system", "content": system}, {"role": "user", "content": p}] for p in PROMPTS
    ]
    expected = generate_alone(model_dir, conversations)
    provider = make_provider(model_dir, dtype="float32")

    async def one_by_one() -> list[dict[str, Any]]:
        responses = []
        for messages in conversations:
            body = {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 16}
            responses.append(await provider.create(body))
        return responses

    try:
        responses = run(one_by_one())
        (status,) = provider.status()
    finally:
        run(provider.aclose())
    assert [r["choices"][0]["message"]["content"] for r in responses] == expected
    assert status.prefix_cache_hits >= len(PROMPTS) - 1
    cached = [r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in responses]
    assert cached[0] == 0
    assert all(
        30 < c < r["usage"]["prompt_tokens"] for c, r in zip(cached[1:], responses[1:], strict=True)
    )
