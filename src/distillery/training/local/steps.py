"""One optimizer step's forward passes: batching the examples and the loss on target tokens.

An epoch's steps take its examples in a seeded shuffle (the same for a given seed and epoch, so a
resumed run sees the order it would have seen) cut into ``batch_size`` pieces.

A step's examples are split into passes of at most ``max_tokens_per_pass`` tokens (at least
``gradient_accumulation_steps`` of them), each packed into one row (``packing.pack``, or
``packing.pack_shared`` when they share a long prompt prefix) or padded for models that cannot
pack. Logits are computed only where loss is taken: the decoder body runs on all tokens, then
``lm_head`` (49k columns for SmolLM2, 262k for Gemma 3) is applied to the hidden states of target
positions only, in chunks that training recomputes in the backward pass rather than keeps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distillery.training.local import packing
from distillery.training.local.config import LocalSFTConfig
from distillery.training.local.data import IGNORE_INDEX, TokenizedExample

if TYPE_CHECKING:
    import torch

    from distillery.training.local.student import Student


@dataclass
class StepStats:
    loss_sum: float = 0.0
    correct: int = 0
    targets: int = 0
    tokens: int = 0

    def add(self, other: StepStats) -> None:
        self.loss_sum += other.loss_sum
        self.correct += other.correct
        self.targets += other.targets
        self.tokens += other.tokens

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.targets)

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.targets)


def epoch_batches(
    examples: Sequence[TokenizedExample], *, seed: int, epoch: int, batch_size: int
) -> Iterator[list[TokenizedExample]]:
    """The examples of each optimizer step of ``epoch``, in the epoch's seeded order."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = [int(i) for i in torch.randperm(len(examples), generator=generator)]
    for start in range(0, len(order), batch_size):
        yield [examples[i] for i in order[start : start + batch_size]]


def make_batches(
    examples: Sequence[TokenizedExample],
    passes: int,
    *,
    config: LocalSFTConfig,
    use_packing: bool,
    pad_token_id: int,
) -> list[packing.ModelBatch]:
    """The forward passes of ``examples`` (at least ``passes`` of them where they split)."""
    cfg = config
    prefix = packing.shared_prefix_length(examples) if use_packing else 0
    if prefix:
        # The examples share a prompt prefix: each pass carries it once.
        rest = [ex.n_tokens - prefix for ex in examples]
        budget = max(1, min(cfg.max_tokens_per_pass - prefix, -(-sum(rest) // max(1, passes))))
        groups: list[list[TokenizedExample]] = [[]]
        used = 0
        for ex, n in zip(examples, rest, strict=True):
            if groups[-1] and used + n > budget:
                groups.append([])
                used = 0
            groups[-1].append(ex)
            used += n
        return [packing.pack_shared(g, prefix) if len(g) > 1 else packing.pack(g) for g in groups]
    groups = packing.split_passes(examples, max_tokens=cfg.max_tokens_per_pass, min_passes=passes)
    if use_packing:
        return [packing.pack(g) for g in groups]
    return [packing.pad(g, pad_token_id) for g in groups]


# Logits over a large vocabulary dominate a step's memory (Gemma 3: 262k columns, 1 GB in fp32
# per 1,000 target tokens): they are computed in chunks of about this many elements, and in
# training each chunk is recomputed in the backward pass instead of kept (a second lm_head
# matmul on target positions only, a few percent of a step).
LOGITS_CHUNK_ELEMENTS = 1 << 26


def target_loss(
    student: Student,
    batch: packing.ModelBatch,
    *,
    device: str,
    autocast: contextlib.AbstractContextManager[Any],
    first_choice: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, int, int]:
    """Summed cross-entropy over the target positions, number correct, number of targets;
    ``first_choice`` gets whether each target token was the model's argmax (in order)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    hidden, targets = _target_hidden(student, batch, device=device, autocast=autocast)
    vocab = int(student.lm_head.weight.shape[0])
    chunk = max(64, LOGITS_CHUNK_ELEMENTS // max(1, vocab))

    def chunk_loss(h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast:
            logits = student.lm_head(h)
        return _cross_entropy(student, logits.float(), t)

    losses: list[torch.Tensor] = []
    hits: list[torch.Tensor] = []
    for start in range(0, int(targets.numel()), chunk):
        h, t = hidden[start : start + chunk], targets[start : start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            loss, hit = checkpoint(chunk_loss, h, t, use_reentrant=False)
        else:
            loss, hit = chunk_loss(h, t)
        losses.append(loss)
        hits.append(hit)
    total = torch.stack(losses).sum() if losses else hidden.sum() * 0.0
    hit_all = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)
    if first_choice is not None:
        first_choice.append(hit_all.cpu())
    return total, int(hit_all.sum()), int(targets.numel())


def target_logprobs(
    student: Student,
    batch: packing.ModelBatch,
    *,
    device: str,
    autocast: contextlib.AbstractContextManager[Any],
) -> torch.Tensor:
    """The log-probability of each target token (in order) under the model, with the same
    chunked, recomputed head as :func:`target_loss` (the reinforcement trainer's policy term)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    hidden, targets = _target_hidden(student, batch, device=device, autocast=autocast)
    vocab = int(student.lm_head.weight.shape[0])
    chunk = max(64, LOGITS_CHUNK_ELEMENTS // max(1, vocab))

    def chunk_logprobs(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with autocast:
            logits = student.lm_head(h)
        return -_token_cross_entropy(student, logits.float(), t)

    out: list[torch.Tensor] = []
    for start in range(0, int(targets.numel()), chunk):
        h, t = hidden[start : start + chunk], targets[start : start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            out.append(checkpoint(chunk_logprobs, h, t, use_reentrant=False))
        else:
            out.append(chunk_logprobs(h, t))
    return torch.cat(out) if out else hidden.sum(-1)[:0]


def _target_hidden(
    student: Student,
    batch: packing.ModelBatch,
    *,
    device: str,
    autocast: contextlib.AbstractContextManager[Any],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The body's hidden states at the target positions and those targets."""
    batch = batch.to(device)
    with autocast:
        hidden = student.body(**batch.inputs, use_cache=False).last_hidden_state
    hidden = hidden.reshape(-1, hidden.shape[-1])
    positions = (batch.targets != IGNORE_INDEX).nonzero().squeeze(1)
    return hidden.index_select(0, positions), batch.targets.index_select(0, positions)


def _scaled(student: Student, logits: torch.Tensor) -> torch.Tensor:
    """``logits`` with the model's logit scaling and soft-capping applied."""
    import torch

    config = student.causal_lm.config
    if getattr(config, "logits_scaling", None):
        logits = logits / config.logits_scaling
    if getattr(config, "final_logit_softcapping", None):
        cap = config.final_logit_softcapping
        logits = torch.tanh(logits / cap) * cap
    return logits


def _token_cross_entropy(
    student: Student, logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    import torch.nn.functional as F

    return F.cross_entropy(_scaled(student, logits), targets, reduction="none")


def _cross_entropy(
    student: Student, logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of fp32 ``logits`` (the model's logit scaling and soft-capping
    applied) and whether each target is the argmax."""
    import torch.nn.functional as F

    logits = _scaled(student, logits)
    loss = F.cross_entropy(logits, targets, reduction="sum")
    return loss, logits.detach().argmax(-1) == targets
