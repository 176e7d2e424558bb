"""Samples from the weights being trained, through the serving engine.

The reinforcement trainer needs groups of answers per prompt, written exactly as the served
student writes them: the same chat template, the same batched decoding, and the response format
held token by token (constrained decoding) so that every sample is a valid answer to grade. So it
runs the serving engine (``serving.engine``) on the model it trains: ``runtime_for`` wraps the
loaded model (a LoRA model's adapters are injected into its layers, so the engine's forward
passes use the current adapter weights) and the engine's thread decodes while the trainer waits.

The trainer and the engine take turns, never overlap: :meth:`Rollouts.sample` switches the model
to the engine's attention and eval mode, submits the requests, waits for every answer and
switches back to the trainer's packed attention. After an optimizer step :meth:`Rollouts.sample`
forgets the engine's cached prompt prefixes, whose KV was computed with the previous weights.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distillery.serving.constrained import ResponseFormat
from distillery.serving.events import ChoiceFinished, RequestDone, RequestFailed, TextDelta

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from distillery.serving.engine import GenerationEngine
    from distillery.serving.prepare import PreparedRequest
    from distillery.training.local.student import Student


@dataclass(frozen=True)
class Sample:
    """One sampled answer: its text, its tokens, and whether it ended by itself."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str  # "stop" or "length"


@dataclass(frozen=True)
class Group:
    """The samples of one prompt, with the prompt's tokens as the engine rendered them."""

    prompt_ids: list[int]
    samples: list[Sample]


class Rollouts:
    """The serving engine over the student being trained."""

    def __init__(
        self,
        student: Student,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        *,
        max_batch_size: int = 64,
    ) -> None:
        from distillery.serving.engine import GenerationEngine
        from distillery.serving.runtime import runtime_for

        self.student = student
        self._training_attention = student.causal_lm.config._attn_implementation
        model = student.causal_lm
        with self._engine_mode():
            self.runtime = runtime_for(name, model, tokenizer)
        self.engine: GenerationEngine = GenerationEngine(
            model_name=name,
            source_path=None,
            device=None,
            dtype=None,
            max_batch_size=max_batch_size,
            adapter_memory_mb=0,
            runtime=self.runtime,
        )
        self._engine_attention = model.config._attn_implementation
        self._loop = asyncio.new_event_loop()
        self.engine.start()
        self._loop.run_until_complete(self.engine.wait_ready())
        model.set_attn_implementation(self._training_attention)
        self.stale = False

    @property
    def end_of_turn(self) -> int | None:
        """The token that closes an answer in training rows (the template's end of turn)."""
        from distillery import chat_templates

        ids = sorted(chat_templates.end_of_turn_ids(self.runtime.tokenizer))
        return ids[0] if ids else (min(self.runtime.eos) if self.runtime.eos else None)

    @contextlib.contextmanager
    def _engine_mode(self) -> Iterator[None]:
        model = self.student.causal_lm
        cache = model.config.use_cache
        model.config.use_cache = True
        self.student.model.eval()
        try:
            yield
        finally:
            self.student.model.train()
            model.config.use_cache = cache

    def weights_changed(self) -> None:
        """The weights moved (an optimizer step): cached prompt KV is stale."""
        self.stale = True

    def sample(
        self,
        prompts: Sequence[Sequence[Mapping[str, Any]]],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        response_format: ResponseFormat | None,
        seed: int,
    ) -> list[Group]:
        """``n`` answers to each prompt (a list of chat messages), in prompt order.

        ``temperature`` 0 answers greedily. Choice seeds derive from ``seed`` and the prompt's
        index, so a resumed run samples what it would have sampled."""
        from distillery.serving.sampling import parse_sampling_params

        if self.stale:
            self.engine.forget_prefixes()
            self.stale = False

        def prepare(i: int) -> PreparedRequest:
            params = {
                "n": n,
                "temperature": temperature,
                "max_completion_tokens": max_tokens,
                "seed": seed * 100_003 + i,
            }
            messages = [dict(m) for m in prompts[i]]
            return self.engine.prepare(messages, parse_sampling_params(params), response_format)

        # enough requests in flight to keep the batch full, no more: each holds its grammar
        # state per sample until it ends
        in_flight = max(1, 2 * self.engine.max_batch_size // max(1, n))
        model = self.student.causal_lm
        model.set_attn_implementation(self._engine_attention)
        try:
            with self._engine_mode():
                return self._loop.run_until_complete(self._run(prepare, len(prompts), in_flight))
        finally:
            model.set_attn_implementation(self._training_attention)

    async def _run(
        self, prepare: Callable[[int], PreparedRequest], count: int, in_flight: int
    ) -> list[Group]:
        slots = asyncio.Semaphore(in_flight)

        async def one(i: int) -> Group:
            async with slots:
                return await self._one(prepare(i))

        return list(await asyncio.gather(*(one(i) for i in range(count))))

    async def _one(self, prepared: PreparedRequest) -> Group:
        from distillery.serving.events import RequestHandle

        handle = RequestHandle(asyncio.get_running_loop())
        self.engine.submit(prepared, None, handle)
        n = prepared.params.n
        texts: list[list[str]] = [[] for _ in range(n)]
        finished: dict[int, ChoiceFinished] = {}
        async for event in handle.events():
            if isinstance(event, TextDelta):
                texts[event.index].append(event.text)
            elif isinstance(event, ChoiceFinished):
                finished[event.index] = event
            elif isinstance(event, RequestFailed):
                raise event.error
            elif isinstance(event, RequestDone):
                break
        samples = [
            Sample("".join(texts[i]), finished[i].token_ids, finished[i].finish_reason)
            for i in range(n)
        ]
        return Group(list(prepared.prompt_ids), samples)

    def close(self) -> None:
        self.engine.stop()
        self.engine.join(timeout=10)
        self._loop.close()
