"""The task's own measure on the validation split: what chooses the checkpoint of a local run.

The validation loss says how likely the reference tokens are; a user asks whether the student
gives the right answer. After each epoch the trainer runs the validation examples once with the
reference answer as input (teacher forcing, the pass that gives the validation loss) and scores
each answer by where the model's first choice (argmax) agrees with the reference:

- ``fields``: the answers are JSON objects with label-like fields (a short scalar that repeats
  across examples: a category, an intent) or small structured ones (slots, a list of tags). A
  field matches when every token of its value is the model's first choice after the reference
  text before it. When the field comes first (``{"intent": ...}``) that is exactly what greedy
  decoding writes; after free text (a ``reason`` before the ``category``) it is the label the
  model gives once it has written the reference reason. The score is the mean over the fields.
- ``answer``: the whole answer is a label (few distinct answers, repeated): it matches when every
  token through the end-of-turn token is the first choice, i.e. greedy decoding reproduces it
  exactly.
- ``tokens``: free text: the share of answer tokens that are the first choice.

When free text comes before the measured fields in most answers (``{"reason": ..., "category":
...}``), the label after the *reference* reason is nearly always right, whatever the epoch: such a
measure is taken from greedy answers instead (``generate``; ``greedy.py`` writes them with the
weights being trained and :func:`score_answers` compares their fields with the references). It
costs one generation over the validation split per epoch.

:func:`infer_measure` picks the kind from the training answers (or takes the fields a caller
names); :class:`MeasureScorer` precomputes where each validation answer's fields are in its
tokens and scores the first-choice vectors the validation pass returns. One forward pass per
example and no generation, so the measure costs what the validation loss already cost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from distillery.training.local.data import TokenizedExample

MeasureKind = Literal["fields", "answer", "tokens"]

MIN_PARSED_SHARE = 0.9  # answers that must be JSON objects for the fields kind
MIN_PRESENT_SHARE = 0.9  # answers a field must appear in
MAX_LABEL_CHARS = 64  # a longer string is text, not a label
MAX_STRUCTURED_CHARS = 256  # a dict/list field scored as one value when its JSON is this short
MAX_LABEL_SHARE = 0.5  # distinct values at most this share of the answers: the values repeat


@dataclass(frozen=True)
class TaskMeasure:
    """How validation answers are scored, and the label space the data shows."""

    kind: MeasureKind
    fields: tuple[str, ...] = ()
    n_labels: int = 0  # distinct values of the first label field (or answers); 0: not labels
    generate: bool = False  # scored on greedy answers, not under teacher forcing

    @property
    def metric(self) -> str:
        """The name of the score in the metrics (``valid_<name>``)."""
        return {
            "fields": "valid_field_match",
            "answer": "valid_exact_match",
            "tokens": "valid_answer_token_accuracy",
        }[self.kind]

    def describe(self) -> str:
        if self.kind == "fields":
            names = ", ".join(f"'{f}'" for f in self.fields)
            plural = "s" if len(self.fields) > 1 else ""
            how = " in greedy answers" if self.generate else ""
            return f"exact match of the JSON field{plural} {names}{how}"
        if self.kind == "answer":
            return "exact match of the whole answer"
        return "token accuracy on the answer"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "fields": list(self.fields),
            "n_labels": self.n_labels,
            "generate": self.generate,
            "metric": self.metric,
            "description": self.describe(),
        }


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object an answer starts with (after any blanks), or None."""
    start = text.find("{")
    if start < 0 or text[:start].strip():
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _field_kind(values: list[Any], n_answers: int) -> str | None:
    """``label``, ``structured`` or None (free text, numbers that vary...) for one field."""
    if len(values) < MIN_PRESENT_SHARE * n_answers:
        return None
    if all(isinstance(v, dict | list) for v in values):
        if max(len(compact(v)) for v in values) <= MAX_STRUCTURED_CHARS:
            return "structured"
        return None
    if not all(isinstance(v, str | bool | int) for v in values):
        return None
    if any(len(str(v)) > MAX_LABEL_CHARS for v in values):
        return None
    distinct = len({compact(v) for v in values})
    return "label" if distinct <= max(2, MAX_LABEL_SHARE * len(values)) else None


def infer_measure(answers: Sequence[str], fields: Sequence[str] | None = None) -> TaskMeasure:
    """The measure for a task whose reference answers are ``answers`` (the training answers).

    ``fields`` names the JSON fields to score (a caller that knows the task's graders); else the
    label-like and small structured fields found in the answers, in their order of appearance.
    """
    n = len(answers)
    objects = [json_object(a) for a in answers]
    parsed = [o for o in objects if o is not None]
    if fields:
        first = fields[0]
        labels = {compact(o[first]) for o in parsed if first in o}
        return TaskMeasure("fields", tuple(fields), len(labels), _text_first(parsed, fields))
    if n and len(parsed) >= MIN_PARSED_SHARE * n:
        keys: list[str] = []
        for obj in parsed:
            keys.extend(k for k in obj if k not in keys)
        chosen: list[tuple[str, str]] = []
        for key in keys:
            kind = _field_kind([o[key] for o in parsed if key in o], len(parsed))
            if kind is not None:
                chosen.append((key, kind))
        if chosen:
            labels_of = [k for k, kind in chosen if kind == "label"]
            n_labels = (
                len({compact(o[labels_of[0]]) for o in parsed if labels_of[0] in o})
                if labels_of
                else 0
            )
            names = tuple(k for k, _ in chosen)
            return TaskMeasure("fields", names, n_labels, _text_first(parsed, names))
    distinct = len({a.strip() for a in answers})
    if n and distinct <= max(2, MAX_LABEL_SHARE * n):
        return TaskMeasure("answer", (), distinct)
    return TaskMeasure("tokens")


def _text_first(objects: Sequence[dict[str, Any]], fields: Sequence[str]) -> bool:
    """Whether most answers open with a field that is not measured (free text before the
    labels): then teacher forcing would read the label after the reference text."""
    opened = [next(iter(o)) for o in objects if o]
    return bool(opened) and sum(k not in fields for k in opened) * 2 > len(opened)


def settled(text: str) -> bool:
    """Whether a generated answer can stop: its JSON object is complete, or it does not open one
    (it would score nothing whatever follows)."""
    opened = text.lstrip()
    if not opened:
        return False
    return not opened.startswith("{") or json_object(text) is not None


def score_answers(
    measure: TaskMeasure, references: Sequence[str], answers: Sequence[str]
) -> MeasureTotals:
    """Totals of a ``fields`` measure over generated ``answers``: a field matches when the answer
    is a JSON object whose value for it equals the reference's (an unparsable answer matches
    nothing). Each example scores the share of its reference's fields it matches."""
    totals = MeasureTotals()
    for reference, answer in zip(references, answers, strict=True):
        expected = json_object(reference) or {}
        present = [f for f in measure.fields if f in expected]
        if not present:
            continue
        got = json_object(answer) or {}
        matched = [f in got and compact(got[f]) == compact(expected[f]) for f in present]
        for name, ok in zip(present, matched, strict=True):
            totals.field_seen[name] = totals.field_seen.get(name, 0) + 1
            totals.field_hits[name] = totals.field_hits.get(name, 0) + ok
        totals.score_sum += sum(matched) / len(matched)
        totals.scored += 1
    return totals


def _value_span(text: str, name: str) -> tuple[int, int] | None:
    """Characters of the value of top-level field ``name`` in the JSON answer ``text``."""
    match = re.search(r'"' + re.escape(name) + r'"\s*:\s*', text)
    if match is None:
        return None
    try:
        _, end = json.JSONDecoder().raw_decode(text, match.end())
    except ValueError:
        return None
    return match.end(), end


def _token_spans(
    tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], fields: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """Each field's value as a range of answer tokens (those overlapping its characters)."""
    text = str(tokenizer.decode(list(ids)))
    chars = {f: span for f in fields if (span := _value_span(text, f)) is not None}
    if not chars:
        return {}
    ends = [len(tokenizer.decode(list(ids[: k + 1]))) for k in range(len(ids))]
    starts = [0, *ends[:-1]]
    spans: dict[str, tuple[int, int]] = {}
    for name, (lo, hi) in chars.items():
        tokens = [t for t in range(len(ids)) if starts[t] < hi and ends[t] > lo]
        if tokens:
            spans[name] = (tokens[0], tokens[-1] + 1)
    return spans


@dataclass
class MeasureTotals:
    """Sums of one validation pass (added over ranks): the score and each field's matches."""

    score_sum: float = 0.0
    scored: int = 0
    field_hits: dict[str, int] = field(default_factory=dict)
    field_seen: dict[str, int] = field(default_factory=dict)

    @property
    def score(self) -> float | None:
        return self.score_sum / self.scored if self.scored else None

    def as_list(self, fields: Sequence[str]) -> list[float]:
        out = [self.score_sum, float(self.scored)]
        for f in fields:
            out += [float(self.field_hits.get(f, 0)), float(self.field_seen.get(f, 0))]
        return out

    @classmethod
    def from_list(cls, values: Sequence[float], fields: Sequence[str]) -> MeasureTotals:
        totals = cls(values[0], round(values[1]))
        for i, f in enumerate(fields):
            totals.field_hits[f] = round(values[2 + 2 * i])
            totals.field_seen[f] = round(values[3 + 2 * i])
        return totals


class MeasureScorer:
    """Scores a validation set's first-choice vectors with ``measure``."""

    def __init__(
        self,
        measure: TaskMeasure,
        examples: Sequence[TokenizedExample],
        tokenizer: PreTrainedTokenizerBase,
    ) -> None:
        self.measure = measure
        self.spans: dict[int, dict[str, tuple[int, int]]] = {}  # by id() of the example
        if measure.kind == "fields":
            for ex in examples:
                ids = ex.input_ids[ex.n_tokens - ex.answer_tokens :] if ex.answer_tokens else []
                self.spans[id(ex)] = _token_spans(tokenizer, ids, measure.fields)

    def score(
        self, examples: Sequence[TokenizedExample], correct: Sequence[Sequence[bool]]
    ) -> MeasureTotals:
        """Totals for ``examples`` (some of those the scorer was built with), given each
        example's first-choice vector over its target tokens (in order)."""
        totals = MeasureTotals()
        for ex, hits in zip(examples, correct, strict=True):
            n = min(ex.answer_tokens, len(hits))
            answer = list(hits[len(hits) - n :]) if n else []
            if not answer:
                continue
            kind = self.measure.kind
            if kind == "tokens":
                totals.score_sum += sum(answer)
                totals.scored += len(answer)
            elif kind == "answer":
                totals.score_sum += float(all(answer))
                totals.scored += 1
            else:
                spans = self.spans.get(id(ex), {})
                matched = [all(answer[lo:hi]) for lo, hi in spans.values()]
                for name, ok in zip(spans, matched, strict=True):
                    totals.field_seen[name] = totals.field_seen.get(name, 0) + 1
                    totals.field_hits[name] = totals.field_hits.get(name, 0) + ok
                if matched:
                    totals.score_sum += sum(matched) / len(matched)
                    totals.scored += 1
        return totals

    def metrics(self, totals: MeasureTotals) -> dict[str, float | None]:
        """The score (``measure.metric``) and, for fields, each field's match rate."""
        out: dict[str, float | None] = {self.measure.metric: totals.score}
        if self.measure.kind == "fields":
            for f in self.measure.fields:
                seen = totals.field_seen.get(f, 0)
                out[f"valid_match_{f}"] = totals.field_hits.get(f, 0) / seen if seen else None
        return out
