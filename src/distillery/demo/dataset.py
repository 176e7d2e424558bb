"""The demo data set of the "inquiry routing" task: helpdesk inquiries labelled by department.

Employees ask an internal helpdesk bot in Japanese or English; the model answers only
``{"reason": "...", "category": "..."}`` with one of :data:`LABELS`. The data ships as package
data (``distillery/demo/data``) so it loads from an installed wheel as well as from a checkout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

LABELS: tuple[str, ...] = ("労務", "人事", "総務", "経理", "情報システム")
LANGS: tuple[str, ...] = ("ja", "en")
SPLITS: tuple[str, ...] = ("train", "test")

_DATA = files("distillery.demo") / "data"
_INQUIRIES = "inquiries.jsonl"
_SYSTEM_PROMPT = "system_prompt.txt"
_TEACHER_ERRORS = "teacher_errors.jsonl"
_CORRECTIONS = "corrections.jsonl"
ERROR_KINDS: tuple[str, ...] = ("topic_mentioned", "wrong_language", "malformed")


@dataclass(frozen=True)
class Inquiry:
    """One labelled helpdesk inquiry."""

    id: str
    lang: str
    question: str
    category: str
    reason: str
    split: str

    def reference_output(self) -> str:
        """The exact JSON answer the model is expected to produce for this inquiry: compact, keys
        in the schema's order, as OpenAI's structured outputs write it."""
        return compact_json({"reason": self.reason, "category": self.category})


def compact_json(value: Any) -> str:
    """JSON as structured outputs emit it (no blanks between tokens), non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _as_emitted(text: str) -> str:
    """A well-formed answer re-written as structured outputs emit it; a malformed one as it is."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return compact_json(value) if isinstance(value, dict) else text


def response_schema() -> dict[str, Any]:
    """The JSON Schema of an answer, in the order the teacher writes it (reason first)."""
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "minLength": 1},
            "category": {"type": "string", "enum": list(LABELS)},
        },
        "required": ["reason", "category"],
        "additionalProperties": False,
    }


def response_format() -> dict[str, Any]:
    """The ``response_format`` the application sends with every request (structured outputs)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "inquiry_route", "strict": True, "schema": response_schema()},
    }


@dataclass(frozen=True)
class TeacherError:
    """A teacher answer that is wrong the way a large model is wrong on this task."""

    id: str
    kind: str  # one of ERROR_KINDS
    output: str  # the raw assistant text the teacher produced


@dataclass(frozen=True)
class Correction:
    """A reviewer's correction of a teacher error (applied through the annotation queue)."""

    id: str
    output: str
    rating: int
    note: str


def _jsonl(name: str) -> list[dict[str, Any]]:
    text = (_DATA / name).read_text(encoding="utf-8")
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError(f"{name}:{line_no}: expected a JSON object")
        rows.append(row)
    return rows


@cache
def teacher_errors() -> dict[str, TeacherError]:
    """The shipped teacher mistakes by inquiry id (about 9% of the items)."""
    out: dict[str, TeacherError] = {}
    for row in _jsonl(_TEACHER_ERRORS):
        error = TeacherError(
            id=str(row["id"]), kind=str(row["kind"]), output=_as_emitted(str(row["output"]))
        )
        if error.kind not in ERROR_KINDS:
            raise ValueError(f"{_TEACHER_ERRORS}: {error.id}: unknown kind {error.kind!r}")
        out[error.id] = error
    return out


@cache
def corrections() -> dict[str, Correction]:
    """The reviewers' corrections of :func:`teacher_errors`, by inquiry id."""
    return {
        str(row["id"]): Correction(
            id=str(row["id"]),
            output=_as_emitted(str(row["output"])),
            rating=int(row.get("rating", 1)),
            note=str(row.get("note", "")),
        )
        for row in _jsonl(_CORRECTIONS)
    }


def teacher_output(inquiry: Inquiry) -> str:
    """What the (simulated) teacher answered: its shipped mistake, else the reference answer."""
    error = teacher_errors().get(inquiry.id)
    return error.output if error is not None else inquiry.reference_output()


@cache
def system_prompt() -> str:
    """The system prompt of the inquiry routing task."""
    return (_DATA / _SYSTEM_PROMPT).read_text(encoding="utf-8").strip()


def _parse(line_no: int, raw: Any) -> Inquiry:
    if not isinstance(raw, dict):
        raise ValueError(f"{_INQUIRIES}:{line_no}: expected a JSON object")
    fields = ("id", "lang", "question", "category", "reason", "split")
    values: dict[str, str] = {}
    for name in fields:
        value = raw.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{_INQUIRIES}:{line_no}: field {name!r} must be a non-empty string")
        values[name] = value
    if values["category"] not in LABELS:
        raise ValueError(f"{_INQUIRIES}:{line_no}: unknown category {values['category']!r}")
    if values["lang"] not in LANGS:
        raise ValueError(f"{_INQUIRIES}:{line_no}: unknown lang {values['lang']!r}")
    if values["split"] not in SPLITS:
        raise ValueError(f"{_INQUIRIES}:{line_no}: unknown split {values['split']!r}")
    return Inquiry(**values)


def load_inquiries(split: str | None = None) -> list[Inquiry]:
    """All inquiries in file order, or only those of ``split`` ("train" or "test")."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    text = (_DATA / _INQUIRIES).read_text(encoding="utf-8")
    inquiries = [
        _parse(line_no, json.loads(line))
        for line_no, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if split is None:
        return inquiries
    return [inquiry for inquiry in inquiries if inquiry.split == split]


def messages_for(inquiry: Inquiry) -> list[dict[str, str]]:
    """Chat messages (system prompt + the employee's question) for one inquiry."""
    return [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": inquiry.question},
    ]
