"""Running an eval: generate samples (optionally), grade every item, persist it, aggregate.

- With a ``model`` in the data source, each item's messages go to
  ``providers.route(model).create(body)`` (a teacher, the base student or a fine-tuned student
  alike), at most ``concurrency`` at a time; otherwise the sample is the stored answer (stored
  completions), the given ``sample`` (jsonl) or the dataset's reference output.
- Every testing criterion grades the sample; model judges call the providers through
  ``ProviderJudge``. A failed generation, an unreadable item or a grader error makes the item
  ``error`` (counted as ``errored``); nothing an item does stops the run.
- Each output item is written as soon as it is graded; a run that stopped (server restart)
  continues with the items it has not graded yet (``(run_id, datasource_item_id)`` is unique, so an
  item is never recorded twice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from distillery import ids
from distillery.costs.usage import Usage, token_count
from distillery.errors import DistilleryError, InvalidRequestError
from distillery.evals.datasources import (
    DataSources,
    SourceItem,
    check_item,
    generation_messages,
    item_schema,
    sampling_body,
)
from distillery.evals.graders.base import GradeInput, Grader, GraderError, sample_from_output
from distillery.evals.graders.judging import ProviderJudge
from distillery.evals.graders.registry import build_grader
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.providers.registry import ProviderRegistry
from distillery.store.evals import EvalRunRecord, EvalsRepo, OutputItemRecord
from distillery.wire.content import message_text

log = logging.getLogger("distillery.evals")

ACTIVE = ("queued", "in_progress")
TERMINAL = ("completed", "canceled", "failed")
NO_ERROR: dict[str, str] = {"code": "", "message": ""}
STATUS_POLL_S = 0.5


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (anything unusual becomes its string)."""
    return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS))


def result_type(grader_type: str) -> str:
    """OpenAI's result ``type`` spelling: ``string_check`` -> ``string-check-grader``."""
    return grader_type.replace("_", "-") + "-grader"


# testing criteria that need a field their grader object leaves optional (OpenAI's
# ``TestingCriterionTextSimilarity`` requires ``pass_threshold``; ``TextSimilarityGrader`` has none)
CRITERIA_REQUIRE = {"text_similarity": "pass_threshold"}


def build_graders(eval_body: Mapping[str, Any], judge: ProviderJudge | None) -> list[Grader]:
    graders = []
    for i, cfg in enumerate(eval_body.get("testing_criteria") or []):
        graders.append(build_grader(cfg, judge=judge, param=f"testing_criteria[{i}]"))
        required = CRITERIA_REQUIRE.get(str(cfg.get("type")))
        if required is not None and required not in cfg:
            param = f"testing_criteria[{i}].{required}"
            raise InvalidRequestError(
                f"Missing required parameter: '{param}'.",
                param=param,
                code="missing_required_parameter",
            )
    return graders


def run_model(ds: Mapping[str, Any]) -> str | None:
    model = ds.get("model")
    return str(model) if model else None


# --- samples -----------------------------------------------------------------------------------


def _usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    counted = Usage.of({"usage": usage})
    prompt, completion = counted.prompt or 0, counted.completion or 0
    # an eval sample's own usage may carry cached_tokens at the top level
    cached = counted.cached or token_count(usage.get("cached_tokens")) or 0
    total = token_count(usage.get("total_tokens")) or prompt + completion
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "total_tokens": total,
    }


def _first_choice(completion: Mapping[str, Any] | None) -> Mapping[str, Any]:
    choices = (completion or {}).get("choices") or []
    return choices[0] if choices and isinstance(choices[0], Mapping) else {}


def _given_text(sample: Mapping[str, Any]) -> str:
    if isinstance(sample.get("output_text"), str):
        return str(sample["output_text"])
    output = sample.get("output")
    if isinstance(output, list) and output and isinstance(output[-1], Mapping):
        return message_text(output[-1])
    message = _first_choice(sample).get("message")
    return message_text(message) if isinstance(message, Mapping) else ""


@dataclass(frozen=True)
class Sample:
    """One model answer: what graders see (``namespace``) and what the output item shows."""

    namespace: dict[str, Any]
    record: dict[str, Any]
    error: dict[str, str] | None = None


def _sample_record(
    *,
    messages: list[dict[str, Any]],
    completion: Mapping[str, Any] | None,
    model: str,
    params: Mapping[str, Any],
    error: dict[str, str] | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    choice = _first_choice(completion)
    message = choice.get("message") if isinstance(choice.get("message"), Mapping) else {}
    assert isinstance(message, Mapping)
    output: list[dict[str, Any]] = []
    if completion is not None or text is not None:
        out: dict[str, Any] = {
            "role": "assistant",
            "content": message_text(message) if text is None else text,
        }
        if message.get("tool_calls"):
            out["tool_calls"] = message["tool_calls"]
        output.append(out)
    temperature, top_p = params.get("temperature"), params.get("top_p")
    return {
        "input": [{"role": str(m.get("role", "")), "content": message_text(m)} for m in messages],
        "output": output,
        "model": str((completion or {}).get("model") or model),
        "finish_reason": str(choice.get("finish_reason") or ""),
        "usage": _usage((completion or {}).get("usage")),
        "error": error or dict(NO_ERROR),
        "seed": int(params.get("seed") or 0),
        "temperature": float(1.0 if temperature is None else temperature),
        "top_p": float(1.0 if top_p is None else top_p),
        "max_completion_tokens": int(
            params.get("max_completion_tokens") or params.get("max_tokens") or 0
        ),
    }


def _namespace(completion: Mapping[str, Any] | None, text: str) -> dict[str, Any]:
    namespace = sample_from_output(text)
    message = _first_choice(completion).get("message") or {}
    namespace["output_tools"] = list(message.get("tool_calls") or [])
    namespace["choices"] = list((completion or {}).get("choices") or [])
    namespace["model"] = (completion or {}).get("model")
    return namespace


def completion_sample(
    messages: list[dict[str, Any]],
    completion: Mapping[str, Any],
    model: str,
    params: Mapping[str, Any],
) -> Sample:
    choice = _first_choice(completion)
    message = choice.get("message")
    text = message_text(message) if isinstance(message, Mapping) else ""
    record = _sample_record(messages=messages, completion=completion, model=model, params=params)
    return Sample(_namespace(completion, text), record)


def given_sample(si: SourceItem) -> Sample:
    """The sample that came with the item (jsonl ``sample``, dataset reference), if any."""
    given = dict(si.sample or {})
    text = _given_text(given)
    namespace = {**_namespace(None, text), **given}
    namespace.setdefault("output_text", text)
    record = _sample_record(
        messages=list(given.get("input") or []) if isinstance(given.get("input"), list) else [],
        completion=None,
        model=str(given.get("model") or ""),
        params=given,
        text=text if si.sample is not None else None,
    )
    return Sample(namespace, record)


def error_sample(
    messages: list[dict[str, Any]], model: str, params: Mapping[str, Any], code: str, message: str
) -> Sample:
    error = {"code": code, "message": message}
    record = _sample_record(
        messages=messages, completion=None, model=model, params=params, error=error
    )
    return Sample({"output_text": "", "output_json": None}, record, error)


# --- aggregation -------------------------------------------------------------------------------


def aggregate(
    items: Iterable[OutputItemRecord], criteria: list[str], total: int | None
) -> dict[str, Any]:
    """``result_counts``, ``per_testing_criteria_results`` and ``per_model_usage`` of a run."""
    counts: Counter[str] = Counter()
    per: dict[str, Counter[str]] = {name: Counter() for name in criteria}
    usage: dict[str, Counter[str]] = {}

    def add_usage(model: str, used: Mapping[str, Any]) -> None:
        if not model:
            return
        entry = usage.setdefault(model, Counter())
        entry["invocation_count"] += 1
        for key, value in _usage(used).items():
            entry[key] += value

    for rec in items:
        counts[rec.status] += 1
        sample = rec.body.get("sample") or {}
        if rec.body.get("_generated"):
            add_usage(str(sample.get("model") or ""), sample.get("usage") or {})
        for result in rec.body.get("results") or []:
            name = str(result.get("name"))
            bucket = per.setdefault(name, Counter())
            if result.get("error"):
                bucket["errored"] += 1
            else:
                bucket["passed" if result.get("passed") else "failed"] += 1
            details = result.get("details") or {}
            if isinstance(details, Mapping) and isinstance(details.get("usage"), Mapping):
                add_usage(str(details.get("model") or ""), details["usage"])
    graded = counts["pass"] + counts["fail"] + counts["error"]
    return {
        "result_counts": {
            "total": max(total or 0, graded),
            "passed": counts["pass"],
            "failed": counts["fail"],
            "errored": counts["error"],
        },
        "per_testing_criteria_results": [
            {"testing_criteria": name, "passed": c["passed"], "failed": c["failed"]}
            for name, c in per.items()
        ],
        "per_model_usage": [
            {
                "model_name": model,
                "invocation_count": c["invocation_count"],
                "prompt_tokens": c["prompt_tokens"],
                "completion_tokens": c["completion_tokens"],
                "cached_tokens": c["cached_tokens"],
                "total_tokens": c["total_tokens"],
            }
            for model, c in usage.items()
        ],
    }


def criteria_names(eval_body: Mapping[str, Any], graders: list[Grader] | None = None) -> list[str]:
    if graders is not None:
        return [g.name for g in graders]
    names = []
    for i, cfg in enumerate(eval_body.get("testing_criteria") or []):
        names.append(str(cfg.get("name") or cfg.get("type") or f"criterion_{i}"))
    return names


# --- the runner --------------------------------------------------------------------------------


@dataclass
class _Context:
    run: EvalRunRecord
    eval_body: dict[str, Any]
    ds: dict[str, Any]
    graders: list[Grader]
    schema: dict[str, Any] | None
    model: str | None
    params: dict[str, Any]


class Runner:
    def __init__(
        self,
        repo: EvalsRepo,
        sources: DataSources,
        providers: ProviderRegistry,
        *,
        concurrency: int = 8,
    ) -> None:
        self.repo = repo
        self.sources = sources
        self.providers = providers
        self.judge = ProviderJudge(providers)
        self.concurrency = max(1, concurrency)

    # -- one item --------------------------------------------------------------------------------

    def _unusable(self, ctx: _Context, si: SourceItem) -> Sample | None:
        """An error sample when the item cannot be used at all, else None."""
        if si.missing is not None:
            return error_sample([], ctx.model or "", ctx.params, "item_unavailable", si.missing)
        why = check_item(ctx.schema, si.item)
        if why is not None:
            msg = f"item does not match the eval's item_schema: {why}"
            return error_sample([], ctx.model or "", ctx.params, "invalid_item", msg)
        return None

    async def _sample(self, ctx: _Context, si: SourceItem) -> tuple[Sample, bool]:
        """The sample of an item and whether it was generated now."""
        unusable = self._unusable(ctx, si)
        if unusable is not None:
            return unusable, False
        if ctx.model is None:
            if si.completion is None:
                return given_sample(si), False
            model = str(si.completion.get("model") or si.item.get("model") or "")
            params = dict(_stored_params(si))
            return completion_sample(si.messages or [], si.completion, model, params), False
        try:
            messages = generation_messages(ctx.ds, si.item)
        except InvalidRequestError as exc:
            return error_sample([], ctx.model, ctx.params, "invalid_item", exc.message), False
        body = {"model": ctx.model, "messages": messages, **sampling_body(ctx.ds)}
        try:
            completion = await self.providers.route(ctx.model).create(body)
        except DistilleryError as exc:
            code = exc.code or exc.type
            return error_sample(messages, ctx.model, ctx.params, str(code), exc.message), True
        return completion_sample(messages, completion, ctx.model, ctx.params), True

    async def _grade(self, grader: Grader, item: dict[str, Any], sample: Sample) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": grader.name,
            "type": result_type(grader.type),
            "passed": False,
            "score": 0.0,
            "sample": None,
        }
        try:
            grade = await grader.grade(GradeInput(item=item, sample=sample.namespace))
        except GraderError as exc:
            details = {"raw": exc.raw} if exc.raw is not None else {}
            error = {"code": exc.code or "grader_error", "message": exc.message}
            return {**result, "error": error, "reason": exc.message, "details": details}
        except DistilleryError as exc:
            error = {"code": exc.code or "grader_error", "message": exc.message}
            return {**result, "error": error, "reason": exc.message, "details": {}}
        except Exception as exc:
            log.exception("grader %s failed", grader.name)
            error = {"code": "grader_exception", "message": f"{type(exc).__name__}: {exc}"}
            return {**result, "error": error, "reason": error["message"], "details": {}}
        return {
            **result,
            "passed": True if grade.passed is None else bool(grade.passed),
            "score": float(grade.score),
            "reason": grade.reason,
            "details": jsonable(dict(grade.details)),
        }

    async def grade_item(self, ctx: _Context, si: SourceItem) -> tuple[str, dict[str, Any]]:
        """The output item of one datasource item and its status (pass, fail or error)."""
        try:
            sample, generated = await self._sample(ctx, si)
            results: list[dict[str, Any]] = []
            if sample.error is None:
                results = [await self._grade(g, si.item, sample) for g in ctx.graders]
        except Exception as exc:  # a bug must not stop the run: record it on the item
            log.exception("eval item %s of run %s failed", si.index, ctx.run.id)
            message = f"{type(exc).__name__}: {exc}"
            sample, generated, results = (
                error_sample([], ctx.model or "", ctx.params, "internal_error", message),
                False,
                [],
            )
        if sample.error is not None or any(r.get("error") for r in results):
            status = "error"
        else:
            status = "pass" if all(r["passed"] for r in results) else "fail"
        body = {
            "object": "eval.run.output_item",
            "id": ids.new_id(ids.EVAL_OUTPUT_ITEM),
            "eval_id": ctx.run.eval_id,
            "run_id": ctx.run.id,
            "created_at": int(time.time()),
            "status": status,
            "datasource_item_id": si.index,
            "datasource_item": jsonable(si.item),
            "results": results,
            "sample": sample.record,
            "_generated": generated,
        }
        return status, body

    # -- a whole run -----------------------------------------------------------------------------

    def context(self, run: EvalRunRecord, eval_body: dict[str, Any]) -> _Context:
        ds = dict(run.body["data_source"])
        model = run_model(ds)
        return _Context(
            run=run,
            eval_body=eval_body,
            ds=ds,
            graders=build_graders(eval_body, self.judge),
            schema=item_schema(eval_body.get("data_source_config") or {}),
            model=model,
            params=dict(ds.get("sampling_params") or {}),
        )

    async def grade_pending(
        self,
        ctx: _Context,
        state: Mapping[str, Any],
        *,
        progress: ProgressCallback | None = None,
        label: str = "eval",
    ) -> None:
        """Grade every item the run has not graded yet; stops early when the run is canceled."""
        run_id = ctx.run.id
        done = await asyncio.to_thread(self.repo.graded_item_ids, run_id)
        counts: Counter[str] = Counter(await asyncio.to_thread(self.repo.status_counts, run_id))
        total = int(state.get("total") or 0)
        queue: asyncio.Queue[SourceItem | None] = asyncio.Queue(maxsize=2 * self.concurrency)
        stop = asyncio.Event()

        def tick() -> None:
            completed = counts["pass"] + counts["fail"] + counts["error"]
            info = {"pass": counts["pass"], "fail": counts["fail"], "error": counts["error"]}
            report(progress, ProgressEvent(task=label, completed=completed, total=total, info=info))

        async def produce() -> None:
            checked = time.monotonic()
            for si in self.sources.items(ctx.ds, state):
                if si.index in done:
                    continue
                if time.monotonic() - checked > STATUS_POLL_S:
                    checked = time.monotonic()
                    status = await asyncio.to_thread(self.repo.run_status, run_id)
                    if status not in ACTIVE:
                        stop.set()
                        break
                await queue.put(si)
            for _ in range(self.concurrency):  # on an error the task group cancels the workers
                await queue.put(None)

        async def work() -> None:
            while (si := await queue.get()) is not None:
                if stop.is_set():
                    continue
                status, body = await self.grade_item(ctx, si)
                inserted = await asyncio.to_thread(
                    self.repo.insert_output_item, body["id"], run_id, si.index, status, body
                )
                if inserted:
                    counts[status] += 1
                    tick()

        tick()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                for _ in range(self.concurrency):
                    group.create_task(work())
        except ExceptionGroup as group_error:  # report the first cause, not the group
            raise group_error.exceptions[0] from group_error

    def summary(
        self, run_id: str, eval_body: Mapping[str, Any], total: int | None
    ) -> dict[str, Any]:
        try:
            names = criteria_names(eval_body, build_graders(eval_body, None))
        except DistilleryError:
            names = criteria_names(eval_body)
        return aggregate(self.repo.iterate_output_items(run_id), names, total)


def _stored_params(si: SourceItem) -> Mapping[str, Any]:
    completion = si.completion or {}
    return {
        k: completion.get(k)
        for k in ("seed", "temperature", "top_p")
        if completion.get(k) is not None
    }
