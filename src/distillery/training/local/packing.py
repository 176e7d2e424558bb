"""Padding-free packing: the examples of a batch concatenated into one row.

``position_ids`` restart at 0 for every example and ``cu_seq_lens_q``/``cu_seq_lens_k`` carry
the example boundaries, as transformers' ``DataCollatorWithFlattening`` produces them. Measured
with transformers 5.24 / torch 2.13 on CPU (Llama, SmolLM2-135M):

- the ``sdpa`` path does detect packing from ``position_ids`` and builds a block-diagonal mask,
  but only with ``use_cache=False`` (with a cache it silently attends across examples), and the
  materialized mask sends it to a slow kernel: ~170 tokens/s per core fwd+bwd, no faster than
  padding;
- so packed rows use :func:`packed_attention`, registered as the attention implementation
  ``"distillery_packed"``: causal attention run separately on each example's slice. It is exact
  (no cross-example leakage; tests compare packed and per-example losses) and computes no
  masked-out blocks. On CPU it is plain bf16 matmuls with grouped-query heads folded into the
  matmul and an fp32 softmax (~3x faster than ``sdpa``'s CPU flash kernel for ~150-token
  examples); on CUDA it calls ``scaled_dot_product_attention(is_causal=True)`` per example.
- sliding-window layers (Gemma 3 slides five layers of six, Qwen2/Qwen3 their upper layers,
  Mistral and Phi-3 all of them) are windowed exactly as transformers defines it (a query at
  position ``q`` sees keys at ``q - window < k <= q``, ``masking_utils.sliding_window_overlay``):
  each layer's window is the ``sliding_window`` its attention module passes (else the module's
  ``sliding_window`` attribute). :func:`supports_packing` checks, with one probe pass, that the
  windows the layers announce are those the configuration describes; a model that slides
  otherwise (in its own mask builder only) trains padded instead, which is exact.

Targets are shifted per example before concatenation, so no example predicts its neighbour's
first token.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distillery.training.local.data import IGNORE_INDEX, TokenizedExample

if TYPE_CHECKING:
    import torch

PACKED_ATTENTION = "distillery_packed"
PROBE = "distillery_probe"  # forward kwarg: a list collecting each layer's (window, unsupported)
_UNSUPPORTED_KWARGS = ("softcap", "s_aux", "sinks")  # attention soft-capping, attention sinks


@dataclass
class ModelBatch:
    """One forward pass: model inputs plus the shifted targets (``IGNORE_INDEX`` = no loss)."""

    inputs: dict[str, Any]
    targets: torch.Tensor  # [n_tokens] flattened over the batch, aligned with hidden states
    n_tokens: int  # real (non-padding) tokens

    def to(self, device: str) -> ModelBatch:
        inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in self.inputs.items()}
        return ModelBatch(inputs, self.targets.to(device), self.n_tokens)


def shifted_targets(example: TokenizedExample) -> list[int]:
    """``targets[t]`` is the label of token ``t + 1`` (what position ``t`` must predict)."""
    return [*example.labels[1:], IGNORE_INDEX]


def pack(examples: Sequence[TokenizedExample]) -> ModelBatch:
    """Concatenate ``examples`` into one row with per-example positions and boundaries."""
    import torch

    ids: list[int] = []
    positions: list[int] = []
    targets: list[int] = []
    bounds = [0]
    for ex in examples:
        ids.extend(ex.input_ids)
        positions.extend(range(ex.n_tokens))
        targets.extend(shifted_targets(ex))
        bounds.append(bounds[-1] + ex.n_tokens)
    inputs = _packed_inputs(examples, ids, positions, bounds)
    return ModelBatch(inputs, torch.tensor(targets, dtype=torch.long), len(ids))


def _packed_inputs(
    examples: Sequence[TokenizedExample], ids: list[int], positions: list[int], bounds: list[int]
) -> dict[str, Any]:
    """The model inputs of one packed row: its tokens and positions, and the segment boundaries
    (``cu_seq_lens``) and longest example that flash-attention-style kernels take."""
    import torch

    cu = torch.tensor(bounds, dtype=torch.int32)
    longest = max(ex.n_tokens for ex in examples)
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }


MIN_SHARED_PREFIX = 32
# CPU: a segment that sees no shared prefix and is at least this long (typically the shared system
# prompt itself) runs through torch's fused causal SDPA, which never materialises the L x L
# scores: at 1,200 tokens it takes half the time of the explicit path below (measured fwd+bwd).
SDPA_MIN_LENGTH = 512


def shared_prefix_length(examples: Sequence[TokenizedExample]) -> int:
    """Length of the prompt prefix every example starts with (the system prompt of one task),
    cut before the first token that any example is trained on, so that the shared positions
    predict nothing. 0 when there is nothing worth sharing."""
    if len(examples) < 2:
        return 0
    first = examples[0].input_ids
    length = min(ex.n_tokens for ex in examples) - 1
    for ex in examples[1:]:
        ids = ex.input_ids
        i = 0
        while i < length and ids[i] == first[i]:
            i += 1
        length = i
    for ex in examples:
        labelled = next((t for t, lab in enumerate(ex.labels) if lab != IGNORE_INDEX), ex.n_tokens)
        length = min(length, labelled - 1)
    return length if length >= MIN_SHARED_PREFIX else 0


def pack_shared(examples: Sequence[TokenizedExample], prefix: int) -> ModelBatch:
    """One row: the shared prefix once, then each example's remainder.

    Every remainder attends to the prefix and causally to itself (``shared_prefix`` tells
    :func:`packed_attention`); positions continue after the prefix as in the unpacked example.
    The forward and the gradients equal those of the examples run one by one, while the prefix
    (for a distillation dataset: the long system prompt every request carries) is computed once.
    """
    import torch

    head = examples[0]
    ids: list[int] = list(head.input_ids[:prefix])
    positions: list[int] = list(range(prefix))
    targets: list[int] = [IGNORE_INDEX] * prefix
    bounds = [0, prefix]
    for ex in examples:
        ids.extend(ex.input_ids[prefix:])
        positions.extend(range(prefix, ex.n_tokens))
        targets.extend(shifted_targets(ex)[prefix:])
        bounds.append(bounds[-1] + ex.n_tokens - prefix)
    inputs = {**_packed_inputs(examples, ids, positions, bounds), "shared_prefix": prefix}
    n_example_tokens = sum(ex.n_tokens for ex in examples)
    return ModelBatch(inputs, torch.tensor(targets, dtype=torch.long), n_example_tokens)


def pad(examples: Sequence[TokenizedExample], pad_token_id: int) -> ModelBatch:
    """Right-padded batch (the fallback for models that cannot use packed attention)."""
    import torch

    longest = max(ex.n_tokens for ex in examples)
    ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    targets = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
    for row, ex in enumerate(examples):
        ids[row, : ex.n_tokens] = torch.tensor(ex.input_ids)
        mask[row, : ex.n_tokens] = 1
        targets[row, : ex.n_tokens] = torch.tensor(shifted_targets(ex))
    inputs = {"input_ids": ids, "attention_mask": mask}
    return ModelBatch(inputs, targets.reshape(-1), int(mask.sum()))


def split_passes(
    examples: Sequence[TokenizedExample], *, max_tokens: int, min_passes: int = 1
) -> list[list[TokenizedExample]]:
    """Split one optimizer step's examples into passes of at most ``max_tokens`` tokens each
    (a single longer example gets a pass of its own), and into at least ``min_passes`` passes."""
    total = sum(ex.n_tokens for ex in examples)
    budget = max(1, min(max_tokens, -(-total // max(1, min_passes))))
    passes: list[list[TokenizedExample]] = []
    current: list[TokenizedExample] = []
    used = 0
    for ex in examples:
        if current and used + ex.n_tokens > budget:
            passes.append(current)
            current, used = [], 0
        current.append(ex)
        used += ex.n_tokens
    if current:
        passes.append(current)
    return passes


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed example (``cu_seq_lens_q`` boundaries), within the
    layer's sliding window if it has one.

    ``query`` is ``[1, heads, tokens, dim]``, ``key``/``value`` ``[1, kv_heads, tokens, dim]``;
    returns ``[1, tokens, heads, dim]`` as transformers' attention functions do.
    """
    import torch
    import torch.nn.functional as F

    window = layer_window(module, kwargs)
    probe = kwargs.pop(PROBE, None)
    if probe is not None:
        probe.append((window, tuple(k for k in _UNSUPPORTED_KWARGS if kwargs.get(k) is not None)))
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1:  # not a packed row (e.g. generation): plain sdpa
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        if window is not None and attention_mask is None and key.shape[2] > window:
            raise RuntimeError(  # no mask is built for this attention: it would not slide
                f"{PACKED_ATTENTION}: a sliding-window layer runs packed rows only"
            )

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    bounds: list[int] = [int(b) for b in cu.tolist()]
    shared = int(kwargs.get("shared_prefix") or 0)  # segments after the first also see it
    heads, kv_heads, dim = query.shape[1], key.shape[1], query.shape[3]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    outs = []
    for start, end in itertools.pairwise(bounds):
        length = end - start
        if length == 0:
            continue
        q = query[:, :, start:end]
        visible = shared if shared and start >= shared else 0
        k = key[:, :, start:end]
        v = value[:, :, start:end]
        if visible:
            k = torch.cat([key[:, :, :visible], k], dim=2)
            v = torch.cat([value[:, :, :visible], v], dim=2)
        # the window only matters when the segment (with the prefix) is longer than it
        limit = window if window is not None and visible + length > window else None
        if (
            query.device.type == "cpu"
            and not visible
            and limit is None
            and length >= SDPA_MIN_LENGTH
        ):
            o = F.scaled_dot_product_attention(
                q,
                k.repeat_interleave(groups, dim=1),
                v.repeat_interleave(groups, dim=1),
                is_causal=True,
                scale=scale,
                dropout_p=dropout if module.training else 0.0,
            )
            outs.append(o[0])
            continue
        future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
        if visible:
            future = torch.cat(
                [torch.zeros(length, visible, dtype=torch.bool, device=q.device), future], dim=1
            )
        if limit is not None:
            # key column c holds position c (the shared prefix, then this example's tokens after
            # it); query i has position visible + i: keys at window or more behind are masked
            queries = torch.arange(visible, visible + length, device=q.device)
            keys = torch.arange(visible + length, device=q.device)
            future |= queries[:, None] - keys[None, :] >= limit
        if query.device.type != "cpu":
            o = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=~future,
                scale=scale,
                dropout_p=dropout,
                enable_gqa=groups > 1,
            )
            outs.append(o[0])
            continue
        # CPU: fold the query heads of each kv head into one matmul; softmax in fp32.
        qg = q[0].reshape(kv_heads, groups * length, dim)
        bias = torch.zeros(future.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill(future, float("-inf")).repeat(groups, 1)
        scores = torch.baddbmm(bias.unsqueeze(0), qg, k[0].transpose(-1, -2), alpha=scale)
        probs = scores.float().softmax(-1).to(v.dtype)
        if dropout > 0:
            probs = F.dropout(probs, p=dropout, training=module.training)
        outs.append((probs @ v[0]).reshape(heads, length, dim))
    out = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
    return out.transpose(0, 1).unsqueeze(0).contiguous(), None


def register_packed_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)


def layer_window(module: Any, kwargs: dict[str, Any]) -> int | None:
    """The sliding window of the attention layer ``module`` (None: full attention)."""
    if "sliding_window" in kwargs:
        value = kwargs["sliding_window"]
    else:
        value = getattr(module, "sliding_window", None)
    return int(value) if value else None


def configured_windows(config: Any) -> list[int | None] | None:
    """Each layer's window as the text config describes it (``layer_types``, else one
    ``sliding_window`` for every layer); None for a layer type other than full or sliding-window
    attention (chunked, linear, recurrent...)."""
    layers = int(config.num_hidden_layers)
    window = getattr(config, "sliding_window", None)
    if not getattr(config, "use_sliding_window", True):
        window = None
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        if any(t not in ("full_attention", "sliding_attention") for t in layer_types):
            return None
        return [
            int(window) if t == "sliding_attention" and window else None
            for t in layer_types[:layers]
        ]
    return [int(window) if window else None] * layers


def announced_windows(model: Any) -> tuple[list[int | None], set[str]]:
    """One probe pass of two packed tokens: the window each attention call announced, in order,
    and the kwargs it passed that :func:`packed_attention` cannot honour."""
    import torch

    previous = model.config._attn_implementation
    register_packed_attention()
    model.set_attn_implementation(PACKED_ATTENTION)
    calls: list[tuple[int | None, tuple[str, ...]]] = []
    cu = torch.tensor([0, 2], dtype=torch.int32, device=model.device)
    try:
        with torch.no_grad():
            model(
                input_ids=torch.zeros((1, 2), dtype=torch.long, device=model.device),
                position_ids=torch.arange(2, device=model.device).unsqueeze(0),
                cu_seq_lens_q=cu,
                cu_seq_lens_k=cu,
                max_length_q=2,
                max_length_k=2,
                use_cache=False,
                **{PROBE: calls},
            )
    finally:
        model.set_attn_implementation(previous)
    return [w for w, _ in calls], {name for _, bad in calls for name in bad}


def supports_packing(model: Any) -> bool:
    """Whether ``model`` can run packed rows through :func:`packed_attention`.

    It needs transformers' pluggable attention, layers of full causal or sliding-window
    attention whose windows (as the probe pass sees them) are those of the configuration, no
    attention soft-capping and no attention sinks.
    """
    config = model.config.get_text_config()
    if not getattr(model, "_can_set_attn_implementation", lambda: False)():
        return False
    if getattr(config, "attn_logit_softcapping", None):
        return False
    if getattr(config, "use_bidirectional_attention", False) or not getattr(
        config, "is_causal", True
    ):
        return False
    expected = configured_windows(config)
    if expected is None:
        return False
    windows, unsupported = announced_windows(model)
    return not unsupported and windows == expected
