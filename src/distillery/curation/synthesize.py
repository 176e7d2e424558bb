"""Synthetic training data: the teacher writes new inputs, answers them, and each row is checked.

One synthesis, in rounds (at most ``max_rounds``), until every cell of the plan has its quota or
the budget is spent:

1. **Plan** (``plan.make_plan``): the requested count split over label x language cells (topic x
   language when the task has topics; a task with neither asks the teacher for topics first).
2. **Inputs**: per cell, batches of ``inputs_per_call`` new user inputs, asked with the task
   description, the production system prompt and examples of that cell from the seeds (or inputs
   the current student fails, with ``coverage.failing_run_id``). An answer that does not parse
   is retried once, then rejected with its raw text.
3. **Input checks**: empty, letterless or over-long inputs, an input not in its cell's
   language, and near-duplicates of another input, of a seed or of a held-out test input (exact after NFKC
   normalisation, then all-MiniLM-L6-v2 cosine at ``dedupe_threshold``,
   ``plan.DEFAULT_DEDUPE_THRESHOLD``) are rejected before the teacher is asked to answer them.
4. **Answers**: the teacher answers each input exactly as production would (the seeds' system
   prompt and request settings, ``response_format`` included).
5. **Answer checks**: a truncated or failed answer, JSON that does not parse or match the
   response format's schema, a label outside the allowed set, and any of the request's graders
   that fails (``{{item.input}}``, ``{{item.label}}``, ``{{item.language}}``, ``{{item.topic}}``
   name the planned cell; ``{{sample.output_json.*}}`` the answer).
6. **Balance**: a row is counted in the cell of the label the teacher actually gave; rows past
   a cell's quota are rejected as ``over_quota``, cells short of it get another round.

Every rejected row is kept with its reason in the report. Accepted rows are stored as they are
accepted (in batches, and at the end of every round), as stored completions of the teacher
(metadata ``origin: synthetic``, ``synthesis_id``): what was paid for survives a run that dies.
They become train rows of the new dataset version, beside the seed version's rows (same splits as
before); the report is the version's ``stats.synthesis``. A stored row that the balance drops
later keeps its record, marked ``synthesis_rejected: over_quota``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jsonschema

from distillery import ids
from distillery.costs.prices import PriceTable
from distillery.curation.plan import (
    LENGTHS,
    Cell,
    Seeds,
    SynthesisSpec,
    calls_for,
    label_of,
    make_plan,
    schema_of,
)
from distillery.curation.teacher import Budget, CapReached, Teacher
from distillery.datasets.dedupe import find_exact, find_near
from distillery.datasets.split import normalize
from distillery.embedders import Embedder
from distillery.errors import DistilleryError
from distillery.evals.graders.base import GradeInput, Grader, parse_json, sample_from_output
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.store.records import NewCompletion
from distillery.text.lang import language_of
from distillery.wire.chat import output_text

log = logging.getLogger("distillery.curation")

MAX_INPUT_CHARS = 4000
SAVE_BATCH = 50  # accepted rows stored together
MIN_LETTERS = 3  # "...", "13" or "]," is no input (a small teacher writes such things)
# what a generation call may write: a teacher that rambles is cut off (then retried once, then
# its batch is rejected as unparsable) instead of writing until its context is full
TOKENS_PER_INPUT = 200
TOKENS_PER_TOPIC = 24
EXAMPLES_SHOWN = 5
INPUTS_SCHEMA = {
    "type": "object",
    "properties": {"inputs": {"type": "array", "items": {"type": "string"}}},
    "required": ["inputs"],
    "additionalProperties": False,
}
TOPICS_SCHEMA = {
    "type": "object",
    "properties": {"topics": {"type": "array", "items": {"type": "string"}}},
    "required": ["topics"],
    "additionalProperties": False,
}
_LANGUAGE = {"en": "English", "ja": "Japanese (日本語)"}


class Store(Protocol):
    """Where a synthesis keeps its accepted rows as it goes (the stored completions)."""

    def save(self, records: list[NewCompletion]) -> None: ...

    def mark_dropped(self, completion_ids: list[str | None]) -> None: ...


@dataclass
class Row:
    """One synthetic input and what became of it."""

    cell: Cell
    input: str
    status: str = "pending"  # pending, accepted, rejected
    reason: str | None = None
    detail: str | None = None
    output: str | None = None
    answer: dict[str, Any] | None = None
    request: dict[str, Any] | None = None
    label: str | None = None  # the label the teacher gave
    latency_ms: float | None = None
    completion_id: str | None = None  # its stored completion, once accepted

    def reject(self, reason: str, detail: str | None = None) -> None:
        self.status, self.reason, self.detail = "rejected", reason, detail

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reason": self.reason,
            "input": self.input,
            **self.cell.view(),
        }
        if self.detail:
            out["detail"] = self.detail
        if self.output is not None:
            out["output"] = self.output
        return out


@dataclass
class Rejected:
    """A generation call whose answer gave no input (unparsable twice, or a failed teacher)."""

    cell: Cell
    reason: str
    raw: str
    detail: str | None

    def view(self) -> dict[str, Any]:
        return {"reason": self.reason, "raw": self.raw, "detail": self.detail, **self.cell.view()}


@dataclass
class Outcome:
    """What a synthesis made: accepted rows, everything rejected, and the report."""

    accepted: list[Row]
    report: dict[str, Any]


class Synthesis:
    """One run of the steps above (async: the teacher calls overlap, ``concurrency`` at most)."""

    def __init__(
        self,
        spec: SynthesisSpec,
        seeds: Seeds,
        teacher: Teacher,
        *,
        embedder: Embedder | None,
        graders: Sequence[Grader] = (),
        failing_inputs: Sequence[str] = (),
        progress: ProgressCallback | None = None,
        synthesis_id: str | None = None,
        store: Store | None = None,
    ) -> None:
        self.spec = spec
        self.seeds = seeds
        self.teacher = teacher
        self.embedder = embedder
        self.graders = list(graders)
        self.failing_inputs = list(failing_inputs)
        self.progress = progress
        self.id = synthesis_id or ids.new_id("synth_")
        self.store = store
        self._unsaved: list[NewCompletion] = []
        self.rng = random.Random(spec.seed)
        self.rows: list[Row] = []
        self.failed_calls: list[Rejected] = []
        self.warnings: list[str] = list(seeds.warnings)
        self.plan: dict[Cell, int] = {}
        self.rounds = 0
        self._batches = itertools.count()
        self._checking = asyncio.Lock()
        self._accepted: Counter[Cell] = Counter()  # by the cell each row counts in
        self._in_flight: Counter[Cell] = Counter()  # by planned cell

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        started = time.time()
        report(self.progress, ProgressEvent("rows", 0, self.spec.n, message="planning"))
        topics = await self._topics()
        self.plan = make_plan(self.seeds.labels, self.seeds.languages, topics, self.spec.n)
        while self.rounds < self.spec.max_rounds and self.teacher.budget.allows():
            missing = self._missing()
            if not missing:
                break
            self.rounds += 1
            try:
                if not await self._round(missing) and self.teacher.budget.allows():
                    self.warnings.append(f"Round {self.rounds} produced no new input.")
            finally:  # what was paid for is kept, even when the run dies here
                await self._save()
            await self._balance()
        accepted = [r for r in self.rows if r.status == "accepted"]
        return Outcome(accepted, self._report(started))

    async def _topics(self) -> list[str | None]:
        """The coverage's topics; for a task with no labels and no topics, the teacher's."""
        if self.spec.coverage.topics:
            return list(dict.fromkeys(self.spec.coverage.topics))
        if self.seeds.labels:
            return []
        wanted = min(20, max(3, self.spec.n // 10))
        examples = "\n".join(f"- {r.input}" for r in self._sample(self.seeds.rows, 10))
        messages = [
            {
                "role": "system",
                "content": "You plan diverse training data for a language model application.",
            },
            {
                "role": "user",
                "content": (
                    f"The application: {self.spec.description}\n\n"
                    f"Examples of real user inputs:\n{examples}\n\n"
                    f"List {wanted} distinct topics or situations its users write about, "
                    "covering the whole range of the task (common and rare cases). Answer "
                    'with JSON: {"topics": ["...", ...]}'
                ),
            },
        ]
        try:
            answer = await self.teacher.ask_json(
                messages,
                TOPICS_SCHEMA,
                name="distillery_topics",
                max_tokens=64 + wanted * TOKENS_PER_TOPIC,
                temperature=0.7,
            )
        except CapReached:
            return []
        found = answer.value.get("topics") if isinstance(answer.value, Mapping) else None
        topics: list[str | None] = [
            t.strip() for t in found or [] if isinstance(t, str) and t.strip()
        ]
        if not topics:
            self.failed_calls.append(
                Rejected(Cell(None, "-"), "unparsable_plan", answer.raw, answer.error)
            )
            self.warnings.append("The teacher gave no usable topic plan: one cell per language.")
            return []
        return list(dict.fromkeys(topics))[:wanted]

    def _overshoot(self) -> float:
        """How many inputs to ask for per row still missing: 1.3 at first, then the inverse of
        the share of inputs that became rows so far (at most 4)."""
        if not self.rows:
            return 1.3
        accepted = sum(1 for r in self.rows if r.status == "accepted" or r.reason == "over_quota")
        return min(4.0, max(1.3, len(self.rows) / max(1, accepted)))

    def _missing(self) -> dict[Cell, int]:
        have = Counter(self._counted_cell(r) for r in self.rows if r.status == "accepted")
        return {c: q - have[c] for c, q in self.plan.items() if q - have[c] > 0}

    # -- inputs ----------------------------------------------------------------------------------

    async def _round(self, missing: dict[Cell, int]) -> int:
        """Ask for the missing inputs in batches; each batch is checked and answered as soon as
        it arrives (so a capped job answers some inputs instead of only writing them, and the
        answers start before the last batch is back). Returns how many inputs came back."""
        overshoot = self._overshoot()
        batches = [
            cell
            for cell, count in missing.items()
            for _ in range(calls_for(count, self.spec.inputs_per_call, overshoot))
        ]
        found = 0
        pending = iter(batches)

        async def worker() -> None:
            nonlocal found
            for cell in pending:  # shared: each batch goes to one worker
                if not self.teacher.budget.allows():
                    return
                rows = await self._generate_batch(cell)
                found += len(rows)
                async with self._checking:  # a batch at a time against everything kept so far
                    kept = await asyncio.to_thread(self._check_inputs, rows)
                await asyncio.gather(*(self._answer_one(r) for r in kept))

        # as many batches in flight as calls may be: a batch's answers go before the next batch
        await asyncio.gather(*(worker() for _ in range(min(len(batches), self.spec.concurrency))))
        return found

    async def _generate_batch(self, cell: Cell) -> list[Row]:
        batch = next(self._batches)
        lengths = self.spec.coverage.lengths
        length = LENGTHS[lengths[batch % len(lengths)]] if lengths else None
        try:
            answer = await self.teacher.ask_json(
                self._input_messages(cell, length, batch),
                INPUTS_SCHEMA,
                name="distillery_inputs",
                max_tokens=64 + self.spec.inputs_per_call * TOKENS_PER_INPUT,
                temperature=self.spec.temperature,
            )
        except CapReached:
            return []
        found = answer.value.get("inputs") if isinstance(answer.value, Mapping) else None
        if not isinstance(found, list):
            reason = "teacher_error" if answer.error and not answer.raw else "unparsable_inputs"
            self.failed_calls.append(Rejected(cell, reason, answer.raw, answer.error))
            return []
        rows = []
        for text in found[: self.spec.inputs_per_call * 2]:
            row = Row(cell, text.strip() if isinstance(text, str) else "")
            if not isinstance(text, str):
                row.input = str(text)
                row.reject("not_text")
            rows.append(row)
        return rows

    def _input_messages(self, cell: Cell, length: str | None, batch: int) -> list[dict[str, Any]]:
        same = [
            r
            for r in self.seeds.rows
            if (cell.label is None or r.label == cell.label) and r.language == cell.language
        ]
        pool = (
            same or [r for r in self.seeds.rows if r.language == cell.language] or self.seeds.rows
        )
        examples = [r.input for r in self._sample(pool, EXAMPLES_SHOWN)]
        hard = ""
        if self.failing_inputs and batch % 2 == 0:  # half the batches aim at the failures
            hard = (
                "\nThe current model gets inputs like these wrong; write more of this kind:\n"
                + "\n".join(f"- {t}" for t in self._sample(self.failing_inputs, EXAMPLES_SHOWN))
                + "\n"
            )
        wants = [f"Write {self.spec.inputs_per_call} new user inputs"]
        wants.append(f"in {_LANGUAGE.get(cell.language, cell.language)}")
        if cell.label is not None and self.seeds.label_field:
            wants.append(
                f'that the application should answer with {self.seeds.label_field} = "{cell.label}"'
            )
        elif cell.label is not None:
            wants.append(f'whose right answer is "{cell.label}"')
        if cell.topic is not None:
            wants.append(f"about: {cell.topic}")
        if length is not None:
            wants.append(f"each {length}")
        system = (
            f"\nIts system prompt, sent with every input:\n<<<\n{self.seeds.system}\n>>>\n"
            if self.seeds.system
            else ""
        )
        shown = "\n".join(f"- {t}" for t in examples)
        return [
            {
                "role": "system",
                "content": (
                    "You write realistic, varied user inputs for a language model application; "
                    "they are used to train a smaller model on it."
                ),
            },
            {
                "role": "user",
                "content": (
                    f"The application: {self.spec.description}\n{system}\n"
                    f"Examples of real inputs:\n{shown}\n{hard}\n"
                    f"{', '.join(wants)}. Make them distinct from each other and from the "
                    "examples (do not copy or paraphrase them); vary the wording, detail, tone "
                    "and situation as real users would. Write only what the user sends. "
                    'Answer with JSON: {"inputs": ["...", ...]}'
                ),
            },
        ]

    def _sample(self, pool: Sequence[Any], k: int) -> list[Any]:
        return self.rng.sample(list(pool), min(k, len(pool)))

    def _check_inputs(self, fresh: list[Row]) -> list[Row]:
        """Reject bad inputs and near-duplicates (of each other, the seeds, the held-out test
        split and the rows of earlier rounds); the rest are kept, in a stable order."""
        fresh.sort(key=lambda r: (str(r.cell.label), r.cell.language, str(r.cell.topic), r.input))
        for row in fresh:
            if row.status == "rejected":
                continue
            if not row.input:
                row.reject("empty_input")
            elif sum(ch.isalpha() for ch in row.input) < MIN_LETTERS:
                row.reject("too_short", f"fewer than {MIN_LETTERS} letters")
            elif len(row.input) > MAX_INPUT_CHARS:
                row.reject("too_long", f"{len(row.input)} characters")
            elif (lang := language_of(row.input)) != row.cell.language:
                row.reject("language_mismatch", f"written in {lang}")
        candidates = [r for r in fresh if r.status == "pending"]
        earlier = [r.input for r in self.rows if r.status != "rejected" or r.reason == "over_quota"]
        known = (
            [("duplicate_of_test", t) for t in self.seeds.held_out]
            + [("duplicate_of_seed", r.input) for r in self.seeds.rows]
            + [("duplicate", t) for t in earlier]
        )
        texts = [normalize(t) for _, t in known] + [normalize(r.input) for r in candidates]
        first = len(known)
        found = find_exact(texts)
        if self.embedder is not None:
            found += find_near(
                texts,
                self.embedder,
                threshold=self.spec.dedupe_threshold,
                skip={d.index for d in found},
            )
        for d in found:
            if d.index < first:
                continue  # the seeds and the test split may repeat themselves
            row = candidates[d.index - first]
            if row.status == "rejected":
                continue
            if d.of < first:
                reason, text = known[d.of]
            else:
                reason, text = "duplicate", candidates[d.of - first].input
            row.reject(reason, f"{d.kind} ({d.similarity:.3f}) of: {text[:200]}")
        self.rows.extend(fresh)
        return [r for r in candidates if r.status == "pending"]

    # -- answers ---------------------------------------------------------------------------------

    async def _answer_one(self, row: Row) -> None:
        if self._accepted[row.cell] + self._in_flight[row.cell] >= self.plan.get(row.cell, 0):
            row.reject("over_quota", "not answered: its cell was already full")
            return
        self._in_flight[row.cell] += 1
        try:
            await self._answer_row(row)
        finally:
            self._in_flight[row.cell] -= 1
        if row.status == "accepted":
            record = self.teacher.record(
                row.request or {},
                row.answer or {},
                metadata=self.metadata(),
                latency_ms=row.latency_ms,
            )
            row.completion_id = record.id
            self._unsaved.append(record)
            if len(self._unsaved) >= SAVE_BATCH:
                await self._save()
            self._accepted[self._counted_cell(row)] += 1
            done = sum(self._accepted.values())
            report(self.progress, ProgressEvent("rows", min(done, self.spec.n), self.spec.n))

    async def _answer_row(self, row: Row) -> None:
        request = {
            **self.seeds.settings,
            "model": self.teacher.model,
            "messages": self.seeds.messages_for(row.input),
        }
        started = time.perf_counter()
        try:
            answer = await self.teacher.ask(request)
        except CapReached:
            row.reject("cap_reached", "the budget was spent before this input was answered")
            return
        except DistilleryError as exc:
            row.reject("teacher_error", f"{exc.code or exc.type}: {exc.message}")
            return
        row.latency_ms = (time.perf_counter() - started) * 1000
        row.request, row.answer = request, answer
        row.output = output_text(answer)
        choices = answer.get("choices") or [{}]
        if choices[0].get("finish_reason") == "length":
            row.reject("truncated", "the answer hit max_tokens")
            return
        problem = self._answer_problem(row)
        if problem is not None:
            row.reject(*problem)
            return
        await self._grade(row)

    def _answer_problem(self, row: Row) -> tuple[str, str | None] | None:
        """Why an answer cannot be a training row (None: it can). A label outside the allowed
        set is named as such before the schema check, which would refuse it less clearly."""
        text = row.output or ""
        if not text.strip():
            return "empty_output", None
        rf = self.seeds.response_format or {}
        structured = rf.get("type") in ("json_schema", "json_object")
        value = None
        if structured:
            try:
                value = parse_json(text)
            except ValueError as exc:
                return "invalid_json", str(exc)[:200]
        row.label = label_of(text, self.seeds.label_field)
        labelled = self.seeds.labels and self.seeds.label_field
        if labelled and row.label not in self.seeds.labels:
            return "label_not_allowed", f"{self.seeds.label_field} = {row.label!r}"
        schema = schema_of(rf)
        if structured and schema is not None:
            try:
                jsonschema.validate(value, schema)
            except jsonschema.ValidationError as exc:
                return "schema_mismatch", exc.message[:200]
            except jsonschema.SchemaError as exc:
                return "schema_mismatch", f"the response format's schema: {exc.message}"
        return None

    async def _grade(self, row: Row) -> None:
        item = {"input": row.input, **row.cell.view()}
        sample = sample_from_output(row.output or "")
        for grader in self.graders:
            try:
                grade = await grader.grade(GradeInput(item=item, sample=sample))
            except DistilleryError as exc:
                row.reject(f"grader_error:{grader.name}", exc.message[:200])
                return
            except Exception as exc:  # a grader's bug rejects the row, never the synthesis
                log.exception("grader %s failed on a synthetic row", grader.name)
                row.reject(f"grader_error:{grader.name}", f"{type(exc).__name__}: {exc}")
                return
            if grade.passed is False:
                row.reject(f"grader:{grader.name}", grade.reason)
                return
        row.status = "accepted"

    # -- balance and report ----------------------------------------------------------------------

    def _counted_cell(self, row: Row) -> Cell:
        label = row.label if self.seeds.labels and self.seeds.label_field else row.cell.label
        return Cell(label, row.cell.language, row.cell.topic)

    async def _balance(self) -> None:
        """Rows past their (actual) cell's quota are rejected, the latest first to go; their
        stored completions stay, marked ``synthesis_rejected: over_quota``."""
        have: Counter[Cell] = Counter()
        dropped = []
        for row in self.rows:
            if row.status != "accepted":
                continue
            cell = self._counted_cell(row)
            have[cell] += 1
            if have[cell] > self.plan.get(cell, 0):
                row.reject("over_quota", f"{cell.label or cell.topic}/{cell.language} is full")
                dropped.append(row)
        self._accepted = Counter(self._counted_cell(r) for r in self.rows if r.status == "accepted")
        if dropped and self.store is not None:
            await asyncio.to_thread(self.store.mark_dropped, [r.completion_id for r in dropped])

    def _report(self, started: float) -> dict[str, Any]:
        accepted = Counter(self._counted_cell(r) for r in self.rows if r.status == "accepted")
        rejected = [r for r in self.rows if r.status == "rejected"]
        reasons = Counter(r.reason or "unknown" for r in rejected)
        reasons.update(f.reason for f in self.failed_calls)
        budget = self.teacher.budget
        stopped = None
        if budget.reached is not None:
            stopped = budget.reached
        elif self._missing():
            stopped = "max_rounds"
        return {
            "id": self.id,
            "object": "distillery.synthesis",
            "teacher": self.teacher.model,
            "description": self.spec.description,
            "requested": self.spec.n,
            "accepted": sum(accepted.values()),
            "rejected": len(rejected) + len(self.failed_calls),
            "generated": len(self.rows),
            "rounds": self.rounds,
            "complete": stopped is None,
            "stopped": stopped,
            "reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            "cells": [
                {**cell.view(), "target": quota, "accepted": accepted[cell]}
                for cell, quota in self.plan.items()
            ],
            "label_field": self.seeds.label_field,
            "labels": self.seeds.labels,
            "languages": self.seeds.languages,
            "spent": budget.spent.view(),
            "caps": {"max_usd": budget.max_usd, "max_calls": budget.max_calls},
            "warnings": self.warnings,
            "rejected_items": [r.view() for r in rejected] + [f.view() for f in self.failed_calls],
            "seconds": round(time.time() - started, 3),
        }

    # -- storing ---------------------------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        """What marks this synthesis's stored completions."""
        out = {"origin": "synthetic", "synthesis_id": self.id}
        if self.seeds.label_field and self.seeds.labels:
            out["synthesis_labels"] = self.seeds.label_field
        return out

    async def _save(self) -> None:
        """Store the accepted rows not stored yet (in one transaction, off the event loop)."""
        batch, self._unsaved = self._unsaved, []
        if batch and self.store is not None:
            await asyncio.to_thread(self.store.save, batch)


def estimate(
    spec: SynthesisSpec,
    seeds: Seeds,
    *,
    prices: PriceTable,
    count: Callable[[str], int],
    seconds_per_call: float | None,
    needs_topics: bool,
) -> dict[str, Any]:
    """What the synthesis should cost before it runs: calls, tokens, dollars and time.

    Inputs are asked for with 30% to spare (``plan.calls_for``), and about 15% of them are
    assumed to be rejected before they are answered; the token counts come from the seeds
    (their inputs, outputs and system prompt). A run costs more when more is rejected.
    """
    rows = seeds.rows
    avg_in = sum(count(r.input) for r in rows) / len(rows)
    avg_out = sum(count(r.output) for r in rows) / len(rows)
    system = count(seeds.system or "")
    cells = max(1, len(seeds.labels or [None]) * len(seeds.languages))
    per_cell = -(-spec.n // cells)
    gen_calls = cells * calls_for(per_cell, spec.inputs_per_call) + (1 if needs_topics else 0)
    answers = round(spec.n * 1.15)
    gen_prompt = system + count(spec.description) + EXAMPLES_SHOWN * avg_in + 150
    gen_completion = spec.inputs_per_call * (avg_in + 4)
    prompt_tokens = round(gen_calls * gen_prompt + answers * (system + avg_in + 10))
    completion_tokens = round(gen_calls * gen_completion + answers * avg_out)
    usd = prices.cost(spec.teacher, prompt_tokens, completion_tokens)
    calls = gen_calls + answers
    seconds = None
    if seconds_per_call is not None:
        seconds = round(calls * seconds_per_call / spec.concurrency, 1)
    return {
        "object": "distillery.synthesis.estimate",
        "teacher": spec.teacher,
        "requested": spec.n,
        "cells": cells,
        "calls": calls,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "usd": None if usd is None else round(usd, 4),
        "seconds": seconds,
        "seconds_per_call": seconds_per_call,
        "caps": {"max_usd": spec.max_usd, "max_calls": spec.max_calls},
        "within_caps": (spec.max_calls is None or calls <= spec.max_calls)
        and (spec.max_usd is None or usd is None or usd <= spec.max_usd),
    }


def new_budget(spec: SynthesisSpec) -> Budget:
    return Budget(max_usd=spec.max_usd, max_calls=spec.max_calls)
