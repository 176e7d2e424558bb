"""``LocalRFTConfig``: the settings of a local reinforcement fine-tuning (GRPO) run.

OpenAI's reinforcement method (``method.reinforcement``) gives the grader, the response format
and the hyperparameters ``n_epochs``, ``batch_size``, ``learning_rate_multiplier``,
``compute_multiplier``, ``eval_interval`` and ``eval_samples`` (each a value or ``"auto"``); the
``distillery`` extension field may set the rest. How ``"auto"`` resolves:

- ``batch_size``: prompts per optimizer step, 8 (at most the number of prompts);
- ``n_epochs``: passes over the prompts trained on (those the focus pass keeps), enough for
  about 24 steps in all (1 to 10 passes);
- ``learning_rate_multiplier``: 0.25 on the LoRA base rate of 2e-4 (5e-5; 0.25 on 2e-5 for full
  fine-tuning), a tenth of the supervised rate: each step's samples come from the model itself,
  and a large step away from it collapses the groups' variety that the method learns from;
- ``compute_multiplier``: 1.0; the group size (samples per prompt) is ``round(4 x multiplier)``,
  at least 2;
- ``eval_interval``: the steps of one pass over the prompts; ``eval_samples``: 1 (the validation
  prompts answered greedily, as the served student answers them).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from distillery.training.local.config import BASE_LEARNING_RATE, Auto, LocalSFTConfig

AUTO_BATCH = 8
AUTO_TOTAL_STEPS = 24
MAX_AUTO_EPOCHS = 10
AUTO_LR_MULTIPLIER = 0.25
BASE_GROUP_SIZE = 4


class LocalRFTConfig(LocalSFTConfig):
    """A GRPO run on the local student: the supervised settings plus the reinforcement ones."""

    grader: dict[str, Any] = Field(description="OpenAI's grader object: the reward.")
    response_format: dict[str, Any] | None = Field(
        None, description="The response format that holds while sampling (constrained decoding)."
    )
    compute_multiplier: float | Auto = Field(
        "auto", description="Scales the samples per prompt (group size = 4 x multiplier)."
    )
    eval_interval: int | Auto = Field(
        "auto", description="Steps between two evaluations on the validation prompts."
    )
    eval_samples: int | Auto = Field(
        "auto", description="Samples per validation prompt (1: greedy, as served)."
    )
    group_size: int | None = Field(
        None, ge=2, le=64, description="Samples per prompt (overrides compute_multiplier)."
    )
    temperature: float = Field(1.0, gt=0.0, le=2.0, description="Sampling temperature.")
    max_completion_tokens: int = Field(256, ge=1, description="Longest sampled answer.")
    kl_coef: float = Field(
        0.04, ge=0.0, description="Weight of the KL penalty to the start model (k3 estimator)."
    )
    start_adapter: str | None = Field(
        None,
        description="The adapter of the fine-tuned model the run starts from (an `ft:` model): "
        "trained on, and kept frozen as the KL reference.",
    )
    focus: Literal["unsolved", "all"] = Field(
        "unsolved",
        description="unsolved: train on the prompts where the start model is wrong or unstable "
        "across samples (plus solved_share of the others); all: every prompt.",
    )
    focus_samples: int = Field(
        2,
        ge=1,
        le=64,
        description="Answers per prompt in the focus pass (1: one greedy answer, which finds "
        "wrong prompts but not unstable ones; 2 find both at half the cost of a group of 4).",
    )
    solved_share: float = Field(
        0.25, ge=0.0, le=1.0, description="Share of the solved prompts kept with focus=unsolved."
    )
    max_prompts: int | None = Field(
        None,
        ge=1,
        description="Train on at most this many prompts (after the focus pass: the unsolved "
        "ones first), to bound the run's time.",
    )
    constant_reward_patience: int = Field(
        3,
        ge=1,
        description="End the run after this many steps in a row whose rewards are constant "
        "within every group (nothing left to learn from).",
    )

    @model_validator(mode="after")
    def _check_rft(self) -> LocalRFTConfig:
        if self.start_adapter and self.method != "lora":
            raise ValueError("a run that starts from an adapter trains that adapter (method lora)")
        for name in ("eval_interval", "eval_samples"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if isinstance(self.compute_multiplier, float) and self.compute_multiplier <= 0:
            raise ValueError("compute_multiplier must be positive")
        return self

    def resolve_rft(self, n_prompts: int) -> LocalRFTConfig:
        """A copy with every ``"auto"`` resolved for ``n_prompts`` training prompts."""
        n = max(1, n_prompts)
        batch = min(n, AUTO_BATCH) if self.batch_size == "auto" else int(self.batch_size)
        steps_per_epoch = math.ceil(n / batch)
        epochs = (
            max(1, min(MAX_AUTO_EPOCHS, math.ceil(AUTO_TOTAL_STEPS / steps_per_epoch)))
            if self.n_epochs == "auto"
            else int(self.n_epochs)
        )
        return self.model_copy(
            update={
                "batch_size": batch,
                "n_epochs": epochs,
                "learning_rate_multiplier": AUTO_LR_MULTIPLIER
                if self.learning_rate_multiplier == "auto"
                else float(self.learning_rate_multiplier),
                "compute_multiplier": 1.0
                if self.compute_multiplier == "auto"
                else float(self.compute_multiplier),
                "eval_interval": steps_per_epoch
                if self.eval_interval == "auto"
                else int(self.eval_interval),
                "eval_samples": 1 if self.eval_samples == "auto" else int(self.eval_samples),
            }
        )

    @property
    def samples_per_prompt(self) -> int:
        if self.group_size is not None:
            return self.group_size
        multiplier = 1.0 if self.compute_multiplier == "auto" else float(self.compute_multiplier)
        return max(2, round(BASE_GROUP_SIZE * multiplier))

    @property
    def peak_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        multiplier = (
            AUTO_LR_MULTIPLIER
            if self.learning_rate_multiplier == "auto"
            else float(self.learning_rate_multiplier)
        )
        return BASE_LEARNING_RATE[self.method] * multiplier

    def hyperparameters(self) -> dict[str, int | float | str]:
        """Resolved values in the shape of OpenAI's reinforcement ``hyperparameters``."""
        return {
            **super().hyperparameters(),
            "compute_multiplier": self.compute_multiplier,
            "eval_interval": self.eval_interval,
            "eval_samples": self.eval_samples,
        }
