"""Runs side by side: per-criterion pass rates and mean scores, each run as a percentage of a
baseline run (the teacher), bootstrap confidence intervals, items that flipped, and agreement.

Definitions (one value per output item of a run):
- a criterion *passes* on an item when its result is present, not errored and ``passed``; an item
  whose sample errored (the model failed) or whose grader errored counts as not passed, so the
  pass rate is ``passed / items`` over every item of the run;
- ``overall`` passes when the item's status is ``pass`` (every criterion passed);
- the mean score averages the scores of the results that did not error;
- items are matched across runs by identity: the stored completion id when the item has one
  (``datasource_item.completion_id``), else ``datasource_item_id``;
- ``percent_of_baseline`` = 100 * pass rate of the run / pass rate of the baseline, over the items
  both runs have (all of each run's items when they share none);
- confidence intervals are percentile bootstraps (default 1000 resamples, seeded, 95%); the
  ratio's resamples draw the same matched items for both runs (paired);
- flips are the matched items whose overall verdict changed against the baseline (``pass_to_fail``,
  ``fail_to_pass``, each naming the criteria that changed), and per criterion (``by_criterion``);
- ``agreement`` is the share of matched items on which both runs reach the same overall verdict,
  ``output_agreement`` the share whose sampled output texts are identical. For two runs of the
  same teacher on the same inputs (``repeat``) this is the teacher's self-consistency: the
  ceiling a student can be expected to reach against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OVERALL = "overall"


@dataclass(frozen=True)
class RunItems:
    run: Mapping[str, Any]  # the public run object
    items: Sequence[Mapping[str, Any]]  # its output items


def item_key(item: Mapping[str, Any]) -> str:
    source = item.get("datasource_item") or {}
    completion_id = source.get("completion_id") if isinstance(source, Mapping) else None
    if isinstance(completion_id, str) and completion_id:
        return completion_id
    return f"#{item.get('datasource_item_id')}"


def _passed(item: Mapping[str, Any], criterion: str) -> bool:
    if criterion == OVERALL:
        return item.get("status") == "pass"
    for result in item.get("results") or []:
        if result.get("name") == criterion:
            return bool(result.get("passed")) and not result.get("error")
    return False


def _score(item: Mapping[str, Any], criterion: str) -> float | None:
    for result in item.get("results") or []:
        if result.get("name") == criterion and not result.get("error"):
            score = result.get("score")
            return float(score) if isinstance(score, int | float) else None
    return None


def _output_text(item: Mapping[str, Any]) -> str | None:
    output = (item.get("sample") or {}).get("output") or []
    if not output:
        return None
    content = output[-1].get("content")
    return content if isinstance(content, str) else None


def _bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(values)
    out = np.empty(resamples)
    chunk = max(1, min(resamples, 2_000_000 // max(n, 1)))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        out[start : start + size] = values[idx].mean(axis=1)
    return out


def _paired_ratios(a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(a)
    out = np.empty(resamples)
    chunk = max(1, min(resamples, 2_000_000 // max(n, 1)))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        num, den = a[idx].mean(axis=1), b[idx].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start : start + size] = np.where(den > 0, num / den, np.nan)
    return out


def _interval(samples: np.ndarray, confidence: float, scale: float = 1.0) -> list[float] | None:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return [round(float(low) * scale, 6), round(float(high) * scale, 6)]


def pass_rate_interval(
    values: Sequence[bool], *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> list[float] | None:
    """Bootstrap percentile interval of the pass rate of ``values``."""
    if not values:
        return None
    arr = np.asarray(values, dtype=float)
    return _interval(_bootstrap_means(arr, resamples, seed), confidence)


def ratio_interval(
    run: Sequence[bool],
    baseline: Sequence[bool],
    *,
    paired: bool,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[float] | None:
    """Bootstrap percentile interval of ``mean(run) / mean(baseline)`` in percent."""
    if not run or not baseline:
        return None
    a, b = np.asarray(run, dtype=float), np.asarray(baseline, dtype=float)
    if paired:
        ratios = _paired_ratios(a, b, resamples, seed)
    else:
        num = _bootstrap_means(a, resamples, seed)
        den = _bootstrap_means(b, resamples, seed + 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(den > 0, num / den, np.nan)
    return _interval(ratios, confidence, scale=100.0)


def _rate(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def criteria_of(runs: Sequence[RunItems]) -> list[str]:
    """Criterion names in the order the runs report them (first run first)."""
    names: list[str] = []
    for entry in runs:
        for res in entry.run.get("per_testing_criteria_results") or []:
            name = str(res.get("testing_criteria"))
            if name not in names:
                names.append(name)
        for item in entry.items:
            for result in item.get("results") or []:
                if result.get("name") not in names:
                    names.append(str(result.get("name")))
    return names


class _Indexed:
    def __init__(self, entry: RunItems) -> None:
        self.entry = entry
        self.id = str(entry.run.get("id"))
        self.by_key = {item_key(item): item for item in entry.items}


def _side(
    run: _Indexed, base: _Indexed, criterion: str, resamples: int, seed: int, confidence: float
) -> dict[str, Any]:
    values = [_passed(item, criterion) for item in run.entry.items]
    scores = [s for item in run.entry.items if (s := _score(item, criterion)) is not None]
    matched = [k for k in run.by_key if k in base.by_key]
    if matched:
        mine = [_passed(run.by_key[k], criterion) for k in matched]
        theirs = [_passed(base.by_key[k], criterion) for k in matched]
    else:
        mine, theirs = values, [_passed(item, criterion) for item in base.entry.items]
    mine_rate, base_rate = _rate(mine), _rate(theirs)
    percent = None
    if mine_rate is not None and base_rate:
        percent = round(100.0 * mine_rate / base_rate, 6)
    is_base = run is base
    ratio_ci = None
    if not is_base:
        ratio_ci = ratio_interval(
            mine,
            theirs,
            paired=bool(matched),
            resamples=resamples,
            seed=seed,
            confidence=confidence,
        )
    return {
        "run_id": run.id,
        "items": len(values),
        "passed": sum(values),
        "pass_rate": _rate(values),
        "pass_rate_ci": pass_rate_interval(
            values, resamples=resamples, seed=seed, confidence=confidence
        ),
        "mean_score": sum(scores) / len(scores) if scores else None,
        "percent_of_baseline": 100.0 if is_base and base_rate else percent,
        "percent_of_baseline_ci": None if is_base else ratio_ci,
    }


def _flip_entry(key: str, item: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "key": key,
        "datasource_item_id": item.get("datasource_item_id"),
        "output_item_id": item.get("id"),
        "baseline_output_item_id": before.get("id"),
        "baseline_status": before.get("status"),
        "status": item.get("status"),
    }


def _flips(run: _Indexed, base: _Indexed, criteria: Sequence[str]) -> dict[str, Any]:
    """Items whose verdict changed against the baseline: overall (with the criteria that
    changed) and per criterion."""
    to_fail: list[dict[str, Any]] = []
    to_pass: list[dict[str, Any]] = []
    by_criterion: dict[str, dict[str, list[dict[str, Any]]]] = {
        c: {"pass_to_fail": [], "fail_to_pass": []} for c in criteria
    }
    for key, item in run.by_key.items():
        before = base.by_key.get(key)
        if before is None:
            continue
        entry = _flip_entry(key, item, before)
        changed = []
        for c in criteria:
            was_c, now_c = _passed(before, c), _passed(item, c)
            if was_c != now_c:
                changed.append(c)
                by_criterion[c]["pass_to_fail" if was_c else "fail_to_pass"].append(entry)
        was, now = _passed(before, OVERALL), _passed(item, OVERALL)
        if was and not now:
            to_fail.append({**entry, "criteria": changed})
        elif now and not was:
            to_pass.append({**entry, "criteria": changed})
    return {
        "run_id": run.id,
        "pass_to_fail": to_fail,
        "fail_to_pass": to_pass,
        "by_criterion": by_criterion,
    }


def agreement(a: RunItems, b: RunItems) -> dict[str, Any]:
    """How often two runs agree on the items they share (verdict and output text)."""
    left, right = _Indexed(a), _Indexed(b)
    keys = [k for k in left.by_key if k in right.by_key]
    same = sum(_passed(left.by_key[k], OVERALL) == _passed(right.by_key[k], OVERALL) for k in keys)
    texts = [(_output_text(left.by_key[k]), _output_text(right.by_key[k])) for k in keys]
    same_text = sum(1 for x, y in texts if x is not None and x == y)
    per = {
        c: sum(_passed(left.by_key[k], c) == _passed(right.by_key[k], c) for k in keys) / len(keys)
        for c in criteria_of([a, b])
    } if keys else {}  # fmt: skip
    return {
        "matched_items": len(keys),
        "agreement": same / len(keys) if keys else None,
        "output_agreement": same_text / len(keys) if keys else None,
        "per_criterion_agreement": per,
    }


def compare(
    runs: Sequence[RunItems],
    baseline_id: str,
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    indexed = [_Indexed(r) for r in runs]
    base = next(i for i in indexed if i.id == baseline_id)
    criteria = criteria_of(runs)
    table = []
    for criterion in [*criteria, OVERALL]:
        table.append(
            {
                "name": criterion,
                "runs": [_side(r, base, criterion, resamples, seed, confidence) for r in indexed],
            }
        )
    by_id = {i.id: i for i in indexed}
    consistency = []
    for r in indexed:
        original = (r.entry.run.get("metadata") or {}).get("distillery_repeat_of")
        if isinstance(original, str) and original in by_id:
            consistency.append(
                {"run_id": original, "repeat_run_id": r.id}
                | agreement(by_id[original].entry, r.entry)
            )
    return {
        "object": "distillery.eval_comparison",
        "baseline_run_id": base.id,
        "resamples": resamples,
        "seed": seed,
        "confidence": confidence,
        "runs": [
            {
                "id": r.id,
                "eval_id": r.entry.run.get("eval_id"),
                "name": r.entry.run.get("name"),
                "model": r.entry.run.get("model"),
                "status": r.entry.run.get("status"),
                "result_counts": r.entry.run.get("result_counts"),
                "baseline": r is base,
                **agreement(r.entry, base.entry),
            }
            for r in indexed
        ],
        "criteria": table[:-1],
        "overall": table[-1],
        "flips": [_flips(r, base, criteria) for r in indexed if r is not base],
        "self_consistency": consistency,
    }
