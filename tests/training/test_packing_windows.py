"""Packed rows of sliding-window and hybrid models: same loss and gradients as unpacked.

Tiny random models of each family (``tiny_families``: Llama, Qwen2, Qwen3, Gemma 3 with five
sliding layers of six, Mistral, Phi-3) whose windows are shorter than the examples. The packed
forward (one row, per-example attention, each layer within its own window) and the shared-prefix
layout (a prefix longer than the window, computed once) give the loss and the LoRA gradients of
the examples run one by one through the model's own attention; so does the padded fallback. A
model whose window the packed attention cannot see trains padded.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distillery import weights
from distillery.training.local import packing
from distillery.training.local.config import LocalSFTConfig
from distillery.training.local.data import IGNORE_INDEX, TokenizedExample
from distillery.training.local.trainer import LocalSFTTrainer
from tests.support.tiny_families import (
    FAMILIES,
    VOCAB,
    WINDOWS,
    tiny_family_dir,
    word_tokenizer_dir,
)

pytestmark = [pytest.mark.training, pytest.mark.usefixtures("home")]

TARGETS = {"phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]}


def trainer_for(folder: Path, tmp: Path, family: str) -> LocalSFTTrainer:
    """The trainer's model as it trains it (LoRA, packed attention) for token-id examples (the
    tiny word-level tokenizer cannot render every family's chat template)."""
    import torch

    extra = {"target_modules": TARGETS[family]} if family in TARGETS else {}
    config = LocalSFTConfig(
        base_model_path=str(folder), bf16=False, device="cpu", threads=1, max_length=128, **extra
    )
    trainer = LocalSFTTrainer(config, tmp / "unused.jsonl", None, tmp / "out")
    trainer._setup_runtime()
    trainer.source = weights.resolve_source(config.base_model, config.base_model_path)
    trainer.tokenizer = weights.load_tokenizer(trainer.source)
    trainer.config = config.resolve_auto(len(examples()))
    trainer._load_model()
    torch.manual_seed(0)
    with torch.no_grad():  # non-zero B: the adapters contribute to outputs and gradients
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return trainer


@pytest.fixture(scope="module", params=FAMILIES)
def trainer(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalSFTTrainer]:
    import torch

    torch.set_num_threads(1)
    family: str = request.param
    tmp = tmp_path_factory.mktemp(f"packing-{family}")
    trainer = trainer_for(tiny_family_dir(tmp / "model", family), tmp, family)
    trainer.family = family  # type: ignore[attr-defined]
    yield trainer


def example(seed: int, length: int, prompt: int) -> TokenizedExample:
    rng = random.Random(seed)
    ids = [rng.randrange(3, VOCAB) for _ in range(length)]
    return TokenizedExample(ids, [IGNORE_INDEX] * prompt + ids[prompt:])


def examples() -> list[TokenizedExample]:
    return [example(1, 41, 20), example(2, 30, 9), example(3, 47, 30)]


def with_prefix(items: list[TokenizedExample], length: int) -> list[TokenizedExample]:
    """The examples behind one shared prompt prefix (never trained on)."""
    rng = random.Random(7)
    prefix = [rng.randrange(3, VOCAB) for _ in range(length)]
    return [
        TokenizedExample(prefix + ex.input_ids, [IGNORE_INDEX] * length + ex.labels) for ex in items
    ]


def unpacked(trainer: LocalSFTTrainer, items: list[TokenizedExample]) -> Any:
    """Summed token loss through the model's own forward and attention, one example at a time."""
    import torch

    trainer.causal_lm.set_attn_implementation("sdpa")
    try:
        total = torch.zeros(())
        for ex in items:
            out = trainer.model(
                input_ids=torch.tensor([ex.input_ids]),
                labels=torch.tensor([ex.labels]),
                use_cache=False,
            )
            total = total + out.loss * ex.n_target_tokens
        return total
    finally:
        trainer.causal_lm.set_attn_implementation(packing.PACKED_ATTENTION)


def grads(trainer: LocalSFTTrainer) -> dict[str, Any]:
    return {
        n: p.grad.detach().clone()
        for n, p in trainer.model.named_parameters()
        if p.requires_grad and p.grad is not None
    }


def assert_same(trainer: LocalSFTTrainer, items: list[TokenizedExample], batch: Any) -> None:
    import torch

    trainer.model.zero_grad(set_to_none=True)
    ref = unpacked(trainer, items)
    ref.backward()
    ref_grads = grads(trainer)

    trainer.model.zero_grad(set_to_none=True)
    loss, _, targets = trainer._loss(batch)
    loss.backward()
    got = grads(trainer)

    assert targets == sum(ex.n_target_tokens for ex in items)
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-3)
    assert got.keys() == ref_grads.keys() and got
    for name, grad in ref_grads.items():
        error = float((got[name] - grad).norm() / grad.norm().clamp_min(1e-12))
        assert error < 1e-3, f"{name}: relative gradient error {error:.2e}"


def test_the_trainer_packs_every_family(trainer: LocalSFTTrainer) -> None:
    family = trainer.family  # type: ignore[attr-defined]
    assert trainer.use_packing
    window = WINDOWS[family]
    assert window is None or window < min(ex.n_tokens for ex in examples())
    announced, unsupported = packing.announced_windows(trainer.causal_lm)
    assert not unsupported
    assert (window in announced) if window else set(announced) == {None}
    assert trainer.causal_lm.config._attn_implementation == packing.PACKED_ATTENTION


def test_packed_loss_and_grads_equal_unpacked(trainer: LocalSFTTrainer) -> None:
    items = examples()
    assert_same(trainer, items, packing.pack(items))


def test_shared_prefix_longer_than_the_window(trainer: LocalSFTTrainer) -> None:
    items = with_prefix(examples(), 36)
    prefix = packing.shared_prefix_length(items)
    assert prefix >= 36
    batches = trainer._batches(items, 1)
    assert len(batches) == 1 and batches[0].inputs.get("shared_prefix") == prefix
    assert_same(trainer, items, batches[0])


def test_padded_fallback_equals_unpacked(trainer: LocalSFTTrainer) -> None:
    import torch

    items = examples()
    with torch.no_grad():
        ref = unpacked(trainer, items)
        trainer.causal_lm.set_attn_implementation("sdpa")
        try:
            padded, _, _ = trainer._loss(packing.pad(items, 1))
        finally:
            trainer.causal_lm.set_attn_implementation(packing.PACKED_ATTENTION)
    torch.testing.assert_close(padded, ref, rtol=1e-4, atol=1e-3)


def test_a_window_the_packed_attention_cannot_see_trains_padded(tmp_path: Path) -> None:
    """Phi-MoE slides in its own mask builder only: packing it would attend past the window."""
    import torch
    from transformers import PhimoeConfig, PhimoeForCausalLM

    word_tokenizer_dir(tmp_path / "model", "phimoe")
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
    )
    model = PhimoeForCausalLM(config)
    assert not packing.supports_packing(model)
    assert model.config._attn_implementation == "sdpa"  # left as it was
