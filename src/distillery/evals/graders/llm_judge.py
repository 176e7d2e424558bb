"""Model judges: OpenAI's ``label_model`` and ``score_model``, and the dashboard presets
``factuality``, ``criteria_match`` and ``custom_prompt`` (distillery types).

- ``label_model``: the configured messages (templated) plus ``prompts/label_model.md`` asking for
  ``{"reasoning", "label"}``, sent with a strict ``json_schema`` response format whose ``label`` is
  an enum of the labels. Passed, score 1.0, when the label is one of ``passing_labels``.
- ``score_model``: the same with ``prompts/score_model.md`` and ``{"reasoning", "score"}``; the
  score must lie in ``range`` (default [0, 1]) and is returned as is, like OpenAI's; passed when
  it reaches ``pass_threshold`` (``None`` without a threshold).
- ``factuality``: openai/evals ``fact.yaml`` (``prompts/factuality.md``) with its ``cot_classify``
  instruction; choices A..E, score ``choice_scores[choice]`` (A, B, C, E 1.0 and D 0.0 unless
  overridden), passed for ``passing_choices`` (A, B, C, E by default).
- ``criteria_match``: openai/evals ``closedqa.yaml`` (``prompts/criteria_match.md``), Y or N.
- ``custom_prompt``: a user prompt, ``prompt`` text or ``prompt_file`` (a file name in
  ``$DISTILLERY_HOME/prompts/``, ``.md`` optional; never a path), templated with ``{{item.x}}`` and
  ``{{sample.output_text}}`` and followed by the ``cot_classify`` instruction over ``labels``.

Every grade keeps the judge's raw answer in ``details["raw"]`` (and ``usage``); a failed call or
an unparsable answer raises ``GraderError``.
"""

from __future__ import annotations

import json
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from distillery.evals.graders.base import (
    MODEL_PARSE_ERROR,
    Grade,
    GradeInput,
    GraderConfig,
    GraderError,
    JudgeClient,
)
from distillery.evals.graders.judging import (
    Classification,
    GraderSamplingParams,
    ask_parsed,
    classify,
    json_result_format,
    load_prompt,
    parse_label,
    parse_score,
    reasoning_of,
    user_prompt_path,
)
from distillery.evals.graders.messages import InputMessage, render_messages, with_instruction
from distillery.evals.graders.templating import fill_slots, render

FactChoice = Literal["A", "B", "C", "D", "E"]
FACT_CHOICES: tuple[FactChoice, ...] = ("A", "B", "C", "D", "E")
FACT_PASSING: tuple[FactChoice, ...] = ("A", "B", "C", "E")


class LabeledConfig(GraderConfig):
    labels: list[str] = Field(min_length=1)
    passing_labels: list[str]

    @model_validator(mode="after")
    def _labels_are_consistent(self) -> LabeledConfig:
        if len(set(self.labels)) != len(self.labels) or not all(s.strip() for s in self.labels):
            raise ValueError("labels must be distinct, non-empty strings")
        unknown = [p for p in self.passing_labels if p not in self.labels]
        if unknown:
            raise ValueError(f"passing_labels {unknown} are not among labels {self.labels}")
        return self


class LabelModelConfig(LabeledConfig):
    type: Literal["label_model"] = "label_model"
    name: str
    model: str
    input: list[InputMessage] = Field(min_length=1)
    sampling_params: GraderSamplingParams | None = None  # distillery extension


class ScoreModelConfig(GraderConfig):
    type: Literal["score_model"] = "score_model"
    name: str
    model: str
    input: list[InputMessage] = Field(min_length=1)
    range: tuple[float, float] = (0.0, 1.0)
    sampling_params: GraderSamplingParams | None = None
    pass_threshold: float | None = None

    @model_validator(mode="after")
    def _range_is_ordered(self) -> ScoreModelConfig:
        if not self.range[0] < self.range[1]:
            raise ValueError(f"range must be [min, max] with min < max, got {list(self.range)}")
        return self


class FactualityConfig(GraderConfig):
    type: Literal["factuality"] = "factuality"
    name: str = "factuality"
    model: str
    input: str = "{{sample.output_text}}"
    reference: str
    question: str = ""
    choice_scores: dict[str, float] = Field(default_factory=dict)
    passing_choices: list[FactChoice] = Field(default_factory=lambda: list(FACT_PASSING))
    sampling_params: GraderSamplingParams | None = None

    @model_validator(mode="after")
    def _choices_known(self) -> FactualityConfig:
        unknown = sorted(set(self.choice_scores) - set(FACT_CHOICES))
        if unknown:
            raise ValueError(f"choice_scores keys must be among A..E, got {unknown}")
        return self


class CriteriaMatchConfig(GraderConfig):
    type: Literal["criteria_match"] = "criteria_match"
    name: str = "criteria_match"
    model: str
    input: str = "{{sample.output_text}}"
    criteria: str
    task: str = ""
    sampling_params: GraderSamplingParams | None = None


class CustomPromptConfig(LabeledConfig):
    type: Literal["custom_prompt"] = "custom_prompt"
    name: str = "custom_prompt"
    model: str
    prompt: str | None = Field(default=None, min_length=1)
    prompt_file: str | None = None
    sampling_params: GraderSamplingParams | None = None

    @model_validator(mode="after")
    def _one_prompt(self) -> CustomPromptConfig:
        if (self.prompt is None) == (self.prompt_file is None):
            raise ValueError("give exactly one of prompt (text) or prompt_file (a file name)")
        if self.prompt_file is not None:
            user_prompt_path(self.prompt_file)
        return self

    def template(self) -> str:
        if self.prompt is not None:
            return self.prompt
        return user_prompt_path(self.prompt_file or "").read_text(encoding="utf-8").strip()


class LabelModelGrader:
    type: ClassVar[str] = "label_model"

    def __init__(self, config: LabelModelConfig, *, judge: JudgeClient | None) -> None:
        self.config = config
        self.name = config.name
        self._judge = judge

    async def grade(self, inp: GradeInput) -> Grade:
        cfg = self.config
        listed = ", ".join(json.dumps(label, ensure_ascii=False) for label in cfg.labels)
        instruction = fill_slots(load_prompt("label_model"), {"labels": listed})
        messages = with_instruction(render_messages(cfg.input, inp), instruction)
        response_format = json_result_format(
            "label_result", {"type": "string", "enum": list(cfg.labels)}, "label"
        )
        answer, (label, obj) = await ask_parsed(
            self._judge,
            lambda text: parse_label(text, cfg.labels),
            model=cfg.model,
            messages=messages,
            sampling=cfg.sampling_params,
            response_format=response_format,
        )
        passed = label in cfg.passing_labels
        details = {"raw": answer.content, "label": label, "model": cfg.model}
        return Grade(
            score=1.0 if passed else 0.0,
            passed=passed,
            reason=reasoning_of(answer.content, obj),
            details={**details, "usage": dict(answer.usage)},
        )


class ScoreModelGrader:
    type: ClassVar[str] = "score_model"

    def __init__(self, config: ScoreModelConfig, *, judge: JudgeClient | None) -> None:
        self.config = config
        self.name = config.name
        self._judge = judge

    async def grade(self, inp: GradeInput) -> Grade:
        cfg = self.config
        low, high = cfg.range
        instruction = fill_slots(
            load_prompt("score_model"), {"min": f"{low:g}", "max": f"{high:g}"}
        )
        messages = with_instruction(render_messages(cfg.input, inp), instruction)
        value_schema = {"type": "number", "minimum": low, "maximum": high}
        answer, (score, obj) = await ask_parsed(
            self._judge,
            parse_score,
            model=cfg.model,
            messages=messages,
            sampling=cfg.sampling_params,
            response_format=json_result_format("score_result", value_schema, "score"),
        )
        if not low <= score <= high:
            raise GraderError(
                f"judge score {score:g} is outside {[low, high]}",
                raw=answer.content,
                kind=MODEL_PARSE_ERROR,
            )
        passed = None if cfg.pass_threshold is None else score >= cfg.pass_threshold
        return Grade(
            score=score,
            passed=passed,
            reason=reasoning_of(answer.content, obj),
            details={"raw": answer.content, "model": cfg.model, "usage": dict(answer.usage)},
        )


def _choice_grade(result: Classification, model: str, score: float, passed: bool) -> Grade:
    return Grade(
        score=score,
        passed=passed,
        reason=reasoning_of(result.answer.content),
        details=result.details(model),
    )


class FactualityGrader:
    type: ClassVar[str] = "factuality"
    default_scores: ClassVar[dict[str, float]] = {"A": 1.0, "B": 1.0, "C": 1.0, "D": 0.0, "E": 1.0}

    def __init__(self, config: FactualityConfig, *, judge: JudgeClient | None) -> None:
        self.config = config
        self.name = config.name
        self._judge = judge
        self._scores = {**self.default_scores, **config.choice_scores}

    async def grade(self, inp: GradeInput) -> Grade:
        cfg = self.config
        slots = {
            "question": render(cfg.question, inp) or "(not given)",
            "expert": render(cfg.reference, inp),
            "submission": render(cfg.input, inp),
        }
        prompt = fill_slots(load_prompt("factuality"), slots)
        result = await classify(
            self._judge,
            model=cfg.model,
            prompt=prompt,
            choices=FACT_CHOICES,
            sampling=cfg.sampling_params,
        )
        passed = result.choice in cfg.passing_choices
        return _choice_grade(result, cfg.model, self._scores[result.choice], passed)


class CriteriaMatchGrader:
    type: ClassVar[str] = "criteria_match"

    def __init__(self, config: CriteriaMatchConfig, *, judge: JudgeClient | None) -> None:
        self.config = config
        self.name = config.name
        self._judge = judge

    async def grade(self, inp: GradeInput) -> Grade:
        cfg = self.config
        slots = {
            "task": render(cfg.task, inp) or "(not given)",
            "submission": render(cfg.input, inp),
            "criteria": render(cfg.criteria, inp),
        }
        prompt = fill_slots(load_prompt("criteria_match"), slots)
        result = await classify(
            self._judge,
            model=cfg.model,
            prompt=prompt,
            choices=("Y", "N"),
            sampling=cfg.sampling_params,
            append_answer_prompt=False,
        )
        passed = result.choice == "Y"
        return _choice_grade(result, cfg.model, 1.0 if passed else 0.0, passed)


class CustomPromptGrader:
    type: ClassVar[str] = "custom_prompt"

    def __init__(self, config: CustomPromptConfig, *, judge: JudgeClient | None) -> None:
        self.config = config
        self.name = config.name
        self._judge = judge
        self._template = config.template()

    async def grade(self, inp: GradeInput) -> Grade:
        cfg = self.config
        result = await classify(
            self._judge,
            model=cfg.model,
            prompt=render(self._template, inp),
            choices=cfg.labels,
            sampling=cfg.sampling_params,
        )
        passed = result.choice in cfg.passing_labels
        return _choice_grade(result, cfg.model, 1.0 if passed else 0.0, passed)
