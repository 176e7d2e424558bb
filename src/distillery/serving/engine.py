"""The batched generation engine: one thread per base model, continuous batching on a slot KV cache.

Design
------
* One :class:`GenerationEngine` per base model. Its thread loads the weights on first use
  (``runtime``), then loops: take newly submitted requests; admit as many of their sequences (one
  per choice) as the batch has room for, prefilling them together (``prefill``) and copying their
  KV rows into free slots of the running batch (``batch``); run one decoding step for every live
  sequence (``decode``); emit text deltas; free the slots of finished sequences. Sequences join
  and leave between any two steps (continuous batching), so a short answer never waits for a long
  one and a new request starts within one step.
* Admission is bounded by ``max_batch_size`` sequences, by the KV budget measured at load (an
  idle engine always takes the head of the queue) and by ``_PREFILL_GROUP_TOKENS`` prompt tokens
  per iteration. An idle engine waits a few ms for a burst of requests to arrive together, so that
  they are prefilled as one batch.
* Fine-tuned models run on the same base weights with their LoRA adapter (see ``adapters``): each
  adapter, and the plain base, has its own batch; the engine steps the batches in turn and
  activates the batch's adapter before each forward pass. A batch never mixes adapters.
* Requests are prepared (chat template, context check, grammar compilation; ``prepare``) on
  worker threads by the caller, so the engine thread only runs the model. Results travel back to
  the asyncio loop of the caller (``events``), one message per request per step.
* A failing step fails the requests of its batch; a failing iteration (a bug) fails what is in
  flight; the engine keeps serving either way.

This module holds the engine's lifecycle and scheduler; the event and status types are
re-exported from here for the provider. torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any

from distillery.errors import DistilleryError, ServiceUnavailableError
from distillery.serving.adapters import AdapterRef
from distillery.serving.batch import (
    Admission,
    Batch,
    EngineRequest,
    Row,
    distinct_prompts,
    new_rows,
    plan_admission,
)
from distillery.serving.constrained import ResponseFormat
from distillery.serving.decode import accept_token, decode_step, next_tokens
from distillery.serving.events import (
    Admitted,
    ChoiceFinished,
    EngineEvent,
    EngineStatus,
    RequestDone,
    RequestFailed,
    RequestHandle,
    TextDelta,
)
from distillery.serving.head import LastColumn
from distillery.serving.kv_cache import PrefixCache
from distillery.serving.prefill import MIN_SHARED_PREFIX, prefill
from distillery.serving.prepare import PreparedRequest, prepare_request
from distillery.serving.runtime import (
    ModelNotSupportedError,
    ModelRuntime,
    inference_threads,
    load_error,
    load_runtime,
)
from distillery.serving.sampling import SamplingParams
from distillery.serving.tools import ToolRequest

log = logging.getLogger(__name__)

_PREFIX_CACHE_TOKENS = 16384  # most prompt-prefix tokens kept for later requests (1/8 of KV memory)
_COALESCE_QUIET_S = 0.004  # an idle engine batches requests arriving less than 4 ms apart...
_COALESCE_MAX_S = 0.02  # ... for at most 20 ms
_PREFILL_GROUP_TOKENS = 32768  # prompt tokens admitted per iteration (bounds prefill memory)


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
        runtime: ModelRuntime | None = None,
    ) -> None:
        """``runtime``: a model already loaded (``runtime.runtime_for``) instead of loading
        ``source_path`` on the engine's thread."""
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
        self._incoming: collections.deque[EngineRequest] = collections.deque()
        self._waiting: collections.deque[EngineRequest] = collections.deque()
        self._batches: dict[str | None, Batch] = {}
        self._outbox: dict[RequestHandle, list[EngineEvent]] = {}
        self._stopping = False
        self._kv_tokens = 0
        self._prefixes = PrefixCache(max_tokens=_PREFIX_CACHE_TOKENS, min_tokens=MIN_SHARED_PREFIX)
        self._prep_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"distillery-engine-{model_name}", daemon=True
        )
        self._given = runtime
        self.runtime: ModelRuntime | None = None  # set by _load
        self._adapter_snapshot: tuple[tuple[str, int], ...] = ()
        self._adapter_loads: dict[str, int] = {}

    @property
    def _loaded(self) -> ModelRuntime:
        assert self.runtime is not None, "the model is not loaded"
        return self.runtime

    @property
    def _windows(self) -> tuple[int, ...]:
        """The sliding windows of the model's layers (none before load or for full attention)."""
        return self.runtime.windows if self.runtime is not None else ()

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
        runtime = self.runtime
        return EngineStatus(
            model=self.model_name,
            loaded=loaded,
            load_count=self.load_count,
            device=runtime.device if runtime is not None else None,
            dtype=runtime.dtype if runtime is not None else None,
            context_length=(runtime.context_length or None) if runtime is not None else None,
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

        runtime = self.runtime
        dtype, device = (runtime.dtype, runtime.device) if runtime is not None else (None, None)
        digest = hashlib.sha256(f"{self.model_name}:{dtype}:{device}".encode()).hexdigest()
        return f"fp_{digest[:10]}"

    def forget_prefixes(self) -> None:
        """Drop the cached prompt prefixes: their KV is stale once the weights change (the
        reinforcement trainer calls this after each optimizer step). Call while idle."""
        with self._cv:
            self._prefixes = PrefixCache(
                max_tokens=self._prefixes.max_tokens, min_tokens=MIN_SHARED_PREFIX
            )

    def _load(self) -> None:
        runtime = self._given or load_runtime(
            self.model_name,
            source_path=self._source_path,
            device=self._device_pref,
            dtype=self._dtype_pref,
            threads=self._threads,
            chat_template=self._chat_template,
            adapter_budget=self._adapter_budget,
        )
        self._prefixes.max_tokens = min(_PREFIX_CACHE_TOKENS, runtime.kv_budget_tokens // 8)
        self.runtime = runtime
        self.load_count += 1
        log.info(
            "loaded %s on %s (%s), context %d, kv budget %d tokens",
            self.model_name,
            runtime.device,
            runtime.dtype,
            runtime.context_length,
            runtime.kv_budget_tokens,
        )

    # -- requests (caller's threads) ----------------------------------------------------------

    def prepare(
        self,
        messages: list[dict[str, Any]],
        params: SamplingParams,
        response_format: ResponseFormat | None,
        tools: ToolRequest | None = None,
    ) -> PreparedRequest:
        """Template, measure and compile a request. Thread-safe; runs off the event loop."""
        return prepare_request(
            self._loaded, self._prep_lock, messages, params, response_format, tools
        )

    def submit(
        self, prepared: PreparedRequest, adapter: AdapterRef | None, handle: RequestHandle
    ) -> None:
        with self._cv:
            if self._stopping:
                raise ServiceUnavailableError("the local provider is shutting down")
            self._incoming.append(EngineRequest(prepared, adapter, handle))
            self._cv.notify_all()

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._load()
        except BaseException as exc:
            self.ready.set_exception(load_error(self.model_name, exc))
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

    def _emit(self, request: EngineRequest, event: EngineEvent) -> None:
        self._outbox.setdefault(request.handle, []).append(event)

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for handle, events in outbox.items():
            handle.post(events)
        if self.runtime is not None:
            adapters = self.runtime.adapters
            self._adapter_snapshot = tuple((a.model_id, a.nbytes) for a in adapters.loaded())
            self._adapter_loads = dict(adapters.loads)

    def _close(self, request: EngineRequest, error: DistilleryError | None) -> None:
        """End a request early (failure or cancellation); its rows are released by _reap."""
        if request.closed:
            return
        request.closed = True
        request.pending.clear()
        if error is not None:
            self._emit(request, RequestFailed(error))

    def _release(self, batch: Batch, row: Row) -> None:
        if row.slot >= 0 and batch.slots[row.slot] is row:
            batch.slots[row.slot] = None
        row.finished = True
        row.request.live -= 1
        self._kv_tokens -= row.request.kv_need
        if batch.key is not None and self.runtime is not None:
            self.runtime.adapters.unpin(batch.key)

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

    def _fail_batch(self, batch: Batch, error: DistilleryError) -> None:
        for row in batch.live():
            self._close(row.request, error)
            self._release(batch, row)
        self._batches.pop(batch.key, None)

    # -- admission and prefill ------------------------------------------------------------------

    def _admit(self) -> None:
        plan = plan_admission(
            self._waiting,
            room=self.max_batch_size - sum(len(b.live()) for b in self._batches.values()),
            kv_tokens=self._kv_tokens,
            kv_budget=self._loaded.kv_budget_tokens,
            prompt_budget=_PREFILL_GROUP_TOKENS,
        )
        for key, items in plan.items():
            adapter = items[0][0].adapter
            try:
                if adapter is not None:
                    self._loaded.adapters.ensure(adapter)
                batch = self._batches.get(key)
                if batch is None:
                    batch = self._batches[key] = Batch(adapter, self._loaded.new_cache())
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

    def _prefill_and_join(self, batch: Batch, items: Admission) -> None:
        runtime = self._loaded
        runtime.adapters.activate(batch.key)
        prompts, source = distinct_prompts(items)
        done = prefill(runtime, self._prefixes, batch.key, prompts)
        rows = new_rows(items, runtime.tokenizer, runtime.vocab_size)
        batch.place(rows, source, done.kv, done.valid, done.positions)
        for row in rows:
            row.request.live += 1
            self._kv_tokens += row.request.kv_need
            if batch.key is not None:
                runtime.adapters.pin(batch.key)
            if not row.request.admitted:
                row.request.admitted = True
                row.request.cached_tokens = done.cached_tokens
                self._emit(row.request, Admitted())
        import torch

        self._advance(batch, rows, done.last.select(torch.tensor(source)))

    # -- decoding -------------------------------------------------------------------------------

    def _step(self, batch: Batch) -> None:
        rows, last = decode_step(self._loaded, batch)
        self._advance(batch, rows, last)

    def _advance(self, batch: Batch, rows: list[Row], last: LastColumn) -> None:
        """Choose each row's next token from its output and update the row."""
        runtime = self._loaded
        tokens = next_tokens(runtime.compiler, rows, last, runtime.vocab_size)
        for row, token in zip(rows, tokens, strict=True):
            self._accept(batch, row, token)

    def _accept(self, batch: Batch, row: Row, token: int) -> None:
        reason = accept_token(row, token, self._loaded.eos)
        if reason is not None:
            self._finish(batch, row, reason)
            return
        delta = row.text.take_delta()
        if delta:
            self._emit(row.request, TextDelta(row.index, delta))

    def _finish(self, batch: Batch, row: Row, reason: str) -> None:
        request = row.request
        row.text.finish()
        delta = row.text.take_delta(final=True)
        if delta:
            self._emit(request, TextDelta(row.index, delta))
        self._emit(request, ChoiceFinished(row.index, reason, row.generated, row.text.ids))
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
