"""Asking a teacher for data, within a budget: the calls a synthesis or a relabelling makes.

Every call goes through the provider registry (``providers.route(model).create``), so any
configured teacher works: an OpenAI-compatible upstream, a local model, a fine-tuned one.
:class:`Budget` counts what was spent (calls, tokens, dollars at the teacher's price) and says
when a cap is reached; the caller checks :meth:`Budget.allows` before each call, so a job stops
between calls with what it has, never in the middle of one. A cap in dollars needs a price for
the teacher (``costs.prices``): without one the job is refused before it starts
(:func:`check_cap`), since its spending could not be counted.

:meth:`Teacher.ask_json` asks for a JSON answer in a given schema, retries once when the answer
does not parse, and returns the raw text either way, so a curation report can show what came
back. :meth:`Teacher.record` makes a stored completion of an answer it gave, the one way
synthesis and relabelling keep what they asked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distillery import ids
from distillery.capture.storable import storable
from distillery.costs.prices import PriceTable
from distillery.costs.usage import Usage
from distillery.errors import DistilleryError, InvalidRequestError
from distillery.evals.graders.base import parse_json
from distillery.providers.registry import ProviderRegistry
from distillery.store.records import NewCompletion
from distillery.wire.chat import output_text


@dataclass
class Spend:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float | None = 0.0  # None: the teacher has no price

    def view(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "usd": None if self.usd is None else round(self.usd, 6),
        }


@dataclass
class Budget:
    """Caps on what a job may spend: dollars and calls (None: no cap)."""

    max_usd: float | None = None
    max_calls: int | None = None
    spent: Spend = field(default_factory=Spend)
    started: int = 0  # calls begun (finished ones are in ``spent``)
    reached: str | None = None  # which cap stopped the job: "max_usd" or "max_calls"

    def allows(self) -> bool:
        """Whether one more call may start; once a cap is reached it stays reached. Calls are
        counted as they start, so ``max_calls`` holds at any concurrency; dollars as they
        finish, so the calls in flight when ``max_usd`` is reached still complete."""
        if self.reached is None:
            if self.max_calls is not None and self.started >= self.max_calls:
                self.reached = "max_calls"
            elif (
                self.max_usd is not None
                and self.spent.usd is not None
                and self.spent.usd >= self.max_usd
            ):
                self.reached = "max_usd"
        return self.reached is None

    def begin(self) -> bool:
        """Take one call from the budget (False: none is left)."""
        if not self.allows():
            return False
        self.started += 1
        return True

    def charge(self, usd: float | None, usage: Usage) -> None:
        self.spent.calls += 1
        self.spent.prompt_tokens += usage.prompt or 0
        self.spent.completion_tokens += usage.completion or 0
        if self.spent.usd is not None:
            self.spent.usd = None if usd is None else self.spent.usd + usd


class CapReached(Exception):
    """No call was made: the budget is spent."""


def check_cap(prices: PriceTable, model: str, max_usd: float | None, param: str) -> None:
    """A dollar cap needs the teacher's price, or it could never stop the job: a 400 before
    anything runs."""
    if max_usd is not None and prices.get(model) is None:
        raise InvalidRequestError(
            f"max_usd needs a price for {model!r} to count what it spends; add one under "
            "[prices] in the config, or cap the job with max_calls instead.",
            param=param,
            code="unpriced_model",
        )


@dataclass(frozen=True)
class JsonAnswer:
    value: Any  # the parsed JSON (None when it never parsed)
    raw: str  # the last answer's text
    attempts: int
    error: str | None = None  # why it was not usable


class Teacher:
    """One model asked for data, at most ``concurrency`` calls at a time, within ``budget``."""

    def __init__(
        self,
        providers: ProviderRegistry,
        prices: PriceTable,
        model: str,
        budget: Budget,
        *,
        concurrency: int = 4,
    ) -> None:
        self.providers = providers
        self.prices = prices
        self.model = model
        self.budget = budget
        self._gate = asyncio.Semaphore(max(1, concurrency))

    async def ask(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One chat completion (``model`` set to the teacher's); raises :class:`CapReached`
        when the budget is spent, a ``DistilleryError`` when the teacher fails."""
        async with self._gate:
            if not self.budget.begin():
                raise CapReached(self.budget.reached)
            request = {**body, "model": self.model}
            request.pop("store", None)
            request.pop("stream", None)
            answer = await self.providers.route(self.model).create(request)
            usage = Usage.of(answer)
            self.budget.charge(self.prices.price(self.model, usage), usage)
            return answer

    async def ask_json(
        self,
        messages: list[dict[str, Any]],
        schema: Mapping[str, Any],
        *,
        name: str,
        max_tokens: int,
        temperature: float = 1.0,
        retries: int = 1,
    ) -> JsonAnswer:
        """A JSON answer in ``schema`` of at most ``max_tokens``: retried ``retries`` time(s)
        when it does not parse or the teacher fails; raises :class:`CapReached` when not even a
        first call was allowed."""
        body: dict[str, Any] = {
            "messages": messages,
            "temperature": temperature,
            "max_completion_tokens": max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": name, "strict": True, "schema": dict(schema)},
            },
        }
        raw, error = "", "no answer"
        for attempt in range(1, retries + 2):
            try:
                answer = await self.ask(body)
            except CapReached:
                if attempt == 1:
                    raise
                break
            except DistilleryError as exc:
                raw, error = "", f"{exc.code or exc.type}: {exc.message}"
                continue
            raw = output_text(answer) or ""
            try:
                return JsonAnswer(parse_json(raw), raw, attempt)
            except ValueError as exc:
                error = f"not JSON: {exc}"
        return JsonAnswer(None, raw, attempt, error)

    def record(
        self,
        request: dict[str, Any],
        answer: dict[str, Any],
        *,
        metadata: dict[str, str],
        latency_ms: float | None,
    ) -> NewCompletion:
        """One of the teacher's answers as a stored completion (storable as it is), priced at
        the teacher's price. Its id is always a new one: a teacher behind a cache or a replay
        may repeat an earlier answer's."""
        usage = Usage.of(answer)
        provider = self.providers.route(self.model)
        return storable(
            NewCompletion(
                id=ids.new_id(ids.CHAT_COMPLETION),
                created_at=int(time.time()),
                model=self.model,
                provider=getattr(provider, "name", "teacher"),
                status="completed",
                stream=False,
                request=request,
                response=answer,
                error=None,
                metadata=metadata,
                prompt_tokens=usage.prompt,
                completion_tokens=usage.completion,
                cached_tokens=usage.cached,
                latency_ms=latency_ms,
                cost_usd=self.prices.price(self.model, usage),
            )
        )
