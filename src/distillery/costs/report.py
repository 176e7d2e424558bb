"""The costs report: spend per prompt and model, "distil first" candidates, student savings."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from distillery.costs.prices import PriceTable
from distillery.costs.savings import (
    Savings,
    candidates,
    payback,
    per_prompt,
    student_cost_per_1k,
)
from distillery.store.base import Store
from distillery.store.completions import spend
from distillery.store.models import FineTunedModelsRepo
from distillery.store.routes import RoutesRepo


def training_costs(store: Store) -> dict[str, float]:
    """Training cost recorded with each fine-tuned model (``metadata.training_cost_usd``)."""
    return {
        model.id: float(model.metadata.get("training_cost_usd", 0.0))
        for model in FineTunedModelsRepo(store).list()
    }


def costs_report(
    store: Store,
    prices: PriceTable,
    *,
    group_key: str = "prompt",
    since: int | None = None,
    until: int | None = None,
    min_examples: int = 100,
) -> dict[str, Any]:
    rows = spend(store, group_key=group_key, since=since, until=until)
    spends = per_prompt(rows)
    by_model: dict[str, dict[str, float]] = {}
    for r in rows:
        agg = by_model.setdefault(r.model, {"requests": 0, "cost_usd": 0.0, "tokens": 0})
        agg["requests"] += r.requests
        agg["cost_usd"] += r.cost_usd
        agg["tokens"] += r.prompt_tokens + r.completion_tokens
    trained = training_costs(store)
    savings: list[Savings] = []
    prompts = {s.prompt for s in spends if s.prompt is not None}
    for prompt in sorted(prompts):
        group = [s for s in spends if s.prompt == prompt]
        students = [s for s in group if s.model.startswith("ft:")]
        teachers = [s for s in group if not s.model.startswith("ft:") and s.cost_usd > 0]
        if not students or not teachers:
            continue
        teacher = max(teachers, key=lambda s: s.daily_spend)
        for student in students:
            row = next(r for r in rows if r.group == prompt and r.model == student.model)
            student_1k = student_cost_per_1k(
                prices,
                student.model,
                prompt_tokens=row.prompt_tokens / max(row.requests, 1),
                completion_tokens=row.completion_tokens / max(row.requests, 1),
            )
            savings.append(
                payback(
                    teacher_model=teacher.model,
                    student_model=student.model,
                    teacher_cost_per_1k=teacher.cost_per_1k,
                    student_cost_per_1k=student_1k,
                    requests_per_day=teacher.requests_per_day + student.requests_per_day,
                    training_cost=trained.get(student.model, 0.0),
                )
            )
    return {
        "object": "distillery.costs_report",
        "generated_at": int(time.time()),
        "group_key": group_key,
        "since": since,
        "until": until,
        "by_model": [
            {"model": m, **v}
            for m, v in sorted(by_model.items(), key=lambda kv: kv[1]["cost_usd"], reverse=True)
        ],
        "by_prompt": [asdict(s) for s in spends],
        "candidates": [asdict(c) for c in candidates(spends, min_examples=min_examples)],
        "savings": [{**asdict(s), "cost_ratio": s.cost_ratio} for s in savings],
        "routes": route_savings(store),
        # the response cache (global and routes'): hits answered without calling a model
        "cache": RoutesRepo(store).cache_totals(),
    }


def route_savings(store: Store) -> list[dict[str, Any]]:
    """Realised savings per route from its real traffic: the answers its student gave (and
    the cache) priced at the teacher's rate minus what they cost, against the training cost."""
    repo = RoutesRepo(store)
    trained = training_costs(store)
    now = time.time()
    found = []
    for route in repo.all():
        totals = repo.outcome_totals(route.id)
        served: dict[str, int] = {}
        for row in totals:
            served[row["served_by"]] = served.get(row["served_by"], 0) + int(row["requests"])
        saved = sum(float(row["saved_usd"] or 0.0) for row in totals)
        first = min((int(r["first_at"]) for r in totals if r["first_at"]), default=None)
        days = max((now - first) / 86400, 1 / 24) if first is not None else None
        daily = saved / days if days else 0.0
        training = trained.get(str(route.body.get("student")), 0.0)
        found.append(
            {
                "route_id": route.id,
                "name": route.name,
                "mode": route.mode,
                "teacher_model": (route.body.get("match") or {}).get("model"),
                "student_model": route.body.get("student"),
                "requests": sum(served.values()),
                "by_served": served,
                "saved_usd": saved,
                "saved_per_day_usd": daily,
                "training_cost": training,
                "payback_days": training / daily if training and daily > 0 else None,
            }
        )
    return found
