"""Spend, savings and payback: what a prompt costs on the teacher, what the student saves.

All figures come from stored traffic (requests, tokens, cost per completion) and the price table.
"""

from __future__ import annotations

from dataclasses import dataclass

from distillery.costs.prices import PriceTable
from distillery.store.completions import SpendRow

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class PromptSpend:
    prompt: str | None
    model: str
    requests: int
    cost_usd: float
    cost_per_1k: float
    tokens_per_request: float
    requests_per_day: float
    daily_spend: float


@dataclass(frozen=True)
class Candidate:
    """A prompt worth distilling first: high spend, enough examples."""

    prompt: str
    model: str
    requests: int
    daily_spend: float
    enough_examples: bool
    score: float


@dataclass(frozen=True)
class Savings:
    teacher_model: str
    student_model: str
    teacher_cost_per_1k: float
    student_cost_per_1k: float
    saving_per_1k: float
    requests_per_day: float
    daily_saving: float
    training_cost: float
    payback_days: float | None  # None when there is no saving

    @property
    def cost_ratio(self) -> float | None:
        if self.teacher_cost_per_1k <= 0:
            return None
        return self.student_cost_per_1k / self.teacher_cost_per_1k


def per_prompt(rows: list[SpendRow], *, now: int | None = None) -> list[PromptSpend]:
    """Spend per (prompt, model), ranked by daily spend; traffic rate over the observed window."""
    out = []
    for r in rows:
        window = max(r.last_at - r.first_at, 0)
        days = max(window / SECONDS_PER_DAY, 1.0)  # less than a day of traffic counts as one day
        requests_per_day = r.requests / days
        out.append(
            PromptSpend(
                prompt=r.group,
                model=r.model,
                requests=r.requests,
                cost_usd=r.cost_usd,
                cost_per_1k=1000 * r.cost_usd / r.requests if r.requests else 0.0,
                tokens_per_request=(r.prompt_tokens + r.completion_tokens) / r.requests
                if r.requests
                else 0.0,
                requests_per_day=requests_per_day,
                daily_spend=r.cost_usd / days,
            )
        )
    return sorted(out, key=lambda s: s.daily_spend, reverse=True)


def candidates(spends: list[PromptSpend], *, min_examples: int = 100) -> list[Candidate]:
    """ "Distil first": highest daily spend × traffic, among prompts with enough stored examples."""
    found = [
        Candidate(
            prompt=s.prompt,
            model=s.model,
            requests=s.requests,
            daily_spend=s.daily_spend,
            enough_examples=s.requests >= min_examples,
            score=s.daily_spend * (1.0 if s.requests >= min_examples else 0.1),
        )
        for s in spends
        if s.prompt is not None and s.cost_usd > 0
    ]
    return sorted(found, key=lambda c: c.score, reverse=True)


def student_cost_per_1k(
    prices: PriceTable,
    student: str,
    *,
    prompt_tokens: float,
    completion_tokens: float,
    seconds_per_request: float | None = None,
) -> float:
    """Per-token price when the student has one; else the machine's hourly cost × time used."""
    price = prices.get(student)
    if price is None:
        return 0.0
    per_token = price.cost(int(prompt_tokens), int(completion_tokens))
    if per_token > 0 or price.hourly is None or seconds_per_request is None:
        return 1000 * per_token
    return 1000 * price.hourly * seconds_per_request / 3600


def payback(
    *,
    teacher_model: str,
    student_model: str,
    teacher_cost_per_1k: float,
    student_cost_per_1k: float,
    requests_per_day: float,
    training_cost: float,
) -> Savings:
    saving = teacher_cost_per_1k - student_cost_per_1k
    daily = saving * requests_per_day / 1000
    return Savings(
        teacher_model=teacher_model,
        student_model=student_model,
        teacher_cost_per_1k=teacher_cost_per_1k,
        student_cost_per_1k=student_cost_per_1k,
        saving_per_1k=saving,
        requests_per_day=requests_per_day,
        daily_saving=daily,
        training_cost=training_cost,
        payback_days=training_cost / daily if daily > 0 else None,
    )


def training_cost(
    prices: PriceTable, base_model: str, *, trained_tokens: int, seconds: float | None = None
) -> float:
    """Provider price per 1M trained tokens, else the machine's hourly cost × training time."""
    price = prices.get(base_model)
    if price is None:
        return 0.0
    if price.training is not None:
        return price.training * trained_tokens / 1_000_000
    if price.hourly is not None and seconds is not None:
        return price.hourly * seconds / 3600
    return 0.0
