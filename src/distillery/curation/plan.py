"""What a synthesis asks for: its request body, the seeds it learns the task from, and its plan.

:class:`SynthesisSpec` is the body of ``POST /v1/distillery/datasets/{id}/synthesize`` (and the
CLI's options). :func:`load_seeds` reads a dataset version: its train and validation rows are the
seeds (inputs shown to the teacher as examples, and rows of the new version), its test rows are
held out (no synthetic input may be a near-duplicate of one). The production prompt (the seeds'
system message) and response format (from the seeds' stored requests, or given) are what every
synthetic input is answered with, so the rows look exactly like captured traffic.

:func:`make_plan` splits the requested count into cells (label x language, or topic x language)
with a quota each, so the set is balanced by construction; a task with neither labels nor topics
gets its topics from the teacher first (``synthesize``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distillery.errors import InvalidRequestError
from distillery.evals.graders.base import parse_json
from distillery.store.completions import CompletionsRepo
from distillery.store.datasets import DatasetItem
from distillery.text.lang import language_of
from distillery.wire.content import message_text

MAX_SYNTHETIC = 5000
# near-duplicates: all-MiniLM-L6-v2 cosine at or above this. Measured on pairs of inquiries:
# near-verbatim variants (punctuation, a particle or a word added) score 0.935-0.984 in English
# and 0.945-0.992 in Japanese; the same question reworded 0.75-0.79 in Japanese; different
# questions on one topic 0.30 in English and 0.66-0.74 in Japanese. Rewordings are kept: they
# are the variety a synthetic set is for.
DEFAULT_DEDUPE_THRESHOLD = 0.9
LENGTHS = {
    "short": "short (one sentence, under 15 words)",
    "medium": "of medium length (two or three sentences)",
    "long": "long (a detailed paragraph with context)",
}
# request fields of a stored seed that are not sampling settings of the production call
_NOT_SETTINGS = frozenset(
    {"model", "messages", "store", "metadata", "stream", "stream_options", "n", "user"}
)

Language = Literal["en", "ja"]


class Coverage(BaseModel):
    """What the synthetic set must cover; each list omitted is taken from the seeds."""

    model_config = ConfigDict(extra="forbid")
    labels: list[str] | None = Field(default=None, min_length=1, max_length=500)
    languages: list[Language] | None = Field(default=None, min_length=1)
    topics: list[str] | None = Field(default=None, min_length=1, max_length=200)
    lengths: list[Literal["short", "medium", "long"]] | None = Field(default=None, min_length=1)
    # inputs like the ones the current student gets wrong: an eval run whose failed items are
    # shown to the teacher as examples of what to write more of
    failing_run_id: str | None = None


class SynthesisSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher: str = Field(min_length=1, max_length=256)
    description: str = Field(min_length=1, max_length=8000)
    n: int = Field(default=100, ge=1, le=MAX_SYNTHETIC)
    version: int | None = Field(default=None, ge=1)  # the seed version (latest when omitted)
    coverage: Coverage = Field(default_factory=Coverage)
    label_field: str | None = Field(default=None, min_length=1, max_length=256)
    response_format: dict[str, Any] | None = None  # omitted: the seeds' own
    graders: list[dict[str, Any]] | None = Field(default=None, max_length=20)
    dedupe_threshold: float = Field(default=DEFAULT_DEDUPE_THRESHOLD, gt=0, le=1)
    inputs_per_call: int = Field(default=10, ge=1, le=50)
    concurrency: int = Field(default=4, ge=1, le=64)
    max_rounds: int = Field(default=3, ge=1, le=10)
    temperature: float = Field(default=1.0, ge=0, le=2)
    max_usd: float | None = Field(default=None, gt=0)
    max_calls: int | None = Field(default=None, ge=1)
    acknowledge_terms: bool = False
    dry_run: bool = False
    seed: int = 0
    description_of_version: str | None = Field(default=None, max_length=1000)


@dataclass(frozen=True)
class SeedRow:
    input: str
    output: str
    language: str
    label: str | None
    item: DatasetItem


@dataclass
class Seeds:
    """What the seed version says about the task."""

    system: str | None
    rows: list[SeedRow]  # train and validation: shown as examples, kept in the new version
    held_out: list[str]  # the test split's inputs: never duplicated
    settings: dict[str, Any]  # the production call's settings (response_format, temperature...)
    label_field: str | None
    labels: list[str]
    languages: list[str]
    prompt: str | None  # the seeds' ``prompt`` metadata, for lineage
    warnings: list[str] = field(default_factory=list)

    @property
    def response_format(self) -> dict[str, Any] | None:
        rf = self.settings.get("response_format")
        return rf if isinstance(rf, dict) else None

    def messages_for(self, text: str) -> list[dict[str, Any]]:
        """The production messages of one input: the seeds' system prompt, then the input."""
        out: list[dict[str, Any]] = []
        if self.system is not None:
            out.append({"role": "system", "content": self.system})
        out.append({"role": "user", "content": text})
        return out


@dataclass(frozen=True)
class Cell:
    label: str | None
    language: str
    topic: str | None = None

    def view(self) -> dict[str, Any]:
        return {"label": self.label, "language": self.language, "topic": self.topic}


def _parts(example: Mapping[str, Any]) -> tuple[str | None, str, str]:
    """(system, last user input, last assistant output) of a training line."""
    system, user, assistant = None, "", ""
    for m in example.get("messages") or []:
        if not isinstance(m, Mapping):
            continue
        role = m.get("role")
        if role in ("system", "developer") and system is None:
            system = message_text(m)
        elif role == "user":
            user = message_text(m)
        elif role == "assistant":
            assistant = message_text(m)
    return system, user, assistant


def label_of(output: str, label_field: str | None) -> str | None:
    """The label an answer gives in ``label_field`` (a top-level JSON field), if any."""
    if label_field is None:
        return None
    try:
        value = parse_json(output)
    except ValueError:
        return None
    if isinstance(value, Mapping):
        found = value.get(label_field)
        if isinstance(found, str | int | bool) and not isinstance(found, float):
            return str(found)
    return None


def schema_of(response_format: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not response_format or response_format.get("type") != "json_schema":
        return None
    js = response_format.get("json_schema")
    schema = js.get("schema") if isinstance(js, Mapping) else None
    return schema if isinstance(schema, dict) else None


def enum_fields(schema: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """The top-level string fields of a JSON schema that are enums, in schema order."""
    props = (schema or {}).get("properties")
    out: dict[str, list[str]] = {}
    if isinstance(props, Mapping):
        for name, prop in props.items():
            if isinstance(prop, Mapping) and isinstance(prop.get("enum"), list):
                out[str(name)] = [str(v) for v in prop["enum"]]
    return out


def load_seeds(
    items: Sequence[DatasetItem], completions: CompletionsRepo, spec: SynthesisSpec
) -> Seeds:
    """The task as the seed version shows it; a 400 when it cannot be read."""
    shown = [it for it in items if it.split != "test"]
    held = [it for it in items if it.split == "test"]
    systems: Counter[str | None] = Counter()
    parsed = []
    for it in shown:
        system, text, output = _parts(it.example)
        if text:
            systems[system] += 1
            parsed.append((it, text, output))
    if not parsed:
        raise InvalidRequestError(
            "The seed version has no train or validation row with a user input.",
            param="version",
            code="no_seeds",
        )
    warnings = []
    system = systems.most_common(1)[0][0]
    if len(systems) > 1:
        warnings.append(
            f"The seeds use {len(systems)} different system prompts; the synthetic inputs are "
            "answered with the most common one."
        )
    settings, prompt = _production_settings(shown, completions)
    if spec.response_format is not None:
        settings["response_format"] = spec.response_format
    enums = enum_fields(schema_of(settings.get("response_format")))
    label_field = spec.label_field or next(iter(enums), None)
    if spec.coverage.labels:
        labels = list(dict.fromkeys(spec.coverage.labels))
    elif label_field in enums:
        labels = enums[label_field]
    else:
        found = (label_of(out, label_field) for _, _, out in parsed)
        labels = sorted({x for x in found if x is not None})
    rows = [
        SeedRow(text, out, language_of(text), label_of(out, label_field), it)
        for it, text, out in parsed
    ]
    seen_languages = sorted({r.language for r in rows if r.language in ("en", "ja")}) or ["en"]
    languages = list(dict.fromkeys(spec.coverage.languages or seen_languages))
    described = language_of(spec.description)
    if described in ("en", "ja") and described not in seen_languages:
        warnings.append(
            f"The description is written in {_NAMES[described]}, the seeds in "
            f"{' and '.join(_NAMES[x] for x in seen_languages)}: the inputs are written in "
            f"{' and '.join(_NAMES.get(x, x) for x in languages)}, as planned."
        )
    held_out = [_parts(it.example)[1] for it in held]
    return Seeds(
        system=system,
        rows=rows,
        held_out=[t for t in held_out if t],
        settings=settings,
        label_field=label_field if labels else spec.label_field,
        labels=labels,
        languages=languages,
        prompt=prompt,
        warnings=warnings,
    )


_NAMES = {"en": "English", "ja": "Japanese"}


def _production_settings(
    items: Sequence[DatasetItem], completions: CompletionsRepo
) -> tuple[dict[str, Any], str | None]:
    """The settings of the seeds' stored requests (the first that has any) and their prompt."""
    ids = [it.completion_id for it in items if it.completion_id][:50]
    for c in completions.get_many(ids) if ids else []:
        settings = {k: v for k, v in c.request.items() if k not in _NOT_SETTINGS}
        return settings, c.metadata.get("prompt")
    return {}, None


def make_plan(
    labels: Sequence[str | None],
    languages: Sequence[str],
    topics: Sequence[str | None],
    n: int,
) -> dict[Cell, int]:
    """Every cell of labels x topics x languages with its quota (``n`` spread evenly, the
    remainder to the first cells)."""
    cells = [
        Cell(label, language, topic)
        for label in (labels or [None])
        for topic in (topics or [None])
        for language in languages
    ]
    base, extra = divmod(n, len(cells))
    return {cell: base + (1 if i < extra else 0) for i, cell in enumerate(cells)}


def calls_for(missing: int, per_call: int, overshoot: float = 1.3) -> int:
    """Generation calls to ask for ``missing`` inputs, with room for the rejected ones."""
    return math.ceil(missing * overshoot / per_call) if missing > 0 else 0
