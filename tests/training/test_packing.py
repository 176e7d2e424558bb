"""Packed rows (one row, per-example attention) give the same loss and gradients as unpacked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distillery.training.local import packing
from distillery.training.local.config import LocalSFTConfig
from distillery.training.local.data import IGNORE_INDEX, TokenizedExample
from distillery.training.local.trainer import LocalSFTTrainer

pytestmark = [pytest.mark.training, pytest.mark.usefixtures("training_home")]


@pytest.fixture(scope="module")
def fp32_trainer(
    tmp_path_factory: pytest.TempPathFactory, torch_threads: None, converted_model: Path
) -> LocalSFTTrainer:
    from .chat_files import QUESTIONS, chat_record, write_jsonl

    tmp = tmp_path_factory.mktemp("packing")
    train = write_jsonl(tmp / "train.jsonl", [chat_record(q, c) for q, c in QUESTIONS[:3]])
    config = LocalSFTConfig(
        base_model_path=str(converted_model), bf16=False, device="cpu", threads=1, max_length=128
    )
    trainer = LocalSFTTrainer(config, train, None, tmp / "out")
    trainer._setup_runtime()
    trainer._load_data()
    trainer._load_model()
    # give the adapters non-zero B so that LoRA contributes to the outputs
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return trainer


def unpacked_reference(trainer: LocalSFTTrainer, examples: list[TokenizedExample]) -> Any:
    """Summed token loss through the model's own forward (HF loss), one example at a time."""
    import torch

    trainer.causal_lm.set_attn_implementation("sdpa")
    try:
        total = torch.zeros(())
        for ex in examples:
            out = trainer.model(
                input_ids=torch.tensor([ex.input_ids]),
                labels=torch.tensor([ex.labels]),
                use_cache=False,
            )
            total = total + out.loss * ex.n_target_tokens
        return total
    finally:
        trainer.causal_lm.set_attn_implementation(packing.PACKED_ATTENTION)


def lora_grads(trainer: LocalSFTTrainer) -> dict[str, Any]:
    return {
        n: p.grad.detach().clone()
        for n, p in trainer.model.named_parameters()
        if p.requires_grad and p.grad is not None
    }


def test_pack_layout() -> None:
    a = TokenizedExample([1, 2, 3], [IGNORE_INDEX, 2, 3])
    b = TokenizedExample([4, 5], [IGNORE_INDEX, 5])
    batch = packing.pack([a, b])
    assert batch.inputs["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    assert batch.inputs["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch.inputs["cu_seq_lens_q"].tolist() == [0, 3, 5]
    # shifted per example: the last token of `a` never predicts the first token of `b`
    assert batch.targets.tolist() == [2, 3, IGNORE_INDEX, 5, IGNORE_INDEX]
    passes = packing.split_passes([a, b, a], max_tokens=5)
    assert [len(p) for p in passes] == [2, 1]
    passes = packing.split_passes([a, b, a], max_tokens=100, min_passes=2)
    assert len(passes) >= 2 and [ex for p in passes for ex in p] == [a, b, a]


def test_packed_loss_and_grads_equal_unpacked(fp32_trainer: LocalSFTTrainer) -> None:
    import torch

    trainer = fp32_trainer
    examples = trainer.train_data.examples
    assert trainer.use_packing
    assert len(examples) == 3

    trainer.model.zero_grad(set_to_none=True)
    ref = unpacked_reference(trainer, examples)
    ref.backward()
    ref_grads = lora_grads(trainer)

    trainer.model.zero_grad(set_to_none=True)
    loss, correct, targets = trainer._loss(packing.pack(examples))
    loss.backward()
    packed_grads = lora_grads(trainer)

    assert targets == sum(ex.n_target_tokens for ex in examples)
    assert 0 <= correct <= targets
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-3)
    assert packed_grads.keys() == ref_grads.keys() and packed_grads
    for name, grad in ref_grads.items():
        # relative to the tensor's norm: fp32 summation order differs between the kernels
        error = float((packed_grads[name] - grad).norm() / grad.norm().clamp_min(1e-12))
        assert error < 1e-3, f"{name}: relative gradient error {error:.2e}"

    # the padded fallback agrees too
    trainer.model.zero_grad(set_to_none=True)
    pad_id = int(trainer.tokenizer.pad_token_id)
    padded_loss, _, padded_targets = trainer._loss(packing.pad(examples, pad_id))
    assert padded_targets == targets
    torch.testing.assert_close(padded_loss.detach(), ref.detach(), rtol=1e-4, atol=1e-3)


def test_packed_bf16_close_to_fp32(fp32_trainer: LocalSFTTrainer, tmp_path: Path) -> None:
    """bf16 autocast with packing stays close to the fp32 loss (sanity, not equality)."""
    import torch

    trainer = fp32_trainer
    examples = trainer.train_data.examples
    with torch.no_grad():
        fp32 = trainer._loss(packing.pack(examples))[0]
        trainer.use_bf16 = True
        try:
            bf16 = trainer._loss(packing.pack(examples))[0]
        finally:
            trainer.use_bf16 = False
    assert abs(float(bf16) - float(fp32)) / float(fp32) < 0.05


def _with_common_prefix(examples: list[TokenizedExample], length: int) -> list[TokenizedExample]:
    """The examples behind one shared system-prompt-like prefix (never trained on)."""
    prefix = [(7 * i + 11) % 5000 + 100 for i in range(length)]
    return [
        TokenizedExample(prefix + ex.input_ids, [IGNORE_INDEX] * length + ex.labels)
        for ex in examples
    ]


def test_shared_prefix_layout() -> None:
    p = list(range(100, 140))
    a = TokenizedExample([*p, 1, 2, 3], [IGNORE_INDEX] * 41 + [2, 3])
    b = TokenizedExample([*p, 4, 5], [IGNORE_INDEX] * 41 + [5])
    assert packing.shared_prefix_length([a, b]) == 40
    assert packing.shared_prefix_length([a]) == 0  # nothing to share
    short = TokenizedExample([*p[:10], 9], [IGNORE_INDEX] * 10 + [9])
    assert packing.shared_prefix_length([a, short]) == 0  # under the minimum worth sharing
    batch = packing.pack_shared([a, b], 40)
    assert batch.inputs["input_ids"].tolist() == [[*p, 1, 2, 3, 4, 5]]
    assert batch.inputs["position_ids"].tolist() == [[*range(40), 40, 41, 42, 40, 41]]
    assert batch.inputs["cu_seq_lens_q"].tolist() == [0, 40, 43, 45]
    assert batch.targets.tolist() == [IGNORE_INDEX] * 40 + [2, 3, IGNORE_INDEX, 5, IGNORE_INDEX]
    assert batch.n_tokens == a.n_tokens + b.n_tokens


@pytest.mark.parametrize("sdpa_min_length", [packing.SDPA_MIN_LENGTH, 40], ids=["explicit", "sdpa"])
def test_shared_prefix_loss_and_grads_equal_unpacked(
    fp32_trainer: LocalSFTTrainer, sdpa_min_length: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prefix is computed once per pass, yet loss and gradients equal the examples run one
    by one (gradients from every example flow back through the one prefix) - whether the prefix
    segment's attention is explicit or torch's fused causal kernel (long prefixes)."""
    import torch

    monkeypatch.setattr(packing, "SDPA_MIN_LENGTH", sdpa_min_length)
    trainer = fp32_trainer
    examples = _with_common_prefix(list(trainer.train_data.examples), 48)
    prefix = packing.shared_prefix_length(examples)
    assert prefix >= 48

    trainer.model.zero_grad(set_to_none=True)
    ref = unpacked_reference(trainer, examples)
    ref.backward()
    ref_grads = lora_grads(trainer)

    trainer.model.zero_grad(set_to_none=True)
    batch = packing.pack_shared(examples, prefix)
    assert batch.inputs["input_ids"].shape[1] < sum(ex.n_tokens for ex in examples)
    loss, _, targets = trainer._loss(batch)
    loss.backward()
    shared_grads = lora_grads(trainer)

    assert targets == sum(ex.n_target_tokens for ex in examples)
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-3)
    for name, grad in ref_grads.items():
        error = float((shared_grads[name] - grad).norm() / grad.norm().clamp_min(1e-12))
        assert error < 1e-3, f"{name}: relative gradient error {error:.2e}"
    # the trainer picks the shared layout by itself for such a step
    batches = trainer._batches(examples, 1)
    assert len(batches) == 1 and batches[0].inputs.get("shared_prefix") == prefix


def test_long_segment_attention_matches_the_explicit_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long causal segment through fused SDPA equals the explicit scores path, with GQA."""
    import torch

    torch.manual_seed(0)
    heads, kv_heads, dim, length = 6, 2, 16, 600
    q = torch.randn(1, heads, length + 20, dim, requires_grad=True)
    k = torch.randn(1, kv_heads, length + 20, dim, requires_grad=True)
    v = torch.randn(1, kv_heads, length + 20, dim, requires_grad=True)
    module = torch.nn.Module()
    cu = torch.tensor([0, length, length + 20])

    def run(threshold: int) -> tuple[Any, ...]:
        monkeypatch.setattr(packing, "SDPA_MIN_LENGTH", threshold)
        for t in (q, k, v):
            t.grad = None
        out, _ = packing.packed_attention(
            module, q, k, v, None, cu_seq_lens_q=cu, shared_prefix=length
        )
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        return out.detach(), q.grad.clone(), k.grad.clone(), v.grad.clone()  # type: ignore[union-attr]

    for fused, explicit in zip(run(512), run(10_000), strict=True):
        torch.testing.assert_close(fused, explicit, rtol=1e-4, atol=1e-4)


def test_logits_in_chunks_give_the_same_loss_grads_and_first_choices(
    fp32_trainer: LocalSFTTrainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunked logits (recomputed in the backward pass) equal the whole-batch computation."""
    import torch

    from distillery.training.local import steps

    trainer = fp32_trainer
    batch = packing.pack(trainer.train_data.examples)
    results = []
    for elements in (1 << 30, 7 * int(trainer.student.lm_head.weight.shape[0])):  # 1 and 7 rows
        monkeypatch.setattr(steps, "LOGITS_CHUNK_ELEMENTS", elements)
        trainer.model.zero_grad(set_to_none=True)
        hits: list[Any] = []
        loss, correct, targets = trainer._loss(batch, hits)
        loss.backward()
        results.append((loss.detach(), correct, targets, torch.cat(hits), lora_grads(trainer)))
    (whole, c1, t1, h1, g1), (chunked, c2, t2, h2, g2) = results
    assert t1 == t2 > 64 and c1 == c2 and torch.equal(h1, h2)  # ...so several chunks of 64
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-4)
    for name, grad in g1.items():
        error = float((g2[name] - grad).norm() / grad.norm().clamp_min(1e-12))
        assert error < 1e-4, f"{name}: relative gradient error {error:.2e}"
