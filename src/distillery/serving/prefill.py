"""Prefill: running newly admitted prompts through the model, together, before they decode.

Requests admitted together are prefilled as one left-padded batch. When their prompts share a
prefix (one system prompt, many questions) of at least ``MIN_SHARED_PREFIX`` tokens, the prefix
runs once, or not at all when the prefix cache (``kv_cache.PrefixCache``) holds it from an earlier
prefill, and its KV is copied to every row; the rest follows, left padded after the prefix (the
padding columns are masked holes). A computed prefix is kept in the prefix cache for later
prompts: for a lone prompt that is all of it but the last token, so the next request with the same
system prompt finds it. Columns run in chunks of about ``_PREFILL_TOKENS`` tokens (rows x chunk),
which bounds activation memory; sliding-window layers get the mask of their window, by token
position (see ``attention``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from distillery.serving.head import LastColumn
from distillery.serving.kv_cache import PrefixCache, SlotCache
from distillery.serving.runtime import ModelRuntime

if TYPE_CHECKING:
    import torch

_PREFILL_TOKENS = 2048  # tokens per prefill forward pass (rows x chunk), bounds activation memory
MIN_SHARED_PREFIX = 16  # prompts sharing at least this many leading tokens prefill them once


@dataclass
class Prefill:
    """The prefilled prompts: per-layer KV (rows x width), the valid-column mask, the position ids
    of the columns, the output at each prompt's last token and how many leading tokens of each
    prompt came from the prefix cache."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    valid: torch.Tensor
    positions: torch.Tensor
    last: LastColumn
    cached_tokens: int


def forward_columns(
    runtime: ModelRuntime,
    cache: SlotCache,
    ids: torch.Tensor,
    valid: torch.Tensor,
    positions: torch.Tensor,
    first: int,
) -> LastColumn:
    """Run columns ``first..`` of ``ids`` (rows x width) through the model in chunks; columns
    before ``first`` are already in ``cache``. Returns the output at the last column.

    Sliding-window layers get the mask of their window, by token position (``positions``),
    the other layers the full causal mask (see ``attention``)."""
    import torch

    rows, width = ids.shape
    chunk = max(16, _PREFILL_TOKENS // rows)
    keys = torch.arange(width, device=ids.device)
    last: LastColumn | None = None
    for start in range(first, width, chunk):
        end = min(width, start + chunk)
        queries = keys[start:end].unsqueeze(1)
        allowed = (keys[:end].unsqueeze(0) <= queries) & valid[:, None, None, :end]
        allowed |= keys[:end].unsqueeze(0) == queries  # padding rows attend to themselves
        last = runtime.last_column(
            input_ids=ids[:, start:end],
            position_ids=positions[:, start:end],
            attention_mask=allowed,
            cache=cache.cache,
            use_cache=True,
            **runtime.window_kwargs(allowed, positions[:, start:end], positions[:, :end]),
        )
    assert last is not None
    return last


def prefill(
    runtime: ModelRuntime, prefixes: PrefixCache, key: str | None, prompts: list[list[int]]
) -> Prefill:
    """Run the prompts through the model (with the adapter of batch ``key`` active)."""
    import torch

    device = runtime.model.device
    shared = _shared_prefix(prompts)
    cached, hit = prefixes.lookup(key, prompts)
    if shared < MIN_SHARED_PREFIX:
        shared = 0
    tails = [p[shared:] for p in prompts]
    rows, tail_width = len(prompts), max(len(t) for t in tails)
    width = shared + tail_width
    ids = torch.full((rows, width), runtime.pad, dtype=torch.long)
    valid = torch.zeros((rows, width), dtype=torch.bool)
    if shared:
        ids[:, :shared] = torch.tensor(prompts[0][:shared], dtype=torch.long)
        valid[:, :shared] = True
    for i, tail in enumerate(tails):
        ids[i, width - len(tail) :] = torch.tensor(tail, dtype=torch.long)
        valid[i, width - len(tail) :] = True
    positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)
    ids, valid, positions = ids.to(device), valid.to(device), positions.to(device)
    cache = runtime.new_cache()
    if shared:
        if cached is None or hit < shared:
            prefix = runtime.new_cache()
            prefix.relayout([], 0, slots=1, length=0, capacity=shared)
            if cached is not None:
                prefix.fill_prefix(cached, hit)  # reuse what the cache has, compute the rest
            forward_columns(
                runtime, prefix, ids[:1, :shared], valid[:1, :shared], positions[:1, :shared], hit
            )
            prefixes.store(key, prompts[0][:shared], prefix)
            cached = prefix
        cache.relayout([], 0, slots=rows, length=0, capacity=width)
        cache.fill_prefix(cached, shared)
    else:
        cache.relayout([], 0, slots=rows, length=0, capacity=width)
    last = forward_columns(runtime, cache, ids, valid, positions, shared)
    kv = [(layer.kb, layer.vb) for layer in cache.layers]
    return Prefill(kv, valid, positions, last, hit if shared else 0)


def _shared_prefix(prompts: list[list[int]]) -> int:
    """Length of the common prefix of all prompts, leaving every prompt at least one own token
    (for a lone prompt: all of it but the last token)."""
    first = prompts[0]
    limit = min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n
