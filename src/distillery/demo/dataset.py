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
        """The exact JSON answer the model is expected to produce for this inquiry."""
        return json.dumps({"reason": self.reason, "category": self.category}, ensure_ascii=False)


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
