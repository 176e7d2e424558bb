"""What a prompt's captured traffic holds, before anything is trained on it.

:func:`take_inventory` reads the stored completions of one prompt: the teacher's (the model that
answered most of them, unless named), of one prompt version (the newest, unless named), with the
reviewers' accepted corrections in place of the teacher's answers. Each answer is checked
against the response format the application asked for: an answer that does not parse (or does
not match the JSON schema) is counted and listed, and left out of the dataset, never trained on.
From the usable answers it infers the graders (:func:`infer_graders`) and the label space, and
:meth:`Inventory.check_enough` refuses too little data, saying how much more is needed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from distillery.errors import InvalidRequestError, NotFoundError
from distillery.evals.graders.templating import placeholder
from distillery.training.local.measure import infer_measure, json_object
from distillery.wire.content import message_text

MIN_EXAMPLES = 20  # under this, no split leaves a test set worth a comparison
MAX_LISTED = 20  # unusable answers listed by id in the report (all are counted)
SIMILARITY_PASS = 0.8  # semantic similarity a free-text answer needs to pass
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # usable in a {{template}} path


class TooLittleData(InvalidRequestError):
    default_code = "too_little_data"


class UnknownPrompt(NotFoundError):
    default_code = "prompt_not_found"


@dataclass(frozen=True)
class Unusable:
    completion_id: str
    problem: str

    def to_json(self) -> dict[str, str]:
        return {"completion_id": self.completion_id, "problem": self.problem}


@dataclass
class Inventory:
    """The usable traffic of one prompt and what it says about the task."""

    prompt: str
    teacher: str
    prompt_version: str | None
    usable: list[str]  # completion ids, oldest first
    unusable: list[Unusable]
    corrected: int  # usable answers that are accepted corrections
    response_format: dict[str, Any] | None
    graders: list[dict[str, Any]]
    label_field: str | None  # the first label-like JSON field, when there is one
    labels: Counter[str] = field(default_factory=Counter)  # its values and their counts
    max_completion_tokens: int | None = None  # what the application asked for at most
    other_teachers: dict[str, int] = field(default_factory=dict)  # models left aside
    other_versions: dict[str, int] = field(default_factory=dict)  # prompt versions left aside

    @property
    def needed(self) -> int:
        """Usable examples the automatic recipe needs: 20, and one per label."""
        return max(MIN_EXAMPLES, len(self.labels))

    def check_enough(self) -> None:
        have = len(self.usable)
        if have >= self.needed:
            return
        why = f"at least {MIN_EXAMPLES} in all"
        if len(self.labels) > MIN_EXAMPLES:
            why = f"at least one per label ({len(self.labels)} labels of '{self.label_field}')"
        dropped = (
            f" ({len(self.unusable)} more do not parse as its format)" if self.unusable else ""
        )
        raise TooLittleData(
            f"Prompt '{self.prompt}' has {have} usable example(s) from {self.teacher}{dropped}; "
            f"distilling needs {why}: capture about {self.needed - have} more.",
            param="prompt",
        )

    def ratios(self, test_fraction: float | None = None) -> dict[str, float]:
        """Split ratios: a tenth for validation (it chooses the checkpoint), and a test split
        of a tenth (a fifth under 200 examples, so a small prompt still tests on some)."""
        test = (
            test_fraction
            if test_fraction is not None
            else (0.1 if len(self.usable) >= 200 else 0.2)
        )
        return {"train": round(0.9 - test, 6), "validation": 0.1, "test": test}

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "teacher": self.teacher,
            "prompt_version": self.prompt_version,
            "usable": len(self.usable),
            "unusable": len(self.unusable),
            "unusable_items": [u.to_json() for u in self.unusable[:MAX_LISTED]],
            "corrected": self.corrected,
            "needed": self.needed,
            "label_field": self.label_field,
            "labels": len(self.labels),
            "graders": [g["name"] for g in self.graders],
            "other_teachers": self.other_teachers,
            "other_versions": self.other_versions,
        }


def answer_of(completion: Any, corrected: str | None) -> str | None:
    """The answer a stored completion trains on: its accepted correction, else the teacher's
    text (None for an answer without text: a tool call)."""
    if corrected is not None:
        return corrected
    choices = (completion.response or {}).get("choices") or [{}]
    message = choices[0].get("message") or {}
    if message.get("tool_calls") and not message.get("content"):
        return None
    return message_text(message)


def format_problem(text: str | None, response_format: Mapping[str, Any] | None) -> str | None:
    """Why an answer does not satisfy the response format, or None."""
    kind = (response_format or {}).get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    if text is None:
        return "no text answer (a tool call) where the format asks for JSON"
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"not JSON: {exc}"
    schema = ((response_format or {}).get("json_schema") or {}).get("schema")
    if kind == "json_object" or not isinstance(schema, dict):
        return None if isinstance(value, dict) else "JSON, but not an object"
    return _schema_problem(value, schema)


def _schema_problem(value: Any, schema: dict[str, Any]) -> str | None:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the answer"
        return f"does not match the schema at {where}: {exc.message}"
    except jsonschema.SchemaError:
        return None  # the application's schema is broken: the answers are not to blame
    return None


def infer_graders(
    answers: Sequence[str], response_format: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], str | None]:
    """The graders of a task from its answers and format, and its first label field.

    ``json_schema`` when the format has a schema (else ``valid_json`` for JSON answers); exact
    match of each JSON field that looks like a label (a short scalar that repeats), or of the
    whole answer when the answers are labels; otherwise semantic similarity to the reference.
    """
    graders: list[dict[str, Any]] = []
    kind = (response_format or {}).get("type")
    schema = ((response_format or {}).get("json_schema") or {}).get("schema")
    if kind == "json_schema" and isinstance(schema, dict):
        graders.append(
            {
                "type": "json_schema",
                "name": "schema",
                "input": "{{sample.output_text}}",
                "schema": schema,
            }
        )
    measure = infer_measure(answers)
    objects = [o for o in (json_object(a) for a in answers) if o is not None]
    if not graders and (kind == "json_object" or measure.kind == "fields"):
        graders.append(
            {"type": "valid_json", "name": "valid_json", "input": "{{sample.output_text}}"}
        )
    label_field: str | None = None
    if measure.kind == "fields":
        for name in measure.fields:
            values = [o[name] for o in objects if name in o]
            if not _FIELD_NAME.match(name) or not all(
                isinstance(v, str | bool | int) for v in values
            ):
                continue  # structured (slots) or not addressable in a template
            label_field = label_field or name
            graders.append(
                {
                    "type": "string_check",
                    "name": f"field_{name}",
                    "input": "{{sample.output_json." + name + "}}",
                    "reference": "{{item.reference_json." + name + "}}",
                    "operation": "eq",
                }
            )
    elif measure.kind == "answer":
        graders.append(
            {
                "type": "string_check",
                "name": "exact_answer",
                "input": "{{sample.output_text}}",
                "reference": "{{item.reference}}",
                "operation": "eq",
            }
        )
    if not any(g["type"] == "string_check" for g in graders):
        graders.append(
            {
                "type": "semantic_similarity",
                "name": "similarity",
                "input": "{{sample.output_text}}",
                "reference": "{{item.reference}}",
                "pass_threshold": SIMILARITY_PASS,
            }
        )
    return graders, label_field


def reward_grader(graders: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The graders as one reinforcement reward: the grader itself when there is one, else a
    ``multi`` grader whose reward is their mean (each keeps its name in the job's pass rates)."""
    if len(graders) == 1:
        return dict(graders[0])
    keys: dict[str, Any] = {}
    for grader in graders:
        key = re.sub(r"\W", "_", str(grader["name"])) or "grader"
        if not key[0].isalpha():
            key = "g_" + key
        while key in keys:
            key += "_"
        keys[key] = dict(grader)
    return {
        "type": "multi",
        "name": "reward",
        "graders": keys,
        "calculate_output": f"({' + '.join(keys)}) / {len(keys)}",
    }


def measured_fields(graders: Sequence[Mapping[str, Any]]) -> list[str]:
    """The answer's JSON fields that the graders compare exactly (a ``string_check`` of
    ``{{sample.output_json.<field>}}``), in order: what a local trainer's validation measure
    scores to choose its checkpoint."""
    fields: list[str] = []
    for grader in graders:
        namespace, path = placeholder(str(grader.get("input", ""))) or ("", [])
        if grader.get("type") != "string_check" or namespace != "sample" or len(path) != 2:
            continue
        if path[0] == "output_json" and path[1] not in fields:
            fields.append(path[1])
    return fields


def _most_common_format(completions: Sequence[Any]) -> dict[str, Any] | None:
    """The response format most of the requests sent, as the newest of them sent it: compared
    with sorted keys, but returned in its own key order (a schema's ``properties`` order is the
    order constrained decoding writes the fields in, which the student is trained to)."""
    seen: dict[str, dict[str, Any] | None] = {}
    counts: Counter[str] = Counter()
    for c in sorted(completions, key=lambda c: (c.created_at, c.seq)):
        value = c.request.get("response_format")
        key = json.dumps(value, sort_keys=True)
        counts[key] += 1
        seen[key] = value if isinstance(value, dict) else None
    chosen = _most_common(counts)
    return seen.get(chosen) if chosen is not None else None


def _most_common(counts: Counter[str]) -> str | None:
    return counts.most_common(1)[0][0] if counts else None


def take_inventory(
    completions: Iterable[Any],
    corrections: Mapping[str, str],
    *,
    prompt: str,
    known_prompts: Sequence[str],
    teacher: str | None = None,
    prompt_version: str | None = None,
    graders: list[dict[str, Any]] | None = None,
) -> Inventory:
    """The usable traffic of ``prompt`` among ``completions`` (its stored completions, oldest
    first); ``corrections`` maps completion ids to accepted corrected answers."""
    answered = [c for c in completions if c.response is not None and c.status == "completed"]
    if not answered:
        listed = ", ".join(sorted(known_prompts)) or "none yet"
        raise UnknownPrompt(
            f"No stored completion has prompt '{prompt}'. Prompts with traffic: {listed}.",
            param="prompt",
        )
    models = Counter(c.model for c in answered if not c.model.startswith("ft:"))
    chosen_teacher = teacher or _most_common(models)
    if chosen_teacher is None:
        raise UnknownPrompt(
            f"Prompt '{prompt}' has answers from fine-tuned students only: name the teacher.",
            param="teacher",
        )
    by_teacher = [c for c in answered if c.model == chosen_teacher]
    if not by_teacher:
        raise InvalidRequestError(
            f"Prompt '{prompt}' has no answer from {chosen_teacher}; its models: "
            + ", ".join(f"{m} ({n})" for m, n in models.most_common()),
            param="teacher",
        )
    versions = Counter(
        str(c.metadata.get("prompt_version"))
        for c in by_teacher
        if c.metadata.get("prompt_version")
    )
    chosen_version = prompt_version
    if chosen_version is None and versions:
        chosen_version = max(by_teacher, key=lambda c: (c.created_at, c.seq)).metadata.get(
            "prompt_version"
        )
    if chosen_version is not None:
        by_teacher = [c for c in by_teacher if c.metadata.get("prompt_version") == chosen_version]
    response_format = _most_common_format(by_teacher)
    usable: list[str] = []
    unusable: list[Unusable] = []
    answers: list[str] = []
    corrected = 0
    max_tokens: list[int] = []
    for c in by_teacher:
        text = answer_of(c, corrections.get(c.id))
        problem = format_problem(text, response_format)
        if problem is not None:
            unusable.append(Unusable(c.id, problem))
            continue
        usable.append(c.id)
        corrected += c.id in corrections
        if text is not None:
            answers.append(text)
        limit = c.request.get("max_completion_tokens") or c.request.get("max_tokens")
        if isinstance(limit, int):
            max_tokens.append(limit)
    inferred, label_field = infer_graders(answers, response_format)
    labels: Counter[str] = Counter()
    if label_field is not None:
        for text in answers:
            obj = json_object(text)
            if obj is not None and label_field in obj:
                labels[str(obj[label_field])] += 1
    elif any(g["name"] == "exact_answer" for g in inferred):
        labels = Counter(a.strip() for a in answers)
    return Inventory(
        prompt=prompt,
        teacher=chosen_teacher,
        prompt_version=chosen_version,
        usable=usable,
        unusable=unusable,
        corrected=corrected,
        response_format=response_format,
        graders=graders or inferred,
        label_field=label_field,
        labels=labels,
        max_completion_tokens=max(max_tokens) if max_tokens else None,
        other_teachers={m: n for m, n in models.items() if m != chosen_teacher},
        other_versions={v: n for v, n in versions.items() if v != chosen_version},
    )
