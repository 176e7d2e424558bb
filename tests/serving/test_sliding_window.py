"""Hybrid and sliding-window attention in the engine: greedy output equals ``model.generate``.

Tiny random models of each family (``tiny_families``: Llama, Qwen2, Qwen3, Gemma 3, Mistral,
Phi-3) with windows shorter than the prompts, served by the engine alone, eight at a time (left
padding), with a shared prompt prefix (masked holes, then the prefix cache), joining a running
batch (re-layout, placement into free slots) and with a LoRA adapter; each answer is compared
token for token with transformers' own greedy generation of the same prompt ids. An
architecture the engine cannot run exactly is refused with a 400 naming it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from distillery.errors import DistilleryError
from distillery.providers.local_config import LocalProviderConfig
from distillery.serving import LocalProvider
from distillery.serving.adapters import AdapterRef
from distillery.serving.engine import (
    ChoiceFinished,
    GenerationEngine,
    PreparedRequest,
    RequestDone,
    RequestFailed,
    RequestHandle,
    TextDelta,
)
from distillery.serving.sampling import SamplingParams
from tests.support.tiny_families import (
    EOS,
    FAMILIES,
    VOCAB,
    WINDOWS,
    random_lora_dir,
    tiny_family_dir,
)

from .conftest import run

pytestmark = pytest.mark.local_model

NEW_TOKENS = 16
LENGTHS = [40, 33, 45, 21, 40, 52, 17, 38]


@dataclass
class Answer:
    text: str
    tokens: int
    cached: int = 0


@dataclass
class Family:
    name: str
    engine: GenerationEngine
    adapter: AdapterRef
    tokenizer: Any
    base: Any  # reference models, transformers' default attention
    lora: Any

    def expected(self, prompt: list[int], *, adapter: bool = False) -> Answer:
        import torch

        model = self.lora if adapter else self.base
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([prompt]),
                attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                eos_token_id=EOS,
                pad_token_id=EOS,
            )
        ids = out[0, len(prompt) :].tolist()
        if EOS in ids:
            ids = ids[: ids.index(EOS)]
        return Answer(self.tokenizer.decode(ids, skip_special_tokens=True), len(ids))


def prompt(seed: int, length: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, VOCAB) for _ in range(length)]


@pytest.fixture(scope="module", params=FAMILIES)
def family(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Family]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    name: str = request.param
    root = tmp_path_factory.mktemp(f"tiny-{name}")
    folder = tiny_family_dir(root / "model", name)
    adapter_dir = random_lora_dir(folder, root / "adapter")
    engine = GenerationEngine(
        model_name=f"tiny-{name}",
        source_path=str(folder),
        device="cpu",
        dtype="float32",
        max_batch_size=8,
        adapter_memory_mb=64,
        threads=1,
    )
    engine.start()
    engine.ready.result(timeout=120)
    base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    lora_base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    lora = PeftModel.from_pretrained(lora_base, str(adapter_dir)).eval()
    adapter = AdapterRef(f"ft:tiny-{name}:test:lora", f"tiny-{name}", adapter_dir)
    yield Family(name, engine, adapter, AutoTokenizer.from_pretrained(str(folder)), base, lora)
    engine.stop()
    engine.join(10)


async def _collect(handle: RequestHandle, started: asyncio.Event) -> Answer:
    text, tokens, cached = "", 0, 0
    async for event in handle.events():
        started.set()
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, ChoiceFinished):
            tokens = event.completion_tokens
        elif isinstance(event, RequestDone):
            cached = event.cached_tokens
        elif isinstance(event, RequestFailed):
            raise event.error
    return Answer(text, tokens, cached)


def serve(
    family: Family, prompts: list[list[int]], adapters: list[bool] | None = None, *, waves: int = 1
) -> list[Answer]:
    """Submit ``prompts`` together (in ``waves``: each wave once the previous one is running)."""
    flags = adapters or [False] * len(prompts)

    async def main() -> list[Answer]:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[Answer]] = []
        per_wave = -(-len(prompts) // waves)
        for start in range(0, len(prompts), per_wave):
            started = asyncio.Event()
            for ids, flag in zip(
                prompts[start : start + per_wave], flags[start : start + per_wave], strict=True
            ):
                handle = RequestHandle(loop)
                params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS)
                prepared = PreparedRequest(ids, params, NEW_TOKENS, params.choice_seeds())
                family.engine.submit(prepared, family.adapter if flag else None, handle)
                tasks.append(asyncio.create_task(_collect(handle, started)))
            if start + per_wave < len(prompts):
                await started.wait()  # the next wave joins a running batch
        return list(await asyncio.gather(*tasks))

    return run(main())


def check(family: Family, prompts: list[list[int]], answers: list[Answer], adapters: Any) -> None:
    flags = adapters or [False] * len(prompts)
    for i, (ids, answer, flag) in enumerate(zip(prompts, answers, flags, strict=True)):
        want = family.expected(ids, adapter=flag)
        assert (answer.text, answer.tokens) == (want.text, want.tokens), (
            f"{family.name}: prompt {i} ({len(ids)} tokens, adapter={flag}) diverged"
        )


def test_windows_are_shorter_than_the_prompts(family: Family) -> None:
    window = WINDOWS[family.name]
    assert family.engine._windows == (() if window is None else (window,))
    assert window is None or window < min(LENGTHS[:3])


def test_alone_equals_generate_and_the_prefix_cache_too(family: Family) -> None:
    prompts = [prompt(1, 40), prompt(2, 52), prompt(3, 21)]
    for ids in prompts:
        check(family, [ids], serve(family, [ids]), None)
    # the same prompt again: all but its last token come from the prefix cache
    again = serve(family, [prompts[0]])
    assert again[0].cached == len(prompts[0]) - 1
    check(family, [prompts[0]], again, None)


def test_eight_concurrent_requests_equal_generate(family: Family) -> None:
    prompts = [prompt(10 + i, n) for i, n in enumerate(LENGTHS)]
    check(family, prompts, serve(family, prompts), None)
    # four running, four joining the running batch
    check(family, prompts, serve(family, prompts, waves=2), None)


def test_shared_prefix_longer_than_the_window(family: Family) -> None:
    head = prompt(99, 24)
    prompts = [head + prompt(20 + i, n - 12) for i, n in enumerate(LENGTHS)]
    check(family, prompts, serve(family, prompts), None)
    # the prefix is cached now: a second group reuses it
    answers = serve(family, prompts[2:6])
    assert [a.cached for a in answers] == [len(head)] * 4
    check(family, prompts[2:6], answers, None)


def test_lora_batches_equal_the_adapters_generate(family: Family) -> None:
    prompts = [prompt(30 + i, n) for i, n in enumerate(LENGTHS)]
    check(family, prompts[:1], serve(family, prompts[:1], [True]), [True])  # alone
    flags = [i % 2 == 0 for i in range(len(prompts))]  # a base and an adapter batch, in turn
    check(family, prompts, serve(family, prompts, flags), flags)
    everyone = [True] * len(prompts)
    check(family, prompts, serve(family, prompts, everyone, waves=2), everyone)


# ---------------------------------------------------------------------------------------------
# Through the local provider


def _provider(name: str, folder: Path) -> LocalProvider:
    config = LocalProviderConfig(models=[name], paths={name: str(folder)}, device="cpu", threads=1)
    return LocalProvider("local", config, dtype="float32")


def _body(name: str) -> dict[str, Any]:
    return {
        "model": name,
        "messages": [{"role": "user", "content": "こんにちは"}],
        "max_tokens": 4,
        "temperature": 0,
    }


def test_a_sliding_window_gemma_3_is_served_by_the_provider(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A Gemma 3 folder with sliding-window layers was refused with a 500; it is served now."""
    folder = tiny_family_dir(tmp_path_factory.mktemp("provider-gemma3"), "gemma3")
    provider = _provider("tiny-gemma3", folder)
    try:
        out = run(provider.create(_body("tiny-gemma3")))
    finally:
        run(provider.aclose())
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    assert isinstance(out["choices"][0]["message"]["content"], str)


def _phimoe_dir(folder: Path) -> Path:
    """Phi-MoE slides every layer in its own mask builder only (no window reaches the attention
    function): the engine cannot apply it, so it must refuse the model."""
    import torch
    from transformers import PhimoeConfig, PhimoeForCausalLM

    from tests.support.tiny_families import word_tokenizer_dir

    word_tokenizer_dir(folder, "phimoe")
    torch.manual_seed(0)
    config = PhimoeConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=2,
        num_experts_per_tok=1,
        max_position_embeddings=256,
        sliding_window=8,
        eos_token_id=EOS,
        bos_token_id=2,
        pad_token_id=0,
    )
    PhimoeForCausalLM(config).save_pretrained(str(folder))
    return folder


def _gemma2_dir(folder: Path) -> Path:
    """Gemma 2 soft-caps its attention logits, which SDPA cannot do."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from tests.support.tiny_families import word_tokenizer_dir

    word_tokenizer_dir(folder, "gemma2")
    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=8,
        eos_token_id=EOS,
        bos_token_id=2,
        pad_token_id=0,
    )
    Gemma2ForCausalLM(config).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize(
    ("build", "architecture", "why"),
    [
        (_phimoe_dir, "PhimoeForCausalLM", "sliding windows"),
        (_gemma2_dir, "Gemma2ForCausalLM", "soft-capping"),
    ],
    ids=["phimoe", "gemma2"],
)
def test_an_architecture_it_cannot_run_exactly_is_a_400(
    tmp_path_factory: pytest.TempPathFactory, build: Any, architecture: str, why: str
) -> None:
    folder = build(tmp_path_factory.mktemp(architecture))
    provider = _provider("tiny-unsupported", folder)
    try:
        with pytest.raises(DistilleryError) as info:
            run(provider.create(_body("tiny-unsupported")))
    finally:
        run(provider.aclose())
    error = info.value
    assert error.status == 400, error.message
    assert error.code == "model_not_supported"
    assert architecture in error.message and why in error.message
