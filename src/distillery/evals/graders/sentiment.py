"""``sentiment`` (distillery): the sentiment of the input, positive / neutral / negative.

Two methods, chosen by the config:

- with ``model``: a judge answers the dashboard's "Sentiment" preset (``prompts/sentiment.md``,
  chain of thought, then A Positive, B Neutral, C Negative or D Unsure);
- without: the offline lexicon scorer of ``sentiment_lexicon`` (English and Japanese, negation
  aware), which needs no model and no network.

With ``passing_labels`` the grade passes (score 1.0) when the label is one of them. Without, it
only measures: ``passed`` is None and the score maps the sentiment to [0, 1] (lexicon:
``(compound + 1) / 2``; judge: positive 1.0, neutral and unsure 0.5, negative 0.0).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from distillery.evals.graders.base import Grade, GradeInput, GraderConfig, JudgeClient
from distillery.evals.graders.judging import (
    GraderSamplingParams,
    classify,
    load_prompt,
    reasoning_of,
)
from distillery.evals.graders.sentiment_lexicon import analyze
from distillery.evals.graders.templating import fill_slots, render

JudgedLabel = Literal["positive", "neutral", "negative", "unsure"]
JUDGE_CHOICES: dict[str, JudgedLabel] = {
    "A": "positive",
    "B": "neutral",
    "C": "negative",
    "D": "unsure",
}
LABEL_SCORES: dict[str, float] = {"positive": 1.0, "neutral": 0.5, "unsure": 0.5, "negative": 0.0}


class SentimentConfig(GraderConfig):
    type: Literal["sentiment"] = "sentiment"
    name: str = "sentiment"
    input: str = "{{sample.output_text}}"
    model: str | None = None
    passing_labels: list[JudgedLabel] | None = None
    sampling_params: GraderSamplingParams | None = None


class SentimentGrader:
    type: ClassVar[str] = "sentiment"

    def __init__(self, config: SentimentConfig, *, judge: JudgeClient | None = None) -> None:
        self.config = config
        self.name = config.name
        self._judge = judge

    def _passed(self, label: str) -> bool | None:
        labels = self.config.passing_labels
        return None if labels is None else label in labels

    async def grade(self, inp: GradeInput) -> Grade:
        text = render(self.config.input, inp)
        if self.config.model is not None:
            return await self._judged(text, self.config.model)
        result = analyze(text)
        passed = self._passed(result.label)
        score = (result.compound + 1.0) / 2.0 if passed is None else float(passed)
        terms = ", ".join(f"{term} {value:+.2f}" for term, value in result.matches)
        return Grade(
            score=score,
            passed=passed,
            reason=f"{result.label} (compound {result.compound:+.2f}; {terms or 'no terms'})",
            details={
                "label": result.label,
                "compound": result.compound,
                "method": "lexicon",
                "language": result.language,
                "matches": [list(m) for m in result.matches],
            },
        )

    async def _judged(self, text: str, model: str) -> Grade:
        prompt = fill_slots(load_prompt("sentiment"), {"text": text})
        result = await classify(
            self._judge,
            model=model,
            prompt=prompt,
            choices=tuple(JUDGE_CHOICES),
            sampling=self.config.sampling_params,
        )
        label = JUDGE_CHOICES[result.choice]
        passed = self._passed(label)
        score = LABEL_SCORES[label] if passed is None else float(passed)
        return Grade(
            score=score,
            passed=passed,
            reason=reasoning_of(result.answer.content),
            details={**result.details(model), "label": label, "method": "judge"},
        )
