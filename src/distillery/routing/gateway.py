"""The gateway with routes: who answers a request a route matches, and what happens around it.

Routing is a stage of every capturing endpoint's path (``capture.exchange``): the gateway takes the
endpoint's adapter (chat completions, the Responses API, legacy completions) with the request, and
reads the request through its chat view, so a route matches, samples, grades and caches a
Responses request as it does a chat one. A request no route matches goes straight to its endpoint
(one dict lookup added). A matched request, by the route's mode:

- ``off``: the teacher answers;
- ``shadow``: the teacher answers; a sample of requests (bounded concurrency: when the route's
  shadow slots are full the request is not shadowed, and that is counted) is sent to the
  student *after* the teacher's answer is ready, in the background, never on the user's latency
  path; the student's answer is stored beside the teacher's (same metadata, ``requested_model``
  and ``route_id`` set) and graded against it (``item.teacher``);
- ``canary`` / ``full``: the student answers the requests assigned to it. Its blocking graders
  run before the answer is returned; when one fails, or the student's provider fails, the
  teacher is called and its answer returned instead (a *fallback*, counted with its reason).
  Streaming requests on a route with blocking graders are buffered (graded whole, then sent as
  the endpoint's events: chat chunks, or ``response.*`` events); without blocking graders they
  stream through.

Every routed request leaves an ``Outcome`` (who answered, the student's verdict, cost and
savings), written off the path. The student's verdicts on user traffic feed the route's rollback
window. Responses carry ``x-distillery-route`` and ``x-distillery-served-by`` headers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from distillery.capture.exchange import AS_ASKED, Answering, Endpoint, Exchange, RouteTag
from distillery.costs.prices import PriceTable
from distillery.errors import DistilleryError
from distillery.routing.cache import UNCACHED_FIELDS, ResponseCache, cache_key, deterministic
from distillery.routing.grading import Verdict, grade, grading_item
from distillery.routing.outcomes import OutcomeLog, RollbackWatch, supervised
from distillery.routing.table import Route, RouteTable
from distillery.security.keys import NOBODY, Caller
from distillery.store.routes import Outcome, RoutesRepo
from distillery.wire.chat import output_text

log = logging.getLogger("distillery.routing")

RollbackHandler = Callable[[str, int, dict[str, Any]], Awaitable[None]]


@dataclass
class Answer:
    """A non-streaming answer and the headers that say how it was made."""

    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamAnswer:
    events: AsyncIterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)


def _headers(route: Route, served_by: str) -> dict[str, str]:
    return {"x-distillery-route": route.id, "x-distillery-served-by": served_by}


@dataclass(frozen=True)
class Prepared:
    """A request on its way through the gateway: its endpoint's adapter and the exchange."""

    endpoint: Endpoint
    exchange: Exchange

    @property
    def model(self) -> str:
        return self.exchange.model

    @property
    def metadata(self) -> dict[str, str] | None:
        return self.exchange.metadata

    @property
    def chat(self) -> dict[str, Any]:
        """The chat completions request it amounts to (what routes and graders read)."""
        return self.exchange.chat

    def text(self, answer: Mapping[str, Any]) -> str:
        """The text of an answer (what graders grade)."""
        return output_text(self.endpoint.as_chat(answer))

    def not_streamed(self) -> Prepared:
        return replace(self, exchange=self.endpoint.not_streamed(self.exchange))

    async def create(self, by: Answering = AS_ASKED) -> dict[str, Any]:
        return await self.endpoint.create(self.exchange, by)

    async def stream(self, by: Answering = AS_ASKED) -> AsyncIterator[bytes]:
        return await self.endpoint.stream(self.exchange, by)

    def keyed(self) -> dict[str, Any]:
        """What the answer depends on: the chat view, and the endpoint's own options."""
        exchange = self.exchange
        if exchange.chat is exchange.body:
            return exchange.chat
        own = {
            k: v
            for k, v in exchange.body.items()
            if k not in UNCACHED_FIELDS and k not in ("input", "previous_response_id", "prompt")
        }
        return {**exchange.chat, "endpoint": {exchange.endpoint: own}}


class RoutedGateway:
    def __init__(
        self,
        *,
        table: RouteTable,
        repo: RoutesRepo,
        prices: PriceTable,
        cache_ttl_s: int = 0,
    ) -> None:
        self.cache = ResponseCache(repo)
        self.cache_ttl_s = cache_ttl_s  # the global cache of unrouted traffic (0: off)
        self.table = table
        self.repo = repo
        self.prices = prices
        self.outcomes = OutcomeLog(repo)
        self.watch = RollbackWatch(repo)
        self.on_rollback: RollbackHandler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shadow_slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._shadow_waiting: dict[str, int] = {}  # shadow requests running or queued
        self.background_failures = 0
        self.last_background_error: str | None = None
        self.shadow_dropped = 0

    # --- entry points ----------------------------------------------------------------------------
    async def create(self, endpoint: Endpoint, body: Any, caller: Caller = NOBODY) -> Answer:
        """A non-streamed answer to ``body``, a request to ``endpoint``."""
        prepared = Prepared(endpoint, await endpoint.prepare(body, caller))
        route = self.table.match(prepared.model, prepared.metadata) if len(self.table) else None
        if route is None:
            return await self._create_unrouted(prepared)
        return await self._create_routed(route, prepared)

    async def stream(self, endpoint: Endpoint, body: Any, caller: Caller = NOBODY) -> StreamAnswer:
        """A streamed answer to ``body``, a request to ``endpoint``."""
        prepared = Prepared(endpoint, await endpoint.prepare(body, caller))
        route = self.table.match(prepared.model, prepared.metadata) if len(self.table) else None
        if route is None:
            return StreamAnswer(await prepared.stream())
        return await self._stream_routed(route, prepared)

    # --- non-streaming ---------------------------------------------------------------------------
    async def _create_routed(self, route: Route, prepared: Prepared) -> Answer:
        to_student = route.to_student(prepared.metadata, prepared.chat)
        serving = route.student if to_student else route.teacher
        key = self._cache_key(route, prepared, serving)
        if key is not None:
            hit = await self._cache_hit(route, prepared, key)
            if hit is not None:
                return Answer(hit, _headers(route, "cache") | {"x-distillery-cache": "hit"})
        tag = RouteTag(route.id, route.teacher)
        if not to_student:
            response = await prepared.create(Answering(tag=tag))
            self._after_teacher(route, prepared, response)
            self._cache_put(route, prepared, key, route.teacher, response)
            return Answer(response, _headers(route, "teacher"))
        try:
            response = await prepared.create(Answering(route.student, tag))
        except DistilleryError as exc:
            teacher = await self._fallback(route, prepared, tag, None, f"student_error:{exc.code}")
            return Answer(teacher, _headers(route, "fallback"))
        item = grading_item(prepared.chat, prepared.metadata, None)
        verdict = await grade(route.graders, item, prepared.text(response), blocking=True)
        if verdict.blocked_by:
            reason = "grader:" + ",".join(verdict.blocked_by)
            teacher = await self._fallback(route, prepared, tag, (response, verdict), reason)
            return Answer(teacher, _headers(route, "fallback"))
        self._spawn(self._finish_student(route, prepared, response, verdict))
        self._cache_put(route, prepared, key, route.student, response)
        return Answer(response, _headers(route, "student"))

    async def _fallback(
        self,
        route: Route,
        prepared: Prepared,
        tag: RouteTag,
        student: tuple[dict[str, Any], Verdict] | None,
        reason: str,
    ) -> dict[str, Any]:
        """The teacher's answer instead of the student's; counted with ``reason``."""
        teacher = await prepared.create(Answering(tag=tag))
        student_response, verdict = student if student is not None else ({}, Verdict())
        # a student that failed to answer failed the user too: the window counts it, as the
        # outcome stored below does (``passed`` False), so a restart seeds the same window
        passed = verdict.passed if student is not None else False
        if passed is not None and route.mode.student_answers:
            self._observe(route, passed)
        student_cost = self.prices.cost_of(route.student, student_response) if student else None
        self.outcomes.add(
            self._served(
                route,
                "fallback",
                teacher,
                student_completion_id=_id_of(student_response),
                passed=passed,
                reason=reason[:256],
                cost_usd=_sum(self.prices.cost_of(route.teacher, teacher), student_cost),
                grades=verdict.grades or None,
            )
        )
        return teacher

    def _after_teacher(self, route: Route, prepared: Prepared, teacher: dict[str, Any]) -> None:
        """Record the teacher's answer; in shadow mode, shadow it with the student."""
        if route.mode.shadows and self._shadow_sampled(route, prepared):
            limit = route.spec.shadow.max_concurrency
            slots = self._shadow_slots.get((route.id, limit))
            if slots is None:
                slots = self._shadow_slots[(route.id, limit)] = asyncio.Semaphore(limit)
            waiting = self._shadow_waiting.get(route.id, 0)
            if waiting < route.spec.shadow.max_concurrency + route.spec.shadow.max_queue:
                self._shadow_waiting[route.id] = waiting + 1
                self._spawn(self._shadow(route, prepared, teacher, slots))
                return
            self.shadow_dropped += 1
        self.outcomes.add(self._served(route, "teacher", teacher))

    def _shadow_sampled(self, route: Route, prepared: Prepared) -> bool:
        rate = route.spec.shadow.sample_rate
        if rate >= 1.0:
            return True
        # deterministic per request, so a retried request is shadowed the same way
        digest = hashlib.blake2b(
            orjson.dumps(prepared.chat.get("messages")), digest_size=4
        ).digest()
        return int.from_bytes(digest, "big") / 2**32 < rate

    async def _shadow(
        self,
        route: Route,
        prepared: Prepared,
        teacher: dict[str, Any],
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            async with slots:
                await self._shadow_answer(route, prepared, teacher)
        finally:
            self._shadow_waiting[route.id] -= 1

    async def _shadow_answer(
        self, route: Route, prepared: Prepared, teacher: dict[str, Any]
    ) -> None:
        """The student's answer to a request the teacher answered, stored and graded."""
        quiet = prepared.not_streamed()
        tag = RouteTag(route.id, route.teacher)
        outcome = self._served(route, "teacher", teacher, shadow=True)
        try:
            student = await quiet.create(Answering(route.student, tag))
        except DistilleryError as exc:
            self.outcomes.add(replace(outcome, passed=False, reason=f"student_error:{exc.code}"))
            return
        item = grading_item(prepared.chat, prepared.metadata, prepared.text(teacher))
        answer = prepared.text(student)
        verdict = (await grade(route.graders, item, answer, blocking=True)).merge(
            await grade(route.graders, item, answer, blocking=False)
        )
        self.outcomes.add(
            replace(
                outcome,
                student_completion_id=_id_of(student),
                passed=verdict.passed,
                grades=verdict.grades or None,
            )
        )

    async def _finish_student(
        self, route: Route, prepared: Prepared, response: dict[str, Any], verdict: Verdict
    ) -> None:
        """After a student's answer was sent: its non-blocking grades, outcome and window."""
        item = grading_item(prepared.chat, prepared.metadata, None)
        verdict = verdict.merge(
            await grade(route.graders, item, prepared.text(response), blocking=False)
        )
        outcome = self._served(
            route,
            "student",
            response,
            student_completion_id=_id_of(response),
            passed=verdict.passed,
            grades=verdict.grades or None,
        )
        saved = _saving(self.prices.cost_of(route.teacher, response), outcome.cost_usd)
        self.outcomes.add(replace(outcome, saved_usd=saved))
        if verdict.passed is not None:
            self._observe(route, bool(verdict.passed))

    # --- streaming -------------------------------------------------------------------------------
    async def _stream_routed(self, route: Route, prepared: Prepared) -> StreamAnswer:
        to_student = route.to_student(prepared.metadata, prepared.chat)
        if to_student and route.blocking:
            # blocking graders need the whole answer: buffer it, grade it, then stream it
            answer = await self._create_routed(route, prepared.not_streamed())
            events = _replay(prepared.endpoint.replay(prepared.exchange, answer.body))
            return StreamAnswer(events, answer.headers)
        tag = RouteTag(route.id, route.teacher)
        if to_student:
            try:
                on_done = lambda c, sid: self._spawn(  # noqa: E731
                    self._finish_student(
                        route, prepared, {**c, "id": sid or c.get("id")}, Verdict()
                    )
                )
                events = await prepared.stream(Answering(route.student, tag, on_done))
                return StreamAnswer(events, _headers(route, "student"))
            except DistilleryError as exc:
                reason = f"student_error:{exc.code}"
                on_done = lambda c, sid: self._streamed_fallback(route, c, sid, reason)  # noqa: E731
                events = await prepared.stream(Answering(None, tag, on_done))
                return StreamAnswer(events, _headers(route, "fallback"))
        events = await prepared.stream(
            Answering(
                None,
                tag,
                lambda c, sid: self._after_teacher(
                    route, prepared, {**c, "id": sid or c.get("id")}
                ),
            )
        )
        return StreamAnswer(events, _headers(route, "teacher"))

    def _streamed_fallback(
        self, route: Route, completion: dict[str, Any], stored_id: str | None, reason: str
    ) -> None:
        answer = {**completion, "id": stored_id}
        self.outcomes.add(self._served(route, "fallback", answer, passed=False, reason=reason))
        if route.mode.student_answers:
            self._observe(route, False)

    def _served(
        self, route: Route, served_by: str, answer: Mapping[str, Any], **fields: Any
    ) -> Outcome:
        """The outcome of a request ``served_by`` the student or the teacher with ``answer``
        (its id, and its cost at the model's price, unless ``fields`` say otherwise)."""
        model = route.student if served_by == "student" else route.teacher
        known = {"completion_id": _id_of(answer), "cost_usd": self.prices.cost_of(model, answer)}
        return _outcome(route, served_by=served_by, model=model, **(known | fields))

    # --- response cache --------------------------------------------------------------------------
    def _cache_key(self, route: Route, prepared: Prepared, serving: str) -> str | None:
        cache = route.spec.cache
        if not cache.enabled or (cache.deterministic_only and not deterministic(prepared.chat)):
            return None
        scope = {"route": route.id, "pairs": route.pairs, "endpoint": prepared.endpoint.name}
        return cache_key(prepared.keyed(), serving=serving, scope=scope)

    async def _cache_hit(self, route: Route, prepared: Prepared, key: str) -> dict[str, Any] | None:
        hit = await self.cache.lookup(key)
        if hit is None:
            return None
        tag = RouteTag(route.id, route.teacher)
        response = await prepared.endpoint.from_cache(
            prepared.exchange, hit.response, Answering(hit.model, tag)
        )
        self.outcomes.add(
            _outcome(
                route,
                served_by="cache",
                model=hit.model,
                completion_id=response["id"],
                cost_usd=0.0,
                saved_usd=self.prices.cost_of(route.teacher, hit.response) or hit.cost_usd,
            )
        )
        self._spawn(asyncio.to_thread(self.cache.counted, key))
        return response

    def _cache_put(
        self,
        route: Route | None,
        prepared: Prepared,
        key: str | None,
        model: str,
        response: Mapping[str, Any],
    ) -> None:
        if key is None or not prepared.endpoint.cacheable(response):
            return
        ttl = route.spec.cache.ttl_s if route is not None else self.cache_ttl_s
        self._spawn(
            asyncio.to_thread(
                self.cache.put,
                key,
                route_id=route.id if route is not None else None,
                model=model,
                response=response,
                cost_usd=self.prices.cost_of(model, response),
                ttl_s=ttl,
            )
        )

    async def _create_unrouted(self, prepared: Prepared) -> Answer:
        """Traffic no route matches, through the global cache (``[gateway] cache_ttl_s``)."""
        if not self.cache_ttl_s or not deterministic(prepared.chat):
            return Answer(await prepared.create())
        scope = {"endpoint": prepared.endpoint.name}
        key = cache_key(prepared.keyed(), serving=prepared.model, scope=scope)
        hit = await self.cache.lookup(key)
        if hit is not None:
            self._spawn(asyncio.to_thread(self.cache.counted, key))
            response = await prepared.endpoint.from_cache(
                prepared.exchange, hit.response, Answering(hit.model)
            )
            return Answer(response, {"x-distillery-cache": "hit"})
        response = await prepared.create()
        self._cache_put(None, prepared, key, prepared.model, response)
        return Answer(response, {"x-distillery-cache": "miss"})

    # --- background work and the rollback window -------------------------------------------------
    def _observe(self, route: Route, passed: bool) -> None:
        breach = self.watch.observe(route, passed)
        if breach is not None and self.on_rollback is not None:
            self._spawn(self.on_rollback(route.id, route.version, breach))

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(supervised(self._tasks, self._background_failed))

    def _background_failed(self, exc: BaseException) -> None:
        self.background_failures += 1
        self.last_background_error = f"{type(exc).__name__}: {exc}"[:300]
        log.error("route background task failed", exc_info=exc)

    async def drain(self) -> None:
        """Wait for the background work in flight (shadow answers, grades, cache writes)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def health(self) -> dict[str, Any]:
        return {
            "routes": len(self.table),
            "background_tasks": len(self._tasks),
            "background_failures": self.background_failures,
            "last_background_error": self.last_background_error,
            "shadow_dropped": self.shadow_dropped,
            "outcomes": self.outcomes.health(),
        }


def _outcome(route: Route, **fields: Any) -> Outcome:
    """An outcome of a request on ``route``, now, in the route's current mode."""
    return Outcome(route_id=route.id, created_at=int(time.time()), mode=route.mode, **fields)


def _id_of(response: Mapping[str, Any]) -> str | None:
    value = response.get("id")
    return value if isinstance(value, str) else None


def _sum(*costs: float | None) -> float | None:
    known = [c for c in costs if c is not None]
    return sum(known) if known else None


def _saving(teacher_cost: float | None, student_cost: float | None) -> float | None:
    if teacher_cost is None:
        return None
    return teacher_cost - (student_cost or 0.0)


async def _replay(events: Any) -> AsyncIterator[bytes]:
    for event in events:
        yield event
