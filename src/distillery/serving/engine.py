"""The batched generation engine: one thread per base model, continuous batching on a slot KV cache.

Design
------
* One :class:`GenerationEngine` per base model. Its thread loads the weights on first use, then
  loops: take newly submitted requests; admit as many of their sequences (one per choice) as the
  batch has room for, prefilling them together and copying their KV rows into free slots of the
  running batch; run one decoding step for every live sequence; emit text deltas; free the slots
  of finished sequences. Sequences join and leave between any two steps (continuous batching), so
  a short answer never waits for a long one and a new request starts within one step.
* The KV cache of a batch (``kv_cache.SlotCache``) is a preallocated buffer per layer,
  ``slots x kv_heads x capacity x head_dim``, on one column timeline shared by the slots (left
  padding, a mask per slot). A step writes one column in place; the buffer is re-laid out
  (compacted, trimmed or grown, one copy) only when slots or capacity run out or more than half
  of it is waste. Free slots ride along with a dummy token until the next re-layout.
* Attention: the engine passes its own 4D masks, built from that column timeline. A model with
  sliding-window layers (Gemma 3, Mistral, Phi-3, Qwen2/Qwen3 with ``sliding_window``) also gets
  one windowed mask per window, by token position (the cache tracks each column's position), and
  the engine's attention function gives each layer the mask of its own window (``attention``), so
  that every layer attends exactly as in ``model.generate``, also past the window. A model the
  engine cannot run exactly is refused at load with a 400 naming its architecture.
* Prefill: requests admitted together are prefilled as one padded batch; when their prompts
  share a prefix (one system prompt, many questions), the prefix runs once and its KV is copied
  to every row. An idle engine waits a few ms for a burst of requests to arrive together.
* Fine-tuned models run on the same base weights with their LoRA adapter (see ``adapters``): each
  adapter, and the plain base, has its own batch; the engine steps the batches in turn and
  activates the batch's adapter before each forward pass. A batch never mixes adapters.
* Requests are prepared (chat template, context check, grammar compilation) on worker threads by
  the caller, so the engine thread only runs the model. Results travel back to the asyncio loop
  of the caller with ``call_soon_threadsafe``, one message per request per step.

torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery.errors import (
    ContextLengthExceededError,
    DistilleryError,
    InvalidRequestError,
    ServiceUnavailableError,
)
from distillery.serving import attention
from distillery.serving.adapters import AdapterPool, AdapterRef
from distillery.serving.chat_template import render_prompt
from distillery.serving.constrained import GrammarCompiler, ResponseFormat, TokenConstraint
from distillery.serving.kv_cache import PrefixCache, SlotCache
from distillery.serving.sampling import RowSampler, SamplingParams, TextAccumulator, choose_tokens
from distillery.serving.tools import ToolRequest, tool_grammar

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from distillery.chat_templates import ToolFormat

log = logging.getLogger(__name__)

_PREFILL_TOKENS = 2048  # tokens per prefill forward pass (rows x chunk), bounds activation memory
_MIN_SHARED_PREFIX = 16  # prompts sharing at least this many leading tokens prefill them once
_PREFIX_CACHE_TOKENS = 16384  # most prompt-prefix tokens kept for later requests (1/8 of KV memory)
_COALESCE_QUIET_S = 0.004  # an idle engine batches requests arriving less than 4 ms apart...
_COALESCE_MAX_S = 0.02  # ... for at most 20 ms
_PREFILL_GROUP_TOKENS = 32768  # prompt tokens admitted per iteration (bounds prefill memory)
_MIN_HEADROOM = 16
_MAX_HEADROOM = 256


# ---------------------------------------------------------------------------------------------
# Requests and events


@dataclass
class PreparedRequest:
    """A request ready for the engine: templated prompt, limits, seeds and grammar states."""

    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    seeds: list[int]
    constraints: list[TokenConstraint] | None = None
    tool_format: ToolFormat | None = None  # how the model writes tool calls (requests with tools)


@dataclass(frozen=True)
class Admitted:
    """The first sequences of the request entered the batch (prefill done)."""


@dataclass(frozen=True)
class TextDelta:
    index: int
    text: str


@dataclass(frozen=True)
class ChoiceFinished:
    index: int
    finish_reason: str
    completion_tokens: int


@dataclass(frozen=True)
class RequestDone:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache


@dataclass(frozen=True)
class RequestFailed:
    error: DistilleryError


EngineEvent = Admitted | TextDelta | ChoiceFinished | RequestDone | RequestFailed


class RequestHandle:
    """The asyncio side of a submitted request: events arrive in order, a batch per step."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[list[EngineEvent]] = asyncio.Queue()
        self.cancelled = False
        self.finished = False

    def post(self, events: list[EngineEvent]) -> None:
        """Called from the engine thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, events)
        except RuntimeError:  # the caller's loop is closed: nobody listens any more
            self.cancelled = True

    async def events(self) -> AsyncIterator[EngineEvent]:
        while not self.finished:
            for event in await self._queue.get():
                yield event
                if isinstance(event, RequestDone | RequestFailed):
                    self.finished = True
                    return


@dataclass(frozen=True)
class EngineStatus:
    model: str
    loaded: bool
    load_count: int
    device: str | None
    dtype: str | None
    context_length: int | None
    running_sequences: int
    waiting_requests: int
    adapters: tuple[tuple[str, int], ...]  # (model id, bytes) of the adapters in memory
    adapter_loads: dict[str, int] = field(default_factory=dict)
    prefix_cache_hits: int = 0  # prefills that reused a cached prompt prefix
    prefix_cache_misses: int = 0


class _Request:
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


class _Row:
    """One sequence (one choice of a request) in a batch slot."""

    def __init__(self, request: _Request, index: int, sampler: RowSampler, text: TextAccumulator):
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


class _Batch:
    """The running sequences of one adapter (or of the plain base)."""

    def __init__(self, adapter: AdapterRef | None, cache: SlotCache) -> None:
        self.adapter = adapter
        self.key = adapter.model_id if adapter is not None else None
        self.cache = cache
        self.slots: list[_Row | None] = []

    def live(self) -> list[_Row]:
        return [r for r in self.slots if r is not None]

    def headroom(self, extra: Sequence[_Row] = ()) -> int:
        remaining = max((r.remaining for r in (*self.live(), *extra)), default=0)
        return max(_MIN_HEADROOM, min(remaining + 1, max(_MAX_HEADROOM, self.cache.length // 2)))

    def compact(
        self, *, extra_slots: int = 0, min_length: int = 0, extra: Sequence[_Row] = ()
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


# ---------------------------------------------------------------------------------------------
# The engine


class GenerationEngine:
    """Serves one base model (and its adapters) from a dedicated thread."""

    def __init__(
        self,
        *,
        model_name: str,
        source_path: str | None,
        device: str | None,
        dtype: str | None,
        max_batch_size: int,
        adapter_memory_mb: int,
        threads: int | None = None,
        chat_template: str | None = None,
    ) -> None:
        self.model_name = model_name
        self._chat_template = chat_template  # the provider's setting; None: the model's own
        self._source_path = source_path
        self._device_pref = device
        self._dtype_pref = dtype
        self.max_batch_size = max(1, max_batch_size)
        self._threads = threads
        self._adapter_budget = max(0, adapter_memory_mb) * 1024 * 1024
        self.ready: Future[None] = Future()
        self.load_count = 0
        self._cv = threading.Condition()
        self._incoming: collections.deque[_Request] = collections.deque()
        self._waiting: collections.deque[_Request] = collections.deque()
        self._batches: dict[str | None, _Batch] = {}
        self._outbox: dict[RequestHandle, list[EngineEvent]] = {}
        self._stopping = False
        self._kv_tokens = 0
        self._prefixes = PrefixCache(max_tokens=_PREFIX_CACHE_TOKENS, min_tokens=_MIN_SHARED_PREFIX)
        self._prep_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"distillery-engine-{model_name}", daemon=True
        )
        # set by _load
        self.device: str | None = None
        self.dtype: str | None = None
        self.context_length = 0
        self.vocab_size = 0
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.model: PreTrainedModel | None = None
        self._eos: frozenset[int] = frozenset()
        self._pad = 0
        self._kv_budget_tokens = 0
        self._kv_shape = (0, 0, 0)  # layers, kv heads, head dim
        self._windows: tuple[int, ...] = ()  # the sliding windows of the model's layers
        self._compiler: GrammarCompiler | None = None
        self._adapters: AdapterPool | None = None
        self._adapter_snapshot: tuple[tuple[str, int], ...] = ()
        self._adapter_loads: dict[str, int] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    async def wait_ready(self) -> None:
        await asyncio.wrap_future(self.ready)

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def status(self) -> EngineStatus:
        loaded = self.ready.done() and self.ready.exception() is None
        return EngineStatus(
            model=self.model_name,
            loaded=loaded,
            load_count=self.load_count,
            device=self.device,
            dtype=self.dtype,
            context_length=self.context_length or None,
            running_sequences=sum(len(b.live()) for b in list(self._batches.values())),
            waiting_requests=len(self._waiting) + len(self._incoming),
            adapters=self._adapter_snapshot,
            adapter_loads=dict(self._adapter_loads),
            prefix_cache_hits=self._prefixes.hits,
            prefix_cache_misses=self._prefixes.misses,
        )

    @property
    def system_fingerprint(self) -> str:
        import hashlib

        digest = hashlib.sha256(
            f"{self.model_name}:{self.dtype}:{self.device}".encode()
        ).hexdigest()
        return f"fp_{digest[:10]}"

    # -- loading ----------------------------------------------------------------------------

    def _load(self) -> None:
        import torch

        from distillery import chat_templates, weights

        source = weights.resolve_source(self.model_name, self._source_path)
        device = weights.best_device(self._device_pref)
        dtype = self._dtype_pref or weights.best_dtype(device)
        if device == "cpu":
            torch.set_num_threads(self._threads or inference_threads())
        tokenizer = weights.load_tokenizer(source, chat_template=self._chat_template)
        model = weights.load_model(source, dtype=dtype, device=device)
        model.eval()  # type: ignore[no-untyped-call]
        config = model.config.get_text_config()
        self._windows = _check_architecture(self.model_name, model)
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 0) or int(
            getattr(tokenizer, "model_max_length", 2048)
        )
        eos: set[int] = set()
        for value in (
            getattr(model.generation_config, "eos_token_id", None),
            tokenizer.eos_token_id,
        ):
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, list):
                eos.update(int(v) for v in value)
        eos.update(chat_templates.end_of_turn_ids(tokenizer))  # <end_of_turn>, <|eot_id|>...
        self._eos = frozenset(eos)
        self._pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos))
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])  # type: ignore[no-untyped-call]
        head_dim = int(
            getattr(config, "head_dim", 0) or config.hidden_size // config.num_attention_heads
        )
        kv_heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
        self._kv_shape = (int(config.num_hidden_layers), kv_heads, head_dim)
        element = torch.empty((), dtype=getattr(torch, dtype)).element_size()
        per_token = 2 * self._kv_shape[0] * kv_heads * head_dim * element
        self._kv_budget_tokens = _memory_budget(device) // per_token // 2
        self._prefixes.max_tokens = min(_PREFIX_CACHE_TOKENS, self._kv_budget_tokens // 8)
        self._compiler = GrammarCompiler(tokenizer, sorted(self._eos))
        self._adapters = AdapterPool(
            model, budget_bytes=self._adapter_budget, dtype=getattr(torch, dtype)
        )
        self.tokenizer, self.model = tokenizer, model
        self.device, self.dtype = device, dtype
        self.load_count += 1
        log.info(
            "loaded %s on %s (%s), context %d, kv budget %d tokens",
            self.model_name,
            device,
            dtype,
            self.context_length,
            self._kv_budget_tokens,
        )

    # -- request preparation (caller's worker threads) -----------------------------------------

    def prepare(
        self,
        messages: list[dict[str, Any]],
        params: SamplingParams,
        response_format: ResponseFormat | None,
        tools: ToolRequest | None = None,
    ) -> PreparedRequest:
        """Template, measure and compile a request. Thread-safe; runs off the event loop."""
        from distillery import chat_templates

        assert self.tokenizer is not None and self._compiler is not None
        with self._prep_lock:
            prompt = render_prompt(
                self.tokenizer, messages, self.model_name, tools.specs if tools else None
            )
            fmt = chat_templates.tool_format(self.tokenizer) if tools is not None else None
        limit = self.context_length
        if len(prompt) >= limit:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {limit} tokens. However, your messages "
                f"resulted in {len(prompt)} tokens, which leaves no room for a completion. "
                "Please reduce the length of the messages.",
                param="messages",
            )
        room = limit - len(prompt)
        max_new = min(params.max_tokens, room) if params.max_tokens is not None else room
        for token, _ in params.logit_bias:
            if not 0 <= token < self.vocab_size:
                raise InvalidRequestError(
                    f"Invalid 'logit_bias': token id {token} is outside the vocabulary "
                    f"(0..{self.vocab_size - 1}).",
                    param="logit_bias",
                    code="invalid_value",
                )
        constraints = None
        grammar = None
        if tools is not None and fmt is not None and tools.constrained:
            text_schema = (
                json.loads(response_format.schema_json()) if response_format is not None else None
            )
            lark = tool_grammar(tools, fmt, text_schema)
            grammar = self._compiler.lark(lark) if lark is not None else None
        elif response_format is not None:
            grammar = self._compiler.grammar(response_format)
        if grammar is not None:
            constraints = [self._compiler.constraint(grammar) for _ in range(params.n)]
        return PreparedRequest(prompt, params, max_new, params.choice_seeds(), constraints, fmt)

    def submit(
        self, prepared: PreparedRequest, adapter: AdapterRef | None, handle: RequestHandle
    ) -> None:
        with self._cv:
            if self._stopping:
                raise ServiceUnavailableError("the local provider is shutting down")
            self._incoming.append(_Request(prepared, adapter, handle))
            self._cv.notify_all()

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._load()
        except BaseException as exc:
            self.ready.set_exception(_load_error(self.model_name, exc))
            return
        self.ready.set_result(None)
        import torch

        with torch.inference_mode():
            while True:
                with self._cv:
                    while not (self._stopping or self._incoming or self._has_work()):
                        self._cv.wait()
                    if not self._has_work() and not self._stopping:
                        self._coalesce()
                    if self._stopping:
                        break
                    self._waiting.extend(self._incoming)
                    self._incoming.clear()
                try:
                    self._iterate()
                except Exception as exc:  # a bug: fail what is in flight, keep serving
                    log.exception("local engine iteration failed")
                    self._abort_all(DistilleryError(f"local generation failed: {exc}"))
        self._shutdown()

    def _coalesce(self) -> None:
        """Idle engine, new requests: a burst arrives over a few ms (each is prepared on a worker
        thread); wait while it keeps coming, briefly, so that it is prefilled as one batch."""
        deadline = time.monotonic() + _COALESCE_MAX_S
        while len(self._incoming) < self.max_batch_size:
            before = len(self._incoming)
            left = min(_COALESCE_QUIET_S, deadline - time.monotonic())
            if left <= 0:
                return
            self._cv.wait(left)
            if len(self._incoming) == before or self._stopping:
                return

    def _has_work(self) -> bool:
        return bool(self._waiting) or any(b.live() for b in self._batches.values())

    def _iterate(self) -> None:
        self._reap()
        self._admit()
        for key, batch in list(self._batches.items()):
            if batch.live():
                try:
                    self._step(batch)
                except Exception as exc:
                    log.exception("generation step failed for %s", key or self.model_name)
                    self._fail_batch(batch, DistilleryError(f"local generation failed: {exc}"))
            if not batch.live():  # free its buffers; a new batch starts from a clean layout
                self._batches.pop(key, None)
        self._flush()

    def _shutdown(self) -> None:
        with self._cv:
            self._waiting.extend(self._incoming)
            self._incoming.clear()
        self._abort_all(ServiceUnavailableError("the local provider is shutting down"))

    def _abort_all(self, error: DistilleryError) -> None:
        for batch in self._batches.values():
            for row in batch.live():
                self._close(row.request, error)
                self._release(batch, row)
        for request in self._waiting:
            self._close(request, error)
        self._batches.clear()
        self._waiting.clear()
        self._kv_tokens = 0
        self._flush()

    # -- bookkeeping --------------------------------------------------------------------------

    def _emit(self, request: _Request, event: EngineEvent) -> None:
        self._outbox.setdefault(request.handle, []).append(event)

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for handle, events in outbox.items():
            handle.post(events)
        if self._adapters is not None:
            self._adapter_snapshot = tuple((a.model_id, a.nbytes) for a in self._adapters.loaded())
            self._adapter_loads = dict(self._adapters.loads)

    def _close(self, request: _Request, error: DistilleryError | None) -> None:
        """End a request early (failure or cancellation); its rows are released by _reap."""
        if request.closed:
            return
        request.closed = True
        request.pending.clear()
        if error is not None:
            self._emit(request, RequestFailed(error))

    def _release(self, batch: _Batch, row: _Row) -> None:
        if row.slot >= 0 and batch.slots[row.slot] is row:
            batch.slots[row.slot] = None
        row.finished = True
        row.request.live -= 1
        self._kv_tokens -= row.request.kv_need
        if batch.key is not None and self._adapters is not None:
            self._adapters.unpin(batch.key)

    def _reap(self) -> None:
        for request in self._waiting:
            if request.handle.cancelled:
                self._close(request, None)
        self._waiting = collections.deque(r for r in self._waiting if not r.closed)
        for batch in self._batches.values():
            for row in batch.live():
                if row.request.handle.cancelled:
                    self._close(row.request, None)
                if row.request.closed:
                    self._release(batch, row)

    def _fail_batch(self, batch: _Batch, error: DistilleryError) -> None:
        for row in batch.live():
            self._close(row.request, error)
            self._release(batch, row)
        self._batches.pop(batch.key, None)

    # -- admission and prefill ------------------------------------------------------------------

    def _admit(self) -> None:
        room = self.max_batch_size - sum(len(b.live()) for b in self._batches.values())
        plan: dict[str | None, list[tuple[_Request, int]]] = {}
        planned = prompt_tokens = 0
        while self._waiting and room > 0:
            request = self._waiting[0]
            busy = self._kv_tokens > 0 or planned > 0
            if busy and self._kv_tokens + planned + request.kv_need > self._kv_budget_tokens:
                break  # wait for memory; an idle engine always takes the head of the queue
            if planned and prompt_tokens + len(request.prepared.prompt_ids) > _PREFILL_GROUP_TOKENS:
                break  # the rest joins at the next step
            prompt_tokens += len(request.prepared.prompt_ids)
            plan.setdefault(request.key, []).append((request, request.pending.pop(0)))
            planned += request.kv_need
            room -= 1
            if not request.pending:
                self._waiting.popleft()
        for key, items in plan.items():
            adapter = items[0][0].adapter
            try:
                if adapter is not None:
                    assert self._adapters is not None
                    self._adapters.ensure(adapter)
                batch = self._batches.get(key)
                if batch is None:
                    batch = self._batches[key] = _Batch(adapter, self._new_cache())
                self._prefill_and_join(batch, items)
            except Exception as exc:
                if not isinstance(exc, DistilleryError):
                    log.exception("prefill failed for %s", key or self.model_name)
                error = (
                    exc
                    if isinstance(exc, DistilleryError)
                    else DistilleryError(f"local generation failed: {exc}")
                )
                for request, _ in items:
                    self._close(request, error)
                self._reap()

    def _new_cache(self) -> SlotCache:
        assert self.model is not None
        layers, kv_heads, head_dim = self._kv_shape
        return SlotCache(
            layers=layers,
            kv_heads=kv_heads,
            head_dim=head_dim,
            dtype=self.model.dtype,
            device=self.model.device,
        )

    def _activate(self, batch: _Batch) -> None:
        assert self._adapters is not None
        self._adapters.activate(batch.key)

    def _forward_columns(
        self,
        cache: SlotCache,
        ids: torch.Tensor,
        valid: torch.Tensor,
        positions: torch.Tensor,
        first: int,
    ) -> torch.Tensor:
        """Run columns ``first..`` of ``ids`` (rows x width) through the model in chunks; columns
        before ``first`` are already in ``cache``. Returns the logits of the last column.

        Sliding-window layers get the mask of their window, by token position (``positions``),
        the other layers the full causal mask (see ``attention``)."""
        import torch

        assert self.model is not None
        rows, width = ids.shape
        chunk = max(16, _PREFILL_TOKENS // rows)
        keys = torch.arange(width, device=ids.device)
        logits: torch.Tensor | None = None
        for start in range(first, width, chunk):
            end = min(width, start + chunk)
            queries = keys[start:end].unsqueeze(1)
            allowed = (keys[:end].unsqueeze(0) <= queries) & valid[:, None, None, :end]
            allowed |= keys[:end].unsqueeze(0) == queries  # padding rows attend to themselves
            out = self.model(
                input_ids=ids[:, start:end],
                position_ids=positions[:, start:end],
                attention_mask=allowed,
                cache=cache.cache,
                use_cache=True,
                logits_to_keep=1,
                **self._window_kwargs(allowed, positions[:, start:end], positions[:, :end]),
            )
            logits = out.logits[:, -1, :]
        assert logits is not None
        return logits

    def _window_kwargs(
        self, full: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor
    ) -> dict[str, attention.WindowMasks]:
        """The forward kwarg carrying the sliding-window masks (none for full-attention models)."""
        if not self._windows:
            return {}
        masks = attention.window_masks(full, query_positions, key_positions, self._windows)
        return {attention.KWARG: masks}

    def _prefill(
        self, key: str | None, prompts: list[list[int]]
    ) -> tuple[
        list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor, torch.Tensor, int
    ]:
        """Run the prompts through the model (with the adapter of batch ``key`` active): per-layer
        KV (rows x width), the valid-column mask, the position ids of the columns, the logits of
        each prompt's last token and how many leading tokens of each prompt came from the prefix
        cache.

        Prompts are left padded. Their common prefix (one system prompt, many questions) runs
        once, or not at all when the prefix cache holds it from an earlier prefill, and its KV is
        copied to every row; the rest follows, left padded after the prefix (the padding columns
        are masked holes). A computed prefix is kept in the prefix cache for later prompts: for
        a lone prompt that is all of it but the last token, so the next request with the same
        system prompt finds it.
        """
        import torch

        assert self.model is not None
        device = self.model.device
        shared = _shared_prefix(prompts)
        cached, hit = self._prefixes.lookup(key, prompts)
        if shared < _MIN_SHARED_PREFIX:
            shared = 0
        tails = [p[shared:] for p in prompts]
        rows, tail_width = len(prompts), max(len(t) for t in tails)
        width = shared + tail_width
        ids = torch.full((rows, width), self._pad, dtype=torch.long)
        valid = torch.zeros((rows, width), dtype=torch.bool)
        if shared:
            ids[:, :shared] = torch.tensor(prompts[0][:shared], dtype=torch.long)
            valid[:, :shared] = True
        for i, tail in enumerate(tails):
            ids[i, width - len(tail) :] = torch.tensor(tail, dtype=torch.long)
            valid[i, width - len(tail) :] = True
        positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)
        ids, valid, positions = ids.to(device), valid.to(device), positions.to(device)
        cache = self._new_cache()
        if shared:
            if cached is None or hit < shared:
                prefix = self._new_cache()
                prefix.relayout([], 0, slots=1, length=0, capacity=shared)
                if cached is not None:
                    prefix.fill_prefix(cached, hit)  # reuse what the cache has, compute the rest
                self._forward_columns(
                    prefix, ids[:1, :shared], valid[:1, :shared], positions[:1, :shared], hit
                )
                self._prefixes.store(key, prompts[0][:shared], prefix)
                cached = prefix
            cache.relayout([], 0, slots=rows, length=0, capacity=width)
            cache.fill_prefix(cached, shared)
        else:
            cache.relayout([], 0, slots=rows, length=0, capacity=width)
        logits = self._forward_columns(cache, ids, valid, positions, shared)
        kv = [(layer.kb, layer.vb) for layer in cache.layers]
        return kv, valid, positions, logits, hit if shared else 0

    def _prefill_and_join(self, batch: _Batch, items: list[tuple[_Request, int]]) -> None:
        assert self.tokenizer is not None
        self._activate(batch)
        unique: dict[int, int] = {}
        prompts: list[list[int]] = []
        for request, _ in items:
            if id(request) not in unique:
                unique[id(request)] = len(prompts)
                prompts.append(request.prepared.prompt_ids)
        kv, valid, positions, logits, cached = self._prefill(batch.key, prompts)
        tokenizer = self.tokenizer

        def decode(ids: list[int]) -> str:
            return str(tokenizer.decode(ids, skip_special_tokens=True))

        rows = []
        for request, index in items:
            prepared = request.prepared
            sampler = RowSampler(prepared.params, prepared.seeds[index], logits.shape[-1])
            rows.append(
                _Row(request, index, sampler, TextAccumulator(decode, prepared.params.stop))
            )
        source = [unique[id(request)] for request, _ in items]
        width = valid.shape[1]
        free = [i for i, r in enumerate(batch.slots) if r is None]
        cache = batch.cache
        if len(free) < len(rows) or cache.length < width or cache.mask is None:
            batch.compact(extra_slots=len(rows), min_length=width, extra=rows)
            free = [i for i, r in enumerate(batch.slots) if r is None]
        slots = free[: len(rows)]
        cache.place(slots, kv, valid, positions, source)
        first_column = valid.int().argmax(dim=1).tolist()
        for slot, row, src in zip(slots, rows, source, strict=True):
            batch.slots[slot] = row
            row.slot = slot
            row.span = width - int(first_column[src])
            row.request.live += 1
            self._kv_tokens += row.request.kv_need
            if batch.key is not None and self._adapters is not None:
                self._adapters.pin(batch.key)
            if not row.request.admitted:
                row.request.admitted = True
                row.request.cached_tokens = cached
                self._emit(row.request, Admitted())
        import torch

        first = logits.index_select(0, torch.tensor(source, device=logits.device))
        self._advance(batch, rows, first)

    # -- decoding -------------------------------------------------------------------------------

    def _step(self, batch: _Batch) -> None:
        import torch

        assert self.model is not None
        if batch.needs_compaction():
            batch.compact()
        cache = batch.cache
        assert cache.mask is not None and cache.positions is not None
        device = self.model.device
        slots = batch.slots
        length = cache.length
        ids = torch.tensor([[r.last_token if r else self._pad] for r in slots], device=device)
        positions = torch.tensor([[r.pos if r else 0] for r in slots], device=device)
        cache.mask[:, length] = True
        cache.positions[:, length] = positions[:, 0]
        full = cache.mask[:, None, None, : length + 1]
        self._activate(batch)
        out = self.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=full,
            cache=cache.cache,
            use_cache=True,
            **self._window_kwargs(full, positions, cache.positions[:, : length + 1]),
        )
        cache.length = length + 1
        free = [i for i, r in enumerate(slots) if r is None]
        if free:
            cache.mask[torch.tensor(free, device=device), length] = False
        live = [i for i, r in enumerate(slots) if r is not None]
        rows = [r for r in slots if r is not None]
        for row in rows:
            row.pos += 1
            row.span += 1
        logits = out.logits[:, -1, :]
        if len(live) < len(slots):
            logits = logits.index_select(0, torch.tensor(live, device=device))
        self._advance(batch, rows, logits)

    def _advance(self, batch: _Batch, rows: list[_Row], logits: torch.Tensor) -> None:
        """Choose each row's next token from its logits row and update the row."""
        import torch

        assert self._compiler is not None
        scores = logits.float().cpu()
        constrained = [i for i, r in enumerate(rows) if r.constraint is not None]
        if constrained:
            index = torch.tensor(constrained)
            sub = scores.index_select(0, index)
            self._compiler.apply_masks([rows[i].constraint for i in constrained], sub)  # type: ignore[misc]
            scores[index] = sub
        tokens = choose_tokens([r.sampler for r in rows], scores)
        for row, token in zip(rows, tokens, strict=True):
            self._accept(batch, row, token)

    def _accept(self, batch: _Batch, row: _Row, token: int) -> None:
        row.sampler.observe(token)
        if token in self._eos:
            self._finish(batch, row, "stop")
            return
        if row.constraint is not None and not row.constraint.consume(token):
            log.warning("grammar rejected token %d: %s", token, row.constraint.error())
            self._finish(batch, row, "stop")
            return
        row.generated += 1
        row.last_token = token
        row.text.push(token)
        if row.text.stopped or (row.constraint is not None and row.constraint.is_stopped()):
            self._finish(batch, row, "stop")
        elif row.generated >= row.max_new:
            self._finish(batch, row, "length")
        else:
            delta = row.text.take_delta()
            if delta:
                self._emit(row.request, TextDelta(row.index, delta))

    def _finish(self, batch: _Batch, row: _Row, reason: str) -> None:
        request = row.request
        row.text.finish()
        delta = row.text.take_delta(final=True)
        if delta:
            self._emit(request, TextDelta(row.index, delta))
        self._emit(request, ChoiceFinished(row.index, reason, row.generated))
        request.completion_tokens += row.generated
        request.done += 1
        self._release(batch, row)
        if request.done == request.prepared.params.n and not request.closed:
            request.closed = True
            self._emit(
                request,
                RequestDone(
                    len(request.prepared.prompt_ids),
                    request.completion_tokens,
                    request.cached_tokens,
                ),
            )


# ---------------------------------------------------------------------------------------------


class ModelNotSupportedError(InvalidRequestError):
    """A local model whose architecture the engine cannot run exactly: refused (a 400 naming the
    architecture), never answered approximately."""

    default_code = "model_not_supported"


def _check_architecture(name: str, model: PreTrainedModel) -> tuple[int, ...]:
    """Refuse a model the engine cannot run exactly, set its attention to the engine's
    (``attention.ATTENTION``) and return the sliding windows its layers use (none: full
    attention everywhere).

    Every layer must be full causal or sliding-window attention, and the window each layer
    announces (one probe forward pass) must be the one its configuration describes: a model
    that slides otherwise (in its own mask builder only) would get full attention here.
    """
    config = model.config.get_text_config()
    arch = type(model).__name__

    def refuse(why: str) -> ModelNotSupportedError:
        return ModelNotSupportedError(
            f"model {name!r} ({arch}, model_type {getattr(config, 'model_type', '?')!r}) is not "
            f"supported by the local engine: {why}",
            param="model",
        )

    if getattr(config, "is_encoder_decoder", False) or model.config.is_encoder_decoder:
        raise refuse("encoder-decoder models are not supported")
    if getattr(config, "use_bidirectional_attention", False) or not getattr(
        config, "is_causal", True
    ):
        raise refuse("bidirectional attention is not supported")
    if getattr(config, "attn_logit_softcapping", None):
        raise refuse("attention logit soft-capping is not supported")
    expected = attention.configured_windows(config)
    if expected is None:
        kinds = sorted(set(getattr(config, "layer_types", None) or []))
        raise refuse(f"layer types {kinds}: only full and sliding-window attention are supported")
    try:
        model.set_attn_implementation(attention.register())
    except (ValueError, ImportError) as exc:
        raise refuse(f"it has no SDPA attention ({exc})") from exc
    report = attention.probe(model)
    if report.unsupported:
        raise refuse(f"its attention needs {', '.join(report.unsupported)}")
    sliding = any(w is not None for w in (*expected, *report.windows))
    if sliding and list(report.windows) != expected:
        raise refuse(
            f"its layers apply the sliding windows {_windows_text(report.windows)} but its "
            f"configuration describes {_windows_text(expected)}"
        )
    return tuple(sorted({w for w in expected if w is not None}))


def _windows_text(windows: Sequence[int | None]) -> str:
    return "[" + ", ".join("full" if w is None else str(w) for w in windows) + "]"


def _shared_prefix(prompts: list[list[int]]) -> int:
    """Length of the common prefix of all prompts, leaving every prompt at least one own token
    (for a lone prompt: all of it but the last token)."""
    first = prompts[0]
    limit = min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


def inference_threads() -> int:
    """torch threads for CPU inference: every core this process may use but one.

    The spare core keeps the event loop (HTTP, storage) responsive. It also avoids the collapse
    of OpenMP barriers when all cores are busy: each parallel op waits for its slowest thread, and a
    thread that loses its core to the event loop or another process stalls every op of a step
    (measured on 2 busy cores: 2 threads 2.1 tokens/s, 1 thread 18.4 tokens/s at batch 1).
    """
    from distillery.weights import usable_cores

    return max(1, usable_cores() - 1)


def _memory_budget(device: str) -> int:
    """Bytes the KV caches may use: a share of the memory free at load time."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.6)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 * 4 // 10
    except OSError:
        pass
    return 4 * 1024**3


def _load_error(model: str, exc: BaseException) -> DistilleryError:
    if isinstance(exc, ModelNotSupportedError) or (
        isinstance(exc, DistilleryError) and not isinstance(exc, InvalidRequestError)
    ):
        return exc
    message = exc.message if isinstance(exc, DistilleryError) else f"{type(exc).__name__}: {exc}"
    return DistilleryError(
        f"cannot load local model {model!r}: {message}", code="model_load_failed"
    )


__all__ = [
    "Admitted",
    "ChoiceFinished",
    "EngineEvent",
    "EngineStatus",
    "GenerationEngine",
    "ModelNotSupportedError",
    "PreparedRequest",
    "RequestDone",
    "RequestFailed",
    "RequestHandle",
    "TextDelta",
    "inference_threads",
]
