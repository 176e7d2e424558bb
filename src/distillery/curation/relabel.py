"""Relabelling: selected stored inputs answered again by another (stronger) teacher.

One relabelling (:class:`RelabelSpec` is its request body, ``POST /v1/distillery/relabels`` and
``distillery relabel``):

1. **Select** stored completions that finished with an output (``source``: a filter by model,
   metadata and creation time, or a list of ids; at most ``limit``). A filter leaves out the
   answers of earlier relabellings (``origin: relabel``) unless it names ``origin`` itself.
2. **Check** before anything is asked: the teacher's route (404), a dollar cap's price, the
   teacher's terms (409 unless ``acknowledge_terms``), and how answers are compared. Then the
   **estimate**: one call per input, the tokens the originals used (their stored usage), the
   dollars at the teacher's price (``None`` when it has none) and the time at the teacher's
   median stored latency (``None`` when it was never seen). ``dry_run`` stops here.
3. **Ask** the teacher the same request (the stored one, with the teacher as ``model``, without
   ``store``, ``stream`` and ``metadata``), ``concurrency`` at a time, within the caps: a cap
   stops the job between calls, with what it has, and says which (``stopped``). A failed call is
   counted (``failed``) and the run goes on.
4. **Store** each new answer as a new stored completion of the teacher beside the original
   (which is never changed), with its lineage in ``metadata``: ``origin: relabel``,
   ``relabel_of`` (the original's id), ``relabel_id`` (this run), the original's ``prompt`` as
   ``relabel_of_prompt`` (so a filter on ``prompt`` still selects captured traffic only) and its
   ``prompt_version``; the teacher is the record's ``model``.
5. **Compare** the two answers (``compare``): ``label``, the value of a top-level JSON field
   (``label_field``, by default the first enum field of the request's ``response_format``
   schema); ``json``, equal as parsed JSON; ``text``, equal after whitespace normalisation.
   Without ``compare``: ``label`` when a label field is known, else ``json`` when both answers
   parse, else ``text``.
6. **Review**: the originals whose answers disagree go into a new annotation queue (oldest
   first), each item holding the new teacher's answer as its proposed ``corrected_output``
   (pending, so nothing is used before a reviewer accepts it; accepting it puts the new answer
   in datasets in place of the original). The queue's ``source.relabel`` pairs every original
   with its new stored completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from distillery import ids
from distillery.annotations.service import (
    DEFAULT_CLAIM_TIMEOUT_S,
    AnnotationQueue,
    AnnotationsService,
    CompletionsSource,
)
from distillery.costs.prices import PriceTable
from distillery.curation.plan import enum_fields, label_of, schema_of
from distillery.curation.teacher import Budget, CapReached, Teacher, check_cap
from distillery.datasets.guards import TermsOf, check_model_terms
from distillery.errors import ConflictError, DistilleryError, InvalidRequestError
from distillery.evals.graders.base import parse_json
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.providers.registry import ProviderRegistry
from distillery.store.completions import CompletionsRepo
from distillery.store.records import NewCompletion, StoredCompletion
from distillery.wire.chat import output_text
from distillery.wire.content import message_text
from distillery.wire.params import parse_params

log = logging.getLogger("distillery.curation")

MAX_RELABEL = 100_000
MAX_ITEMS_SHOWN = 1000
SAVE_BATCH = 100
# the original's metadata kept on the new answer, under these keys: its prompt under its own key,
# so that what selects a prompt's captured traffic (datasets, evals, distillations, costs by
# prompt) never takes a relabelling for one more captured exchange
LINEAGE_KEYS = {"prompt": "relabel_of_prompt", "prompt_version": "prompt_version"}
# request fields that are not part of the question: how the answer was delivered and kept, the
# Responses API's own request (its chat view is the request), more than one answer
_NOT_ASKED = frozenset({"store", "stream", "stream_options", "metadata", "responses", "n"})
# a legacy ``/v1/completions`` exchange stored in the chat shape: its own parameters
_LEGACY_ONLY = frozenset({"prompt", "echo", "suffix", "best_of", "logprobs"})

Compare = Literal["label", "json", "text"]


class RelabelSpec(BaseModel):
    """The body of ``POST /v1/distillery/relabels``."""

    model_config = ConfigDict(extra="forbid")
    teacher: str = Field(min_length=1, max_length=256)
    source: CompletionsSource
    limit: int | None = Field(default=None, ge=1, le=MAX_RELABEL)
    compare: Compare | None = None  # None: label when a label field is known, else json/text
    label_field: str | None = Field(default=None, min_length=1, max_length=256)
    queue_name: str | None = Field(default=None, min_length=1, max_length=256)
    max_usd: float | None = Field(default=None, gt=0)
    max_calls: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=4, ge=1, le=64)
    acknowledge_terms: bool = False
    dry_run: bool = False


# -- selection -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Original:
    """A selected stored completion: its record, the answer text compared, the request asked."""

    completion: StoredCompletion
    answer: str
    request: dict[str, Any]


@dataclass(frozen=True)
class Selection:
    originals: list[Original]
    skipped: int  # matched, but with no output or no input to ask again


def answer_text(response: Mapping[str, Any] | None) -> str | None:
    """What an answer says: its text, else its tool calls as canonical JSON (None: nothing)."""
    if not response:
        return None
    text = output_text(response)
    if text:
        return text
    choices = response.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], Mapping) else None
    calls = message.get("tool_calls") if isinstance(message, Mapping) else None
    if not isinstance(calls, list) or not calls:
        return None
    shown = []
    for call in calls:
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping):
            continue
        arguments = fn.get("arguments")
        if isinstance(arguments, str):
            with contextlib.suppress(ValueError):  # arguments that are not JSON stay text
                arguments = parse_json(arguments)
        shown.append({"name": fn.get("name"), "arguments": arguments})
    return orjson.dumps(shown, option=orjson.OPT_SORT_KEYS).decode() if shown else None


def request_for(stored: Mapping[str, Any]) -> dict[str, Any] | None:
    """The request a stored completion asked, to ask again (None: it holds no messages)."""
    request = {k: v for k, v in stored.items() if k not in _NOT_ASKED}
    if "prompt" in request:  # a legacy completion: its chat view is ``messages``
        request = {k: v for k, v in request.items() if k not in _LEGACY_ONLY}
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    request.pop("model", None)
    return request


def _original(c: StoredCompletion) -> Original | None:
    if c.status != "completed":
        return None
    answer = answer_text(c.response)
    request = request_for(c.request)
    if answer is None or request is None:
        return None
    return Original(c, answer, request)


def select(completions: CompletionsRepo, spec: RelabelSpec) -> Selection:
    """The stored completions to relabel, in the order they were stored (or given)."""
    src = spec.source
    limit = spec.limit or MAX_RELABEL
    found: list[StoredCompletion] = []
    skipped = 0
    if src.completion_ids is not None:
        wanted = list(dict.fromkeys(src.completion_ids))
        for start in range(0, len(wanted), 500):
            found.extend(completions.get_many(wanted[start : start + 500]))
        missing = sorted(set(wanted) - {c.id for c in found})
        if missing:
            raise InvalidRequestError(
                f"No stored completion with id '{missing[0]}' ({len(missing)} missing).",
                param="source.completion_ids",
            )
        pool: Any = iter(found)
    else:
        pool = completions.iterate(
            model=src.model,
            metadata=src.metadata,
            created_after=src.created_after,
            created_before=src.created_before,
            status="completed",
        )
    keep_relabels = src.completion_ids is not None or "origin" in (src.metadata or {})
    originals: list[Original] = []
    for c in pool:
        if not keep_relabels and c.metadata.get("origin") == "relabel":
            continue  # an earlier relabelling's answer, not an input of the traffic
        original = _original(c)
        if original is None:
            skipped += 1
            continue
        originals.append(original)
        if len(originals) >= limit:
            break
    return Selection(originals, skipped)


def infer_label_field(originals: Sequence[Original]) -> str | None:
    """The most common first enum field of the selected requests' ``response_format``."""
    found: Counter[str] = Counter()
    for o in originals:
        rf = o.request.get("response_format")
        enums = enum_fields(schema_of(rf if isinstance(rf, Mapping) else None))
        first = next(iter(enums), None)
        if first is not None:
            found[first] += 1
    return found.most_common(1)[0][0] if found else None


# -- comparison ------------------------------------------------------------------------------------


def _normalised(text: str) -> str:
    return " ".join(text.split())


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values (``true`` is not ``1``; ``1`` is ``1.0``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def compare_answers(
    original: str, relabelled: str, compare: Compare | None, label_field: str | None
) -> tuple[bool, str]:
    """Whether two answers agree, and how that was decided (``label``, ``json``, ``text``).

    ``label``: the same value in ``label_field`` (two answers that both lack it are compared as
    below); ``json``: equal when both parse, else as text; None: ``json`` when both parse, else
    ``text``."""
    if compare == "label" and label_field is not None:
        a, b = label_of(original, label_field), label_of(relabelled, label_field)
        if a is not None or b is not None:
            return a == b, "label"
    if compare != "text":
        try:
            return same_json(parse_json(original), parse_json(relabelled)), "json"
        except ValueError:
            pass
    return _normalised(original) == _normalised(relabelled), "text"


# -- estimate --------------------------------------------------------------------------------------


def estimate(
    spec: RelabelSpec,
    originals: Sequence[Original],
    *,
    prices: PriceTable,
    count: Callable[[str], int],
    seconds_per_call: float | None,
) -> dict[str, Any]:
    """What the relabelling should cost before it runs: one call per input, the tokens the
    originals used (their stored usage; counted from the text where none was stored)."""
    prompt_tokens = completion_tokens = counted = 0
    for o in originals:
        c = o.completion
        if c.prompt_tokens is None or c.completion_tokens is None:
            counted += 1
        if c.prompt_tokens is not None:
            prompt_tokens += c.prompt_tokens
        else:
            prompt_tokens += count("\n".join(message_text(m) for m in c.messages))
        if c.completion_tokens is not None:
            completion_tokens += c.completion_tokens
        else:
            completion_tokens += count(o.answer)
    calls = len(originals)
    usd = prices.cost(spec.teacher, prompt_tokens, completion_tokens)
    seconds = None
    if seconds_per_call is not None:
        seconds = round(calls * seconds_per_call / min(spec.concurrency, max(calls, 1)), 1)
    return {
        "object": "distillery.relabel.estimate",
        "teacher": spec.teacher,
        "calls": calls,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "tokens_counted": counted,  # inputs without stored usage, their tokens counted instead
        "usd": None if usd is None else round(usd, 4),
        "seconds": seconds,
        "seconds_per_call": seconds_per_call,
        "caps": {"max_usd": spec.max_usd, "max_calls": spec.max_calls},
        "within_caps": (spec.max_calls is None or calls <= spec.max_calls)
        and (spec.max_usd is None or usd is None or usd <= spec.max_usd),
    }


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One original and what became of it."""

    index: int
    original: Original
    record: NewCompletion | None = None
    relabelled: str | None = None
    agreed: bool | None = None
    compared: str | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "completion_id": self.original.completion.id,
            "relabel_id": self.record.id if self.record is not None else None,
            "agreed": self.agreed,
            "original": self.original.answer,
            "relabelled": self.relabelled,
            "compared": self.compared,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Tally:
    relabelled: int = 0
    agreed: int = 0
    disagreed: int = 0
    failed: int = 0
    shown: list[Outcome] = field(default_factory=list)  # the first MAX_ITEMS_SHOWN, by index
    disagreements: list[Outcome] = field(default_factory=list)


class Relabel:
    """One run of steps 3 to 5 (async: ``concurrency`` calls at a time)."""

    def __init__(
        self,
        spec: RelabelSpec,
        originals: Sequence[Original],
        teacher: Teacher,
        *,
        label_field: str | None,
        save: Callable[[list[NewCompletion]], None],
        progress: ProgressCallback | None = None,
        relabel_id: str | None = None,
    ) -> None:
        self.spec = spec
        self.originals = list(originals)
        self.teacher = teacher
        self.label_field = label_field
        self.save = save
        self.progress = progress
        self.id = relabel_id or ids.new_id("relabel_")
        self.tally = Tally()
        self._done = 0
        self._pending: list[NewCompletion] = []
        self._saving = asyncio.Lock()

    @property
    def budget(self) -> Budget:
        return self.teacher.budget

    async def run(self) -> Tally:
        total = len(self.originals)
        report(self.progress, ProgressEvent("relabel", 0, total, message=self.teacher.model))
        work = iter(enumerate(self.originals))

        async def worker() -> None:
            for index, original in work:  # shared: each input goes to one worker
                if not self.budget.allows():  # once a cap is reached, no call starts
                    return
                await self._relabel_one(Outcome(index, original))

        tasks = [asyncio.create_task(worker()) for _ in range(min(self.spec.concurrency, total))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:  # storing failed (or the run was cancelled): stop every worker
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        await self._flush(force=True)
        self.tally.shown.sort(key=lambda o: o.index)
        self.tally.disagreements.sort(key=lambda o: o.index)
        return self.tally

    async def _relabel_one(self, outcome: Outcome) -> None:
        request = {**outcome.original.request, "model": self.teacher.model}
        started = time.perf_counter()
        try:
            answer = await self.teacher.ask(request)
        except CapReached:
            return  # another call spent the budget meanwhile: this input is not relabelled
        except DistilleryError as exc:
            outcome.error = f"{exc.code or exc.type}: {exc.message}"
        except Exception as exc:  # a provider's bug fails this call, never the run
            log.exception("relabel call to %s failed", self.teacher.model)
            outcome.error = f"{type(exc).__name__}: {exc}"
        else:
            latency = (time.perf_counter() - started) * 1000
            text = answer_text(answer)
            if text is None:
                outcome.error = "empty_answer: the teacher's answer holds no text or tool call"
            else:
                outcome.record = self._record(outcome.original, request, answer, latency)
                outcome.relabelled = text
                outcome.agreed, outcome.compared = compare_answers(
                    outcome.original.answer, text, self.spec.compare, self.label_field
                )
        await self._count(outcome)

    async def _count(self, outcome: Outcome) -> None:
        t = self.tally
        if outcome.record is None:
            t.failed += 1
        else:
            t.relabelled += 1
            self._pending.append(outcome.record)
            if outcome.agreed:
                t.agreed += 1
            else:
                t.disagreed += 1
                t.disagreements.append(outcome)
        if outcome.index < MAX_ITEMS_SHOWN:
            t.shown.append(outcome)
        self._done += 1
        report(
            self.progress,
            ProgressEvent(
                "relabel",
                self._done,
                len(self.originals),
                info={"disagreed": t.disagreed, "failed": t.failed},
            ),
        )
        await self._flush()

    async def _flush(self, *, force: bool = False) -> None:
        """Store the new answers in batches as they come (a crash loses at most a batch)."""
        if not self._pending or (len(self._pending) < SAVE_BATCH and not force):
            return
        async with self._saving:
            batch, self._pending = self._pending, []
            if batch:
                await asyncio.to_thread(self.save, batch)

    def _record(
        self, original: Original, request: dict[str, Any], answer: dict[str, Any], latency_ms: float
    ) -> NewCompletion:
        source = original.completion
        metadata = {"origin": "relabel", "relabel_of": source.id, "relabel_id": self.id}
        for key, kept_as in LINEAGE_KEYS.items():
            if key in source.metadata:
                metadata[kept_as] = source.metadata[key]
        return self.teacher.record(request, answer, metadata=metadata, latency_ms=latency_ms)


# -- the review queue ------------------------------------------------------------------------------


def open_queue(
    annotations: AnnotationsService,
    name: str,
    run: Relabel,
    disagreements: Sequence[Outcome],
) -> AnnotationQueue:
    """The originals that disagree, oldest first, each item proposing the new answer."""
    ordered = sorted(disagreements, key=lambda o: (o.original.completion.created_at, o.index))
    n = len(ordered)
    pairs = {o.original.completion.id: o.record.id for o in ordered if o.record is not None}
    source = {
        "type": "completions",
        "completion_ids": [o.original.completion.id for o in ordered],
        "claim_timeout_s": DEFAULT_CLAIM_TIMEOUT_S,
        "skipped": 0,
        "relabel": {
            "id": run.id,
            "teacher": run.teacher.model,
            "compare": run.spec.compare,
            "label_field": run.label_field,
            "selection": run.spec.source.model_dump(exclude_none=True),
            "pairs": pairs,  # original completion id -> the new answer's stored completion id
        },
    }
    repo = annotations.repo
    queue = repo.create_queue(
        name=name,
        source=source,
        priority="oldest",
        items=[(o.original.completion.id, float(n - rank)) for rank, o in enumerate(ordered)],
        metadata={"origin": "relabel", "relabel_id": run.id, "teacher": run.teacher.model},
    )
    proposed = {o.original.completion.id: o.record for o in ordered}
    after: str | None = None
    while True:
        page = repo.list_items(queue.id, after=after, limit=500)
        for item in page.data:
            record = proposed.get(item.completion_id)
            text = output_text(record.response or {}) if record is not None else ""
            if text:  # a tool call is shown through the pairing, never proposed as text
                _propose(annotations, queue.id, item.id, text)
        if not page.has_more or not page.data:
            break
        after = page.data[-1].id
    return annotations.get_queue(queue.id)


def _propose(annotations: AnnotationsService, queue_id: str, item_id: str, text: str) -> None:
    """Set the item's corrected output (pending: a proposal) unless a reviewer got there first."""
    for _ in range(3):
        item = annotations.repo.get_item(queue_id, item_id)
        if item.corrected_output is not None or item.status in ("accepted", "skipped"):
            return
        try:
            annotations.repo.update_item(
                queue_id,
                item_id,
                expected_version=item.version,
                changes={"corrected_output": text},
            )
            return
        except ConflictError:
            continue  # claimed meanwhile: read it again


# -- the whole request -----------------------------------------------------------------------------


async def relabel(
    body: Mapping[str, Any] | RelabelSpec,
    *,
    completions: CompletionsRepo,
    annotations: AnnotationsService | None,
    providers: ProviderRegistry,
    prices: PriceTable,
    terms: TermsOf | None,
    count: Callable[[str], int],
    seconds_per_call: Callable[[str], float | None],
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """The estimate (``dry_run``) or the relabelling's result (see the module's doc)."""
    spec = body if isinstance(body, RelabelSpec) else parse_params(RelabelSpec, dict(body))
    providers.route(spec.teacher)  # 404 for a model nobody serves
    check_cap(prices, spec.teacher, spec.max_usd, "max_usd")
    report(progress, ProgressEvent("select", 0, None, message="selecting stored completions"))
    selection = await asyncio.to_thread(select, completions, spec)
    originals = selection.originals
    if not originals:
        raise InvalidRequestError(
            "The source matches no stored completion with an output to relabel (check the "
            "model, metadata, time range or ids).",
            param="source",
            code="empty_selection",
        )
    report(progress, ProgressEvent("select", len(originals), len(originals)))
    label_field = spec.label_field or infer_label_field(originals)
    if spec.compare == "label" and label_field is None:
        raise InvalidRequestError(
            "compare 'label' needs a label_field: none was given and the selected requests' "
            "response_format has no enum field to take it from.",
            param="label_field",
        )
    compare: Compare | None = spec.compare or ("label" if label_field else None)
    spec = spec.model_copy(update={"compare": compare})
    terms_seen = check_model_terms(
        Counter({spec.teacher: len(originals)}), terms, spec.acknowledge_terms
    )
    spc = await asyncio.to_thread(seconds_per_call, spec.teacher)
    plan = estimate(spec, originals, prices=prices, count=count, seconds_per_call=spc)
    view: dict[str, Any] = {
        "object": "distillery.relabel",
        "id": None,
        "teacher": spec.teacher,
        "dry_run": spec.dry_run,
        "compare": compare or "auto",
        "label_field": label_field if compare == "label" else None,
        "selected": len(originals),
        "skipped": selection.skipped,
        "relabelled": 0,
        "agreed": 0,
        "disagreed": 0,
        "failed": 0,
        "stopped": None,
        "spent": Budget().spent.view(),
        "caps": {"max_usd": spec.max_usd, "max_calls": spec.max_calls},
        "queue_id": None,
        "queue_name": None,
        "terms": terms_seen,
        "items": [],
        "estimate": plan,
    }
    if spec.dry_run:
        return view
    teacher = Teacher(
        providers,
        prices,
        spec.teacher,
        Budget(max_usd=spec.max_usd, max_calls=spec.max_calls),
        concurrency=spec.concurrency,
    )
    run = Relabel(
        spec,
        originals,
        teacher,
        label_field=label_field,
        save=completions.insert_many,
        progress=progress,
    )
    tally = await run.run()
    queue = None
    if tally.disagreements and annotations is not None:
        name = spec.queue_name or f"relabel {spec.teacher}"[:256]
        queue = await asyncio.to_thread(open_queue, annotations, name, run, tally.disagreements)
        report(progress, ProgressEvent("queue", len(tally.disagreements), len(tally.disagreements)))
    view.update(
        id=run.id,
        relabelled=tally.relabelled,
        agreed=tally.agreed,
        disagreed=tally.disagreed,
        failed=tally.failed,
        stopped=teacher.budget.reached,
        spent=teacher.budget.spent.view(),
        queue_id=queue.id if queue is not None else None,
        queue_name=queue.name if queue is not None else None,
        items=[o.view() for o in tally.shown],
    )
    return view
