"""Prices, spend per prompt, candidates and payback (store on SQLite and PostgreSQL)."""

from __future__ import annotations

import httpx
import pytest

from distillery.costs.prices import PriceTable
from distillery.costs.report import costs_report
from distillery.settings import PriceConfig
from distillery.store import Store
from distillery.store.completions import CompletionsRepo
from distillery.store.records import NewCompletion
from distillery.store.tables import FineTunedModelRow

DAY = 86_400


def _completion(i: int, model: str, prompt: str, t: int, cost: float | None) -> NewCompletion:
    return NewCompletion(
        id=f"chatcmpl-c{i}",
        created_at=t,
        model=model,
        provider="p",
        status="completed",
        stream=False,
        request={"model": model, "messages": []},
        response=None,
        error=None,
        metadata={"prompt": prompt},
        prompt_tokens=1000,
        completion_tokens=100,
        cost_usd=cost,
    )


def test_prices_defaults_overrides_and_dated_names() -> None:
    prices = PriceTable({"my-model": PriceConfig(input=1.0, output=2.0)})
    assert prices.cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)
    assert prices.cost("gpt-4o-2024-08-06", 1000, 0) == pytest.approx(0.0025)
    assert prices.cost("gpt-4o", 1000, 0, cached=1000) == pytest.approx(0.00125)
    assert prices.cost("ft:gpt-4o-mini:acme:x:abc", 1_000_000, 0) == pytest.approx(0.15)
    assert prices.cost("my-model", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert prices.cost("unknown-model", 10, 10) is None


def test_report_ranks_prompts_and_computes_payback(db_url: str) -> None:
    store = Store.open(db_url)
    repo = CompletionsRepo(store)
    prices = PriceTable()
    t0 = 1_750_000_000
    rows = []
    # router: 400 teacher requests over 2 days; summarize: 50 requests over 2 days
    for i in range(400):
        rows.append(
            _completion(
                i, "gpt-4o", "router", t0 + i * (2 * DAY // 400), prices.cost("gpt-4o", 1000, 100)
            )
        )
    for i in range(50):
        rows.append(
            _completion(
                1000 + i,
                "gpt-4o",
                "summarize",
                t0 + i * (2 * DAY // 50),
                prices.cost("gpt-4o", 1000, 100),
            )
        )
    for i in range(100):
        rows.append(
            _completion(
                2000 + i,
                "ft:smollm2-135m-instruct:router:abc",
                "router",
                t0 + 2 * DAY - 100 + i,
                0.0,
            )
        )
    repo.insert_many(rows)
    with store.write() as s:
        s.add(
            FineTunedModelRow(
                id="ft:smollm2-135m-instruct:router:abc",
                created_at=t0,
                base_model="smollm2-135m-instruct",
                provider="local",
                adapter_path="/x",
                job_id=None,
                meta={"training_cost_usd": 1.5},
            )
        )
    report = costs_report(store, prices, min_examples=100)
    by_prompt = report["by_prompt"]
    assert (by_prompt[0]["prompt"], by_prompt[0]["model"]) == ("router", "gpt-4o")
    assert by_prompt[0]["cost_per_1k"] == pytest.approx(1000 * prices.cost("gpt-4o", 1000, 100))
    cands = report["candidates"]
    assert cands[0]["prompt"] == "router" and cands[0]["enough_examples"]
    assert next(c for c in cands if c["prompt"] == "summarize")["enough_examples"] is False
    (saving,) = report["savings"]
    assert saving["teacher_model"] == "gpt-4o"
    assert saving["student_cost_per_1k"] == 0.0
    assert saving["training_cost"] == 1.5
    expected_daily = saving["teacher_cost_per_1k"] * saving["requests_per_day"] / 1000
    assert saving["daily_saving"] == pytest.approx(expected_daily)
    assert saving["payback_days"] == pytest.approx(1.5 / expected_daily)
    store.close()


def test_costs_endpoint(gateway, client) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hello there"}],
            store=True,
            metadata={"prompt": "greet"},
        )
    r = httpx.get(gateway.url + "/v1/distillery/costs", params={"min_examples": 2})
    assert r.status_code == 200
    data = r.json()
    row = next(p for p in data["by_prompt"] if p["prompt"] == "greet")
    assert row["requests"] == 3 and row["cost_usd"] > 0
    assert data["candidates"][0]["prompt"] == "greet"
    stored = client.chat.completions.list(metadata={"prompt": "greet"}).data
    assert all(c.usage is not None for c in stored)
