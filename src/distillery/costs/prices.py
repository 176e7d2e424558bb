"""Prices as data: defaults from ``prices.toml`` plus the user's overrides from the config."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from distillery.costs.usage import Usage
from distillery.settings import PriceConfig


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cached_input: float | None = None
    training: float | None = None
    hourly: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached_rate = self.cached_input if self.cached_input is not None else self.input
        uncached = max(prompt_tokens - cached_tokens, 0)
        return (
            uncached * self.input + cached_tokens * cached_rate + completion_tokens * self.output
        ) / 1_000_000


def _defaults() -> dict[str, Price]:
    text = resources.files("distillery.costs").joinpath("prices.toml").read_text("utf-8")
    return {name: Price(**values) for name, values in tomllib.loads(text).items()}


class PriceTable:
    def __init__(self, overrides: Mapping[str, PriceConfig] | None = None) -> None:
        self.prices = _defaults()
        for name, cfg in (overrides or {}).items():
            self.prices[name] = Price(**cfg.model_dump())

    def get(self, model: str) -> Price | None:
        """Exact name, then a fine-tuned model's base, then the longest known prefix
        (``gpt-4o-2024-08-06`` is priced as ``gpt-4o``)."""
        if model in self.prices:
            return self.prices[model]
        if model.startswith("ft:"):
            base = model.split(":")[1] if model.count(":") >= 1 else model
            return self.get(base)
        best = max((m for m in self.prices if model.startswith(m + "-")), key=len, default=None)
        return self.prices[best] if best else None

    def cost(
        self, model: str, prompt_tokens: int | None, completion_tokens: int | None, cached: int = 0
    ) -> float | None:
        price = self.get(model)
        if price is None or prompt_tokens is None:
            return None
        return price.cost(prompt_tokens, completion_tokens or 0, cached)

    def cost_of(self, model: str, answer: Mapping[str, object] | None) -> float | None:
        """What ``model`` charges for ``answer`` by the usage it reports (``None``: unknown)."""
        return self.price(model, Usage.of(answer))

    def price(self, model: str, usage: Usage) -> float | None:
        return self.cost(model, usage.prompt, usage.completion, usage.cached)
