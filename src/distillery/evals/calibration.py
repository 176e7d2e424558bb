"""Judge calibration: an LLM-as-judge grader (``label_model`` or ``score_model``) against people.

The human labels are the ratings of an annotation queue's items (1-5): a rating at or above
``pass_rating`` means the person found the output good. The judge grades the same stored outputs
(the queue's completions, as an eval of stored completions would see them: ``item.input``,
``item.reference``, ``sample.output_text``), and the two are compared on pass/fail: agreement,
Cohen's kappa, precision and recall of the judge's passes and fails against the people, the
confusion matrix, and bootstrap percentile intervals of agreement and kappa (the same resampling
as the parity comparison, ``evals.compare``). Items the judge could not decide (no label it knows,
a grader error) are counted and left out. Fewer labels than ``min_labels`` is a 400 that says how
many more are needed.

Each calibration is stored under a key of its grader config (``grader_key``: everything but the
name and a route's own fields), so a route's blocking judge can be checked against the latest
calibration of the same judge (``[evals] judge_min_kappa``, ``check_floor``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from distillery import ids
from distillery.annotations.service import AnnotationsService
from distillery.errors import ConflictError, DistilleryError, InvalidRequestError
from distillery.evals.compare import _interval, pass_rate_interval
from distillery.evals.graders.base import GradeInput, JudgeClient, sample_from_output
from distillery.evals.graders.registry import build_grader
from distillery.store.annotations import AnnotationItem
from distillery.store.calibrations import CalibrationsRepo
from distillery.store.completions import CompletionsRepo
from distillery.store.records import StoredCompletion
from distillery.wire.content import message_text
from distillery.wire.params import INT64_MAX, parse_params

JUDGE_TYPES = ("label_model", "score_model")
MAX_ITEMS_LISTED = 200
CALIBRATION_PREFIX = "jcal_"
_NOT_THE_JUDGE = ("name", "blocking", "sample_rate", "block_on_error")  # labels, route fields


def grader_key(config: dict[str, Any]) -> str:
    """The key of a grader config: two configs that judge alike share it."""
    judged = {k: v for k, v in config.items() if k not in _NOT_THE_JUDGE}
    return hashlib.sha256(orjson.dumps(judged, option=orjson.OPT_SORT_KEYS)).hexdigest()


class CalibrationSpec(BaseModel):
    """``POST /v1/distillery/judge_calibrations``."""

    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]
    queue_id: str = Field(min_length=1)
    pass_rating: int = Field(default=4, ge=1, le=5)
    min_labels: int = Field(default=20, ge=2, le=100_000)
    resamples: int = Field(default=1000, ge=100, le=100_000)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    seed: int = Field(default=0, ge=0, le=INT64_MAX)
    # the floor a judge must meet to gate anything, on the lower end of each interval
    min_kappa: float | None = Field(default=None, ge=-1, le=1)
    min_agreement: float | None = Field(default=None, ge=0, le=1)


def _floor(spec: CalibrationSpec, result: dict[str, Any]) -> dict[str, Any] | None:
    """Whether the calibration meets the requested floor, judged on the lower end of the
    bootstrap intervals (as the parity gate judges a student), with the numbers when not."""
    wanted = [
        ("kappa", spec.min_kappa, result["kappa_interval"]),
        ("agreement", spec.min_agreement, result["agreement_interval"]),
    ]
    checks = [(name, floor, interval) for name, floor, interval in wanted if floor is not None]
    if not checks:
        return None
    reasons = [
        f"{name}: lower end {interval[0] if interval else None} is below the floor {floor}"
        for name, floor, interval in checks
        if interval is None or interval[0] < floor
    ]
    return {
        "min_kappa": spec.min_kappa,
        "min_agreement": spec.min_agreement,
        "passed": not reasons,
        "reasons": reasons,
    }


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def kappa(judge: np.ndarray, human: np.ndarray) -> float | None:
    """Cohen's kappa of two boolean label vectors (None when chance agreement is 1)."""
    n = len(judge)
    if n == 0:
        return None
    observed = float(np.mean(judge == human))
    pj, ph = float(np.mean(judge)), float(np.mean(human))
    expected = pj * ph + (1 - pj) * (1 - ph)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


def _kappa_samples(judge: np.ndarray, human: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(judge)
    idx = rng.integers(0, n, size=(resamples, n))
    j, h = judge[idx].astype(float), human[idx].astype(float)
    observed = (j == h).mean(axis=1)
    pj, ph = j.mean(axis=1), h.mean(axis=1)
    expected = pj * ph + (1 - pj) * (1 - ph)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected < 1.0, (observed - expected) / (1 - expected), np.nan)


def _answer(completion: StoredCompletion) -> str:
    choices = (completion.response or {}).get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    return message_text(message) if isinstance(message, dict) else ""


class JudgeCalibration:
    def __init__(
        self,
        annotations: AnnotationsService,
        completions: CompletionsRepo,
        judge: JudgeClient,
        *,
        repo: CalibrationsRepo | None = None,
        concurrency: int = 8,
    ) -> None:
        self.annotations = annotations
        self.completions = completions
        self.judge = judge
        self.repo = repo
        self.concurrency = max(1, concurrency)

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest stored calibrations (for the dashboard), newest first."""
        return self.repo.recent(limit) if self.repo is not None else []

    def check_floor(self, config: dict[str, Any], min_kappa: float, param: str) -> None:
        """A model grader may gate only when its latest calibration's kappa interval starts at
        ``min_kappa`` or above: otherwise a 409 ``judge_not_calibrated`` with the numbers."""
        if config.get("type") not in JUDGE_TYPES:
            return
        latest = self.repo.latest(grader_key(config)) if self.repo is not None else None
        name = config.get("name")
        if latest is None:
            raise ConflictError(
                f"The judge {name!r} has no calibration against people: calibrate it "
                "(POST /v1/distillery/judge_calibrations) before it gates a route "
                f"([evals] judge_min_kappa = {min_kappa}).",
                param=param,
                code="judge_not_calibrated",
            )
        interval = latest.get("kappa_interval")
        low = interval[0] if interval else None
        if low is None or low < min_kappa:
            raise ConflictError(
                f"The judge {name!r} is below the calibration floor: Cohen's kappa "
                f"{latest.get('kappa')} (interval {interval}, {latest.get('graded')} labels, "
                f"calibration {latest.get('id')}) must start at {min_kappa} or above "
                "([evals] judge_min_kappa).",
                param=param,
                code="judge_not_calibrated",
            )

    def _labels(self, queue_id: str) -> list[AnnotationItem]:
        rated: list[AnnotationItem] = []
        after: str | None = None
        while True:
            page = self.annotations.list_items(queue_id, after=after, limit=500)
            rated += [i for i in page.data if i.rating is not None]
            if not page.has_more or not page.data:
                return rated
            after = page.data[-1].id

    async def calibrate(self, body: Any) -> dict[str, Any]:
        spec = parse_params(CalibrationSpec, body)
        grader_type = spec.grader.get("type")
        if grader_type not in JUDGE_TYPES:
            raise InvalidRequestError(
                f"Only model graders are calibrated ({', '.join(JUDGE_TYPES)}), not "
                f"{grader_type!r}.",
                param="grader.type",
            )
        grader = build_grader(spec.grader, judge=self.judge, param="grader")
        labels = await asyncio.to_thread(self._labels, spec.queue_id)  # 404 for an unknown queue
        found = {
            c.id: c
            for c in await asyncio.to_thread(
                self.completions.get_many, [i.completion_id for i in labels]
            )
        }
        labels = [i for i in labels if i.completion_id in found]
        if len(labels) < spec.min_labels:
            raise InvalidRequestError(
                f"Calibration needs at least {spec.min_labels} human labels (rated items of "
                f"queue {spec.queue_id} whose completion is stored); it has {len(labels)}: "
                f"rate {spec.min_labels - len(labels)} more.",
                param="queue_id",
                code="too_few_labels",
            )
        gate = asyncio.Semaphore(self.concurrency)

        async def grade(item: AnnotationItem) -> dict[str, Any]:
            completion = found[item.completion_id]
            answer = _answer(completion)
            inp = GradeInput(
                item={
                    "input": completion.messages,
                    "reference": answer,
                    "completion_id": completion.id,
                    "model": completion.model,
                    "metadata": completion.metadata,
                },
                sample=sample_from_output(answer),
            )
            out: dict[str, Any] = {
                "completion_id": item.completion_id,
                "rating": item.rating,
                "human_pass": (item.rating or 0) >= spec.pass_rating,
            }
            async with gate:
                try:
                    result = await grader.grade(inp)
                except DistilleryError as exc:
                    return {**out, "judge_pass": None, "error": exc.message[:200]}
            return {**out, "judge_pass": result.passed, "judge_score": result.score}

        graded = await asyncio.gather(*(grade(i) for i in labels))
        decided = [g for g in graded if g["judge_pass"] is not None]
        judge = np.asarray([bool(g["judge_pass"]) for g in decided], dtype=bool)
        human = np.asarray([bool(g["human_pass"]) for g in decided], dtype=bool)
        tp = int(np.sum(judge & human))
        fp = int(np.sum(judge & ~human))
        fn = int(np.sum(~judge & human))
        tn = int(np.sum(~judge & ~human))
        agree = [bool(a) for a in judge == human]
        k = kappa(judge, human)
        result: dict[str, Any] = {
            "object": "distillery.judge_calibration",
            "grader": {k_: spec.grader.get(k_) for k_ in ("type", "name", "model")},
            "queue_id": spec.queue_id,
            "pass_rating": spec.pass_rating,
            "labels": len(labels),
            "graded": len(decided),
            "undecided": sum(1 for g in graded if g["judge_pass"] is None and "error" not in g),
            "errors": sum(1 for g in graded if "error" in g),
            "agreement": _ratio(tp + tn, len(decided)),
            "agreement_interval": pass_rate_interval(
                agree, resamples=spec.resamples, seed=spec.seed, confidence=spec.confidence
            ),
            "kappa": None if k is None else round(k, 6),
            "kappa_interval": _interval(
                _kappa_samples(judge, human, spec.resamples, spec.seed), spec.confidence
            )
            if decided
            else None,
            "pass": {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)},
            "fail": {"precision": _ratio(tn, tn + fn), "recall": _ratio(tn, tn + fp)},
            "confusion": {
                "judge_pass_human_pass": tp,
                "judge_pass_human_fail": fp,
                "judge_fail_human_pass": fn,
                "judge_fail_human_fail": tn,
            },
            "confidence": spec.confidence,
            "resamples": spec.resamples,
            "items": graded[:MAX_ITEMS_LISTED],
        }
        result["floor"] = _floor(spec, result)
        if self.repo is not None:
            result = {"id": ids.new_id(CALIBRATION_PREFIX), **result}
            key = grader_key(spec.grader)
            result["created_at"] = int(time.time())
            await asyncio.to_thread(self.repo.add, result["id"], key, result)
        return result
