"""The KV cache of a running batch: preallocated per-layer buffers shared by slots.

All slots share one column timeline: a decoding step writes column ``L`` for every slot, a
sequence occupies columns ending at ``L`` (left padding; a shared prompt prefix may leave masked
holes) and a boolean mask per slot marks the columns it attends to; next to it each slot's
column positions (the position id of the token in each column) let the engine build
sliding-window masks by token position (see ``attention``). transformers'
``DynamicCache`` concatenates, i.e. copies the whole cache, on every step; here a step writes one
column in place and returns views, and the buffers are re-laid out (one copy) only when the batch
engine compacts, trims or grows them.

torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@functools.cache
def _buffer_layer_class() -> type[Any]:
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):  # type: ignore[misc, no-untyped-call]
        """A cache layer writing into a preallocated buffer; returns views, never copies."""

        def bind(self, kb: torch.Tensor, vb: torch.Tensor, length: int) -> None:
            self.kb, self.vb, self.n = kb, vb, length
            self.device = kb.device
            self.is_initialized = True
            self.keys = kb[:, :, :length]
            self.values = vb[:, :, :length]

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            end = self.n + key_states.shape[-2]
            self.kb[:, :, self.n : end] = key_states
            self.vb[:, :, self.n : end] = value_states
            self.n = end
            self.keys = self.kb[:, :, :end]
            self.values = self.vb[:, :, :end]
            return self.keys, self.values

    return BufferLayer


class SlotCache:
    """KV buffers of one batch plus the per-slot column mask and column positions (see the
    module docstring)."""

    def __init__(self, *, layers: int, kv_heads: int, head_dim: int, dtype: Any, device: Any):
        from transformers import DynamicCache

        self._shape = (kv_heads, head_dim)
        self._dtype = dtype
        self._device = device
        layer_class = _buffer_layer_class()
        self.layers = [layer_class() for _ in range(layers)]
        self.cache = DynamicCache()
        self.cache.layers = list(self.layers)
        self.cache.layer_class_to_replicate = None
        self.mask: torch.Tensor | None = None  # slots x capacity: the columns each slot attends to
        self.positions: torch.Tensor | None = None  # slots x capacity: position id per column
        self.length = 0
        self.capacity = 0
        self.slots = 0

    def allocate(self, slots: int, capacity: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        import torch

        shape = (slots, *self._shape)
        # zeros, not empty: masked columns must hold finite values (0 * NaN is NaN in attention)
        ks = [
            torch.zeros(
                (shape[0], shape[1], capacity, shape[2]), dtype=self._dtype, device=self._device
            )
            for _ in self.layers
        ]
        vs = [torch.zeros_like(k) for k in ks]
        return ks, vs

    def relayout(
        self, keep: Sequence[int], window: int, *, slots: int, length: int, capacity: int
    ) -> None:
        """Move slots ``keep`` to the front of new buffers of ``slots`` x ``capacity``; their last
        ``window`` columns end at column ``length``."""
        import torch

        ks, vs = self.allocate(slots, capacity)
        mask = torch.zeros((slots, capacity), dtype=torch.bool, device=self._device)
        positions = torch.zeros((slots, capacity), dtype=torch.long, device=self._device)
        if keep and window > 0:
            index = torch.tensor(list(keep), device=self._device)
            lo, hi = self.length - window, self.length
            dst = slice(length - window, length)
            for layer, k, v in zip(self.layers, ks, vs, strict=True):
                k[: len(keep), :, dst] = layer.kb[:, :, lo:hi].index_select(0, index)
                v[: len(keep), :, dst] = layer.vb[:, :, lo:hi].index_select(0, index)
            assert self.mask is not None and self.positions is not None
            mask[: len(keep), dst] = self.mask[:, lo:hi].index_select(0, index)
            positions[: len(keep), dst] = self.positions[:, lo:hi].index_select(0, index)
        for layer, k, v in zip(self.layers, ks, vs, strict=True):
            layer.bind(k, v, length)
        self.mask = mask
        self.positions = positions
        self.length = length
        self.capacity = capacity
        self.slots = slots

    def fill_prefix(self, prefix: SlotCache, columns: int) -> None:
        """Copy the first ``columns`` of ``prefix`` (one row, positions 0..) into every row;
        continue after them."""
        import torch

        for layer, source in zip(self.layers, prefix.layers, strict=True):
            layer.kb[:, :, :columns] = source.kb[:, :, :columns]
            layer.vb[:, :, :columns] = source.vb[:, :, :columns]
            layer.bind(layer.kb, layer.vb, columns)
        assert self.mask is not None and self.positions is not None
        self.mask[:, :columns] = True
        self.positions[:, :columns] = torch.arange(columns, device=self._device)
        self.length = columns

    def place(
        self,
        slots: Sequence[int],
        source: list[tuple[torch.Tensor, torch.Tensor]],
        valid: torch.Tensor,
        positions: torch.Tensor,
        rows: Sequence[int],
    ) -> None:
        """Copy prefilled rows ``rows`` of ``source`` (per layer (k, v), T columns; their valid
        columns and position ids, rows x T) into ``slots``, ending at the current column."""
        import torch

        width = valid.shape[1]
        dst = slice(self.length - width, self.length)
        pairs = list(zip(slots, rows, strict=True))
        for layer, (pk, pv) in zip(self.layers, source, strict=True):
            for slot, row in pairs:  # plain slice copies: advanced-index puts are far slower
                layer.kb[slot, :, dst].copy_(pk[row])
                layer.vb[slot, :, dst].copy_(pv[row])
        assert self.mask is not None and self.positions is not None
        slot_index = torch.tensor(list(slots), device=self._device)
        row_index = torch.tensor(list(rows), device=self._device)
        self.mask[slot_index] = False
        self.mask[slot_index, dst] = valid.index_select(0, row_index)
        self.positions[slot_index] = 0
        self.positions[slot_index, dst] = positions.index_select(0, row_index)


class PrefixCache:
    """KV of recently prefilled prompt prefixes, reused by later prompts that start the same way.

    Traffic of one prompt shares its system prompt: the first request pays for it, later ones
    copy its KV instead of recomputing it (vLLM calls this automatic prefix caching). Entries are
    one-row :class:`SlotCache` objects keyed by the adapter they were computed with (a LoRA
    adapter changes the KV); a prompt may reuse any leading part of an entry. Least recently used
    entries are dropped beyond ``max_tokens`` cached tokens.
    """

    def __init__(self, *, max_tokens: int, min_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self._entries: list[tuple[str | None, tuple[int, ...], SlotCache]] = []  # oldest first
        self.hits = 0
        self.misses = 0

    @property
    def tokens(self) -> int:
        return sum(len(tokens) for _, tokens, _ in self._entries)

    def lookup(
        self, key: str | None, prompts: Sequence[Sequence[int]]
    ) -> tuple[SlotCache | None, int]:
        """The entry sharing the longest prefix with every prompt, and that length (each prompt
        keeps at least one own token); ``(None, 0)`` when none shares ``min_tokens``."""
        limit = min(len(p) for p in prompts) - 1
        best: tuple[int, int] = (-1, 0)
        for i, (entry_key, tokens, _) in enumerate(self._entries):
            if entry_key != key:
                continue
            n = min(_common_prefix(tokens, p, limit) for p in prompts)
            if n > best[1]:
                best = (i, n)
        index, length = best
        if length < self.min_tokens:
            self.misses += 1
            return None, 0
        self.hits += 1
        entry = self._entries.pop(index)
        self._entries.append(entry)  # most recently used last
        return entry[2], length

    def store(self, key: str | None, tokens: Sequence[int], cache: SlotCache) -> None:
        """Keep ``cache`` (one row holding ``tokens``) for later prompts."""
        if len(tokens) < self.min_tokens or len(tokens) > self.max_tokens:
            return
        entry = (key, tuple(tokens), cache)
        self._entries = [e for e in self._entries if not (e[0] == key and e[1] == entry[1])]
        self._entries.append(entry)
        while self.tokens > self.max_tokens:
            self._entries.pop(0)


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if n >= limit or x != y:
            break
        n += 1
    return n
