"""Rewards for the reinforcement trainer: the evals' own graders, run on the samples.

The job's grader (OpenAI's grader object: ``string_check``, ``text_similarity``, ``score_model``,
``python``, ``multi``, or any of distillery's grader types) is built once with
``evals.graders.registry.build_grader``, the code the evals run, and each sample is graded with
its training row as ``item`` and the answer as ``sample`` (``output_text``, and ``output_json``
when the answer is JSON). A grader that fails on a sample (a judge that errors, a ``python``
grader that raises) is tried again once; a second failure counts as a reward of 0 and is
reported in the step's event, so one bad grade never ends the job.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distillery.evals.graders.base import (
    Grade,
    GradeInput,
    Grader,
    GraderError,
    JudgeClient,
    sample_from_output,
)
from distillery.evals.graders.registry import build_grader

JUDGED_TYPES = frozenset(
    {"label_model", "score_model", "sentiment", "factuality", "criteria_match", "custom_prompt"}
)
PASS_SCORE = 1.0  # a grader without a pass threshold passes a sample with the full score
GRADER_PARAM = "method.reinforcement.grader"


JUDGE_PROVIDERS_ENV = "DISTILLERY_JUDGE_PROVIDERS"  # the providers' tables, as JSON
JUDGE_CONCURRENCY = 16  # judge calls in flight at once (the provider batches them)


def _judged(config: Any) -> list[Mapping[str, Any]]:
    """The model-judged graders in ``config``, a ``multi`` grader's sub-graders included."""
    if not isinstance(config, Mapping):
        return []
    found = [config] if config.get("type") in JUDGED_TYPES else []
    subs = config.get("graders")
    if isinstance(subs, Mapping):
        children = [subs] if "type" in subs else list(subs.values())
        for child in children:
            found.extend(_judged(child))
    return found


def judge_models(config: Any) -> list[str]:
    """The judge models the model graders in ``config`` call."""
    return [str(g["model"]) for g in _judged(config) if g.get("model")]


class EnvironmentJudge:
    """The judge of a training process: distillery's providers, built from the tables the
    backend passed in ``JUDGE_PROVIDERS_ENV`` (``LocalBackend._judge_env``)."""

    def __init__(self, tables: str, home: str | None = None) -> None:
        from pathlib import Path

        from distillery.evals.graders.judging import ProviderJudge
        from distillery.providers.base import ProviderContext
        from distillery.providers.registry import ProviderRegistry
        from distillery.settings import Config

        config = Config.model_validate({"providers": json.loads(tables)})
        context = ProviderContext(home=Path(home or "."))
        self.providers = ProviderRegistry.from_config(config.providers, context=context)
        self._judge = ProviderJudge(self.providers)
        self._slots = asyncio.Semaphore(JUDGE_CONCURRENCY)

    async def complete(self, **kwargs: Any) -> dict[str, Any]:
        async with self._slots:
            return await self._judge.complete(**kwargs)

    @classmethod
    def from_environment(cls) -> EnvironmentJudge | None:
        import os

        tables = os.environ.get(JUDGE_PROVIDERS_ENV)
        return cls(tables, os.environ.get("DISTILLERY_HOME")) if tables else None

    async def aclose(self) -> None:
        await self.providers.aclose()


def judged_graders(config: Any) -> list[str]:
    """The types of the model-judged graders in ``config`` (a ``multi`` grader's included)."""
    return [str(g["type"]) for g in _judged(config)]


@dataclass(frozen=True)
class Reward:
    """One sample's reward, whether each grader passed it, and the error if grading failed."""

    value: float
    passed: dict[str, bool] = field(default_factory=dict)
    error: str | None = None


def _passed(grade: Grade) -> bool:
    return bool(grade.passed) if grade.passed is not None else grade.score >= PASS_SCORE


class Rewards:
    """The job's grader, applied to batches of (row, answer) pairs."""

    def __init__(
        self,
        grader: Mapping[str, Any],
        *,
        judge: JudgeClient | None = None,
    ) -> None:
        self.config = dict(grader)
        self.judge = judge
        self.grader: Grader = build_grader(self.config, judge=judge, param=GRADER_PARAM)
        self.name = str(self.config.get("name") or self.config.get("type") or "grader")
        self._loop = asyncio.new_event_loop()

    def score(self, items: Sequence[Mapping[str, Any]], texts: Sequence[str]) -> list[Reward]:
        """The reward of each ``texts[i]`` as an answer to the row ``items[i]``."""
        inputs = [
            GradeInput(item=item, sample=sample_from_output(text))
            for item, text in zip(items, texts, strict=True)
        ]
        return self._loop.run_until_complete(self._score(inputs))

    async def _score(self, inputs: list[GradeInput]) -> list[Reward]:
        grade_many = getattr(self.grader, "grade_many", None)
        if callable(grade_many):
            try:
                grades = await grade_many(inputs)
                return [
                    self._reward(g) if isinstance(g, Grade) else self._failed(g) for g in grades
                ]
            except GraderError:
                pass  # graded one by one below, each with its retry
        return list(await asyncio.gather(*(self._one(inp) for inp in inputs)))

    async def _one(self, inp: GradeInput) -> Reward:
        error: BaseException | None = None
        for _ in range(2):
            try:
                return self._reward(await self.grader.grade(inp))
            except GraderError as exc:
                error = exc
        return self._failed(error)

    def _reward(self, grade: Grade) -> Reward:
        passed = {self.name: _passed(grade)}
        subs = grade.details.get("sub_rewards") if grade.details else None
        if isinstance(subs, Mapping):
            for name, value in subs.items():
                if isinstance(value, int | float):
                    passed[str(name)] = float(value) >= PASS_SCORE
        return Reward(float(grade.score), passed)

    @staticmethod
    def _failed(error: object) -> Reward:
        message = getattr(error, "message", None) or str(error)
        return Reward(0.0, {}, error=str(message)[:300])

    def close(self) -> None:
        aclose = getattr(self.judge, "aclose", None)
        if callable(aclose):
            self._loop.run_until_complete(aclose())
        self._loop.close()
