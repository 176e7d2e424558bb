"""The generation engine's bookkeeping: requests, their sequences (rows) and the batches of slots.

A request asks for ``n`` choices; each choice is one sequence, a :class:`Row` in a slot of the
:class:`Batch` of its adapter (or of the plain base: a batch never mixes adapters). Rows join and
leave between any two decoding steps (continuous batching).

The KV cache of a batch (``kv_cache.SlotCache``) is a preallocated buffer per layer,
``slots x kv_heads x capacity x head_dim``, on one column timeline shared by the slots (left
padding, a mask per slot). A step writes one column in place; the buffer is re-laid out
(:meth:`Batch.compact`: compacted, trimmed or grown, one copy) only when slots or capacity run out
or more than half of it is waste. Free slots ride along with a dummy token until the next
re-layout. The headroom a re-layout leaves is what the live rows may still generate, within
``_MIN_HEADROOM`` and half the cache (at least ``_MAX_HEADROOM``).

Admission (:func:`plan_admission`) takes waiting sequences in queue order while there is room in
the batches, KV budget (an idle engine always takes the head of the queue, however long) and
prefill budget (prompt tokens per iteration; the first sequence always goes).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import TYPE_CHECKING

from distillery.serving.adapters import AdapterRef
from distillery.serving.events import RequestHandle
from distillery.serving.kv_cache import SlotCache
from distillery.serving.prepare import PreparedRequest
from distillery.serving.sampling import RowSampler, TextAccumulator

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

_MIN_HEADROOM = 16
_MAX_HEADROOM = 256


class EngineRequest:
    """A submitted request inside the engine: its choices still to start, running and done."""

    def __init__(
        self, prepared: PreparedRequest, adapter: AdapterRef | None, handle: RequestHandle
    ):
        self.prepared = prepared
        self.adapter = adapter
        self.key = adapter.model_id if adapter is not None else None
        self.handle = handle
        self.pending = list(range(prepared.params.n))
        self.live = 0
        self.done = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.admitted = False
        self.closed = False

    @property
    def kv_need(self) -> int:
        return len(self.prepared.prompt_ids) + self.prepared.max_new_tokens


class Row:
    """One sequence (one choice of a request) in a batch slot."""

    def __init__(
        self, request: EngineRequest, index: int, sampler: RowSampler, text: TextAccumulator
    ):
        self.request = request
        self.index = index
        self.sampler = sampler
        self.text = text
        prepared = request.prepared
        self.constraint = prepared.constraints[index] if prepared.constraints else None
        self.max_new = prepared.max_new_tokens
        self.pos = len(prepared.prompt_ids)  # tokens in the cache = position id of the next one
        self.span = self.pos  # columns from its first cached token to the end (holes included)
        self.generated = 0
        self.last_token = 0
        self.slot = -1
        self.finished = False

    @property
    def remaining(self) -> int:
        return self.max_new - self.generated


class Batch:
    """The running sequences of one adapter (or of the plain base)."""

    def __init__(self, adapter: AdapterRef | None, cache: SlotCache) -> None:
        self.adapter = adapter
        self.key = adapter.model_id if adapter is not None else None
        self.cache = cache
        self.slots: list[Row | None] = []

    def live(self) -> list[Row]:
        return [r for r in self.slots if r is not None]

    def headroom(self, extra: Sequence[Row] = ()) -> int:
        remaining = max((r.remaining for r in (*self.live(), *extra)), default=0)
        return max(_MIN_HEADROOM, min(remaining + 1, max(_MAX_HEADROOM, self.cache.length // 2)))

    def compact(
        self, *, extra_slots: int = 0, min_length: int = 0, extra: Sequence[Row] = ()
    ) -> None:
        keep = [i for i, r in enumerate(self.slots) if r is not None]
        rows = [self.slots[i] for i in keep]
        window = max((r.span for r in rows if r is not None), default=0)
        length = max(window, min_length)
        capacity = length + self.headroom(extra)
        self.cache.relayout(
            keep, window, slots=len(keep) + extra_slots, length=length, capacity=capacity
        )
        self.slots = [*rows, *([None] * extra_slots)]
        for i, row in enumerate(self.slots):
            if row is not None:
                row.slot = i

    def needs_compaction(self) -> bool:
        rows = self.live()
        if not rows:
            return False
        cache = self.cache
        if cache.length + 1 > cache.capacity:
            return True
        free = len(self.slots) - len(rows)
        waste = cache.length - max(r.span for r in rows)
        return free > len(rows) or waste > max(_MAX_HEADROOM, cache.length // 2)

    def place(
        self,
        rows: list[Row],
        source: list[int],
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        valid: torch.Tensor,
        positions: torch.Tensor,
    ) -> None:
        """Put freshly prefilled rows into free slots (re-laying out the cache when it lacks
        slots or width); row ``i`` takes its KV from prefill row ``source[i]``."""
        width = valid.shape[1]
        free = [i for i, r in enumerate(self.slots) if r is None]
        cache = self.cache
        if len(free) < len(rows) or cache.length < width or cache.mask is None:
            self.compact(extra_slots=len(rows), min_length=width, extra=rows)
            free = [i for i, r in enumerate(self.slots) if r is None]
        slots = free[: len(rows)]
        cache.place(slots, kv, valid, positions, source)
        first_column = valid.int().argmax(dim=1).tolist()
        for slot, row, src in zip(slots, rows, source, strict=True):
            self.slots[slot] = row
            row.slot = slot
            row.span = width - int(first_column[src])


Admission = list[tuple[EngineRequest, int]]  # (request, choice) of one adapter's batch


def plan_admission(
    waiting: collections.deque[EngineRequest],
    *,
    room: int,
    kv_tokens: int,
    kv_budget: int,
    prompt_budget: int,
) -> dict[str | None, Admission]:
    """The sequences that join the batches now, taken off ``waiting`` (a request leaves the
    queue once all its choices are taken)."""
    plan: dict[str | None, Admission] = {}
    planned = prompt_tokens = 0
    while waiting and room > 0:
        request = waiting[0]
        busy = kv_tokens > 0 or planned > 0
        if busy and kv_tokens + planned + request.kv_need > kv_budget:
            break  # wait for memory; an idle engine always takes the head of the queue
        if planned and prompt_tokens + len(request.prepared.prompt_ids) > prompt_budget:
            break  # the rest joins at the next step
        prompt_tokens += len(request.prepared.prompt_ids)
        plan.setdefault(request.key, []).append((request, request.pending.pop(0)))
        planned += request.kv_need
        room -= 1
        if not request.pending:
            waiting.popleft()
    return plan


def distinct_prompts(items: Admission) -> tuple[list[list[int]], list[int]]:
    """The prompts to prefill (one per request, however many of its choices are admitted) and,
    for each item, the index of its prompt."""
    unique: dict[int, int] = {}
    prompts: list[list[int]] = []
    for request, _ in items:
        if id(request) not in unique:
            unique[id(request)] = len(prompts)
            prompts.append(request.prepared.prompt_ids)
    return prompts, [unique[id(request)] for request, _ in items]


def new_rows(items: Admission, tokenizer: PreTrainedTokenizerBase, vocab: int) -> list[Row]:
    """A row per admitted choice, with its seeded sampler and its text (stop sequences)."""

    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=True))

    rows = []
    for request, index in items:
        prepared = request.prepared
        sampler = RowSampler(prepared.params, prepared.seeds[index], vocab)
        rows.append(Row(request, index, sampler, TextAccumulator(decode, prepared.params.stop)))
    return rows
