"""``multi``: several graders combined by a formula (OpenAI's grader type for RFT).

``{"type": "multi", "name", "graders", "calculate_output"}``:

- ``graders`` is either a mapping from a name to a grader config, as OpenAI's RFT guide writes it
  (``{"name": {...string_check...}, "email": {...}}``; a config without a ``name`` takes its key),
  or one grader config, as the openai SDK types ``MultiGrader.graders`` (its key is then its
  ``name``). Any type the registry builds may be a sub-grader except ``multi`` itself: like
  OpenAI's API, a multi grader does not nest (``MultiGrader.graders`` lists no ``MultiGrader``).
- ``calculate_output`` combines the sub-graders' scores by name (``formula.py``: numbers,
  ``+ - * / ^``, parentheses, ``min max abs floor ceil exp sqrt log``). A formula that does not
  parse or names an unknown grader is refused when the grader is built (400 at
  ``<param>.calculate_output``); a value it cannot compute at grade time (division by zero...)
  is a ``GraderError``.
- ``pass_threshold`` (distillery extension, optional as for ``score_model``): passed when the
  score reaches it; ``None`` without one.

The sub-graders grade concurrently; if one fails the multi grader fails with its error (its
``kind`` kept, the sub-rewards graded so far in ``details``). ``details["sub_rewards"]`` maps
each name to its score and ``details["graders"]`` keeps each sub-grade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from distillery.errors import InvalidRequestError
from distillery.evals.graders.base import (
    OTHER_ERROR,
    Grade,
    GradeInput,
    Grader,
    GraderConfig,
    GraderError,
    grade_many,
    parse_config,
    score_passed,
)
from distillery.evals.graders.formula import (
    MAX_FORMULA_CHARS,
    Formula,
    FormulaError,
    compile_formula,
)

BuildSub = Callable[[Mapping[str, Any], str], Grader]


class MultiConfig(GraderConfig):
    type: Literal["multi"] = "multi"
    name: str
    graders: dict[str, Any]
    calculate_output: str = Field(max_length=MAX_FORMULA_CHARS)
    pass_threshold: float | None = None  # distillery extension


def sub_configs(graders: Mapping[str, Any], param: str) -> dict[str, tuple[Mapping[str, Any], str]]:
    """Each sub-grader's name, config and ``param``, from either shape of ``graders``."""
    if isinstance(graders.get("type"), str):  # one grader config, as the SDK types it
        name = graders.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(
                "The grader in 'graders' needs a name: the formula refers to it by name.",
                param=f"{param}.graders.name",
            )
        return {name: (graders, f"{param}.graders")}
    if not graders:
        raise InvalidRequestError(
            "'graders' must name at least one grader.", param=f"{param}.graders"
        )
    found: dict[str, tuple[Mapping[str, Any], str]] = {}
    for key, config in graders.items():
        where = f"{param}.graders.{key}"
        if not isinstance(config, Mapping):
            raise InvalidRequestError("A grader config must be an object.", param=where)
        found[key] = ({"name": key, **config}, where)
    return found


class MultiGrader:
    type: ClassVar[str] = "multi"

    def __init__(
        self, config: MultiConfig, graders: Mapping[str, Grader], formula: Formula
    ) -> None:
        self.config = config
        self.name = config.name
        self.graders = dict(graders)
        self.formula = formula

    async def grade(self, inp: GradeInput) -> Grade:
        names = list(self.graders)
        outcomes = await asyncio.gather(
            *(self.graders[n].grade(inp) for n in names), return_exceptions=True
        )
        graded: dict[str, Grade | GraderError] = {}
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, Grade | GraderError):
                graded[name] = outcome
            else:  # a bug in a sub-grader is not a grade error: let it out
                raise outcome
        return self._combine(graded)

    async def grade_many(self, inputs: Sequence[GradeInput]) -> list[Grade | GraderError]:
        """Every sub-grader grades the whole batch (a ``python`` one in few sandbox processes),
        the sub-graders concurrently; then the formula combines each input's sub-grades."""
        names = list(self.graders)
        columns = await asyncio.gather(*(grade_many(self.graders[n], inputs) for n in names))
        results: list[Grade | GraderError] = []
        for row in range(len(inputs)):
            try:
                results.append(self._combine({n: columns[c][row] for c, n in enumerate(names)}))
            except GraderError as exc:
                results.append(exc)
        return results

    def _combine(self, graded: Mapping[str, Grade | GraderError]) -> Grade:
        sub_rewards = {n: g.score for n, g in graded.items() if isinstance(g, Grade)}
        for name, outcome in graded.items():
            if isinstance(outcome, GraderError):
                raise GraderError(
                    f"grader {name!r} failed: {outcome.message}",
                    raw=outcome.raw,
                    kind=outcome.kind,
                    details={"sub_rewards": sub_rewards, "failed": name, **outcome.details},
                )
        try:
            score = self.formula.evaluate(sub_rewards)
        except (ArithmeticError, ValueError) as exc:
            raise GraderError(
                f"calculate_output {self.formula.text!r} failed: {exc or type(exc).__name__}",
                kind=OTHER_ERROR,
                details={"sub_rewards": sub_rewards},
            ) from exc
        shown = ", ".join(f"{n}={s:g}" for n, s in sub_rewards.items())
        return Grade(
            score=score,
            passed=score_passed(score, self.config.pass_threshold),
            reason=f"{self.formula.text} = {score:g} ({shown})",
            details={
                "sub_rewards": sub_rewards,
                "calculate_output": self.formula.text,
                "graders": {
                    n: _sub_grade(self.graders[n], g)
                    for n, g in graded.items()
                    if isinstance(g, Grade)
                },
            },
        )


def _sub_grade(grader: Grader, grade: Grade) -> dict[str, object]:
    return {
        "type": grader.type,
        "score": grade.score,
        "passed": grade.passed,
        "reason": grade.reason,
        "details": dict(grade.details),
    }


def build_multi(config: Mapping[str, Any], param: str, build: BuildSub) -> MultiGrader:
    """The ``multi`` grader of ``config``; ``build`` builds each sub-grader (the registry's)."""
    cfg = parse_config(MultiConfig, config, param)
    graders: dict[str, Grader] = {}
    for name, (sub, where) in sub_configs(cfg.graders, param).items():
        if sub.get("type") == "multi":
            raise InvalidRequestError(
                "A multi grader cannot contain another multi grader (as in OpenAI's API): "
                "put all the graders in one and combine them in calculate_output.",
                param=f"{where}.type",
            )
        graders[name] = build(sub, where)
    try:
        formula = compile_formula(cfg.calculate_output, frozenset(graders))
    except FormulaError as exc:
        raise InvalidRequestError(
            f"Invalid calculate_output {cfg.calculate_output!r}: {exc}",
            param=f"{param}.calculate_output",
            code="invalid_value",
        ) from exc
    return MultiGrader(cfg, graders, formula)
