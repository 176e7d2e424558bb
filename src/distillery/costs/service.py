"""What the edges ask of costs: the costs report, spend per model, training costs."""

from __future__ import annotations

from typing import Any

from distillery.costs.prices import PriceTable
from distillery.costs.report import costs_report, training_costs
from distillery.store.base import Store
from distillery.store.completions import SpendRow, spend


class CostsService:
    def __init__(self, store: Store, prices: PriceTable) -> None:
        self.store = store
        self.prices = prices

    def report(
        self,
        *,
        group_key: str = "prompt",
        since: int | None = None,
        until: int | None = None,
        min_examples: int = 100,
    ) -> dict[str, Any]:
        """The costs report (``distillery.costs.report.costs_report``)."""
        return costs_report(
            self.store,
            self.prices,
            group_key=group_key,
            since=since,
            until=until,
            min_examples=min_examples,
        )

    def spend_per_model(self) -> list[SpendRow]:
        """Completed requests, tokens and cost per model, all time."""
        return spend(self.store)

    def training_costs(self) -> dict[str, float]:
        """Training cost recorded with each fine-tuned model, by model id."""
        return training_costs(self.store)
