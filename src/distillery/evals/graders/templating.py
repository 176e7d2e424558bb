"""``{{item.x}}`` / ``{{sample.output_text}}`` templates, as OpenAI's graders use them.

- Only the ``item`` and ``sample`` namespaces exist; any other ``{{...}}`` is left as written.
- Paths go through mappings by key and through lists by index: ``{{item.messages.0.content}}``,
  ``{{sample.output_json.category}}``. Whitespace inside the braces is allowed.
- A missing key (or a ``null``) renders as the empty string; a string renders as itself; any other
  value as JSON with non-ASCII characters kept (``ensure_ascii=False``).

``item_references`` lists the item fields a grader config reads, so a job can check that its rows
carry them before it starts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from distillery.evals.graders.base import GradeInput

_PLACEHOLDER = re.compile(r"\{\{\s*(item|sample)((?:\.[^\s{}.]+)*)\s*\}\}")
_MISSING = object()


def lookup(root: Any, path: Sequence[str]) -> Any:
    """Follow ``path`` through mappings and lists; ``_MISSING`` when any step is absent."""
    value = root
    for part in path:
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, Sequence) and not isinstance(value, str | bytes) and part.isdigit():
            index = int(part)
            value = value[index] if index < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def to_text(value: Any) -> str:
    if value is None or value is _MISSING:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def resolve(namespace: str, path: Sequence[str], inp: GradeInput) -> Any:
    root = inp.item if namespace == "item" else inp.sample
    return lookup(root, path)


def placeholder(template: str) -> tuple[str, list[str]] | None:
    """The namespace and path of a template that is one placeholder and nothing else
    (``{{sample.output_json.category}}``: ``("sample", ["output_json", "category"])``)."""
    match = _PLACEHOLDER.fullmatch(template)
    if match is None:
        return None
    return match.group(1), [p for p in match.group(2).split(".") if p]


def render(template: str, inp: GradeInput) -> str:
    """Fill every ``{{item...}}`` and ``{{sample...}}`` placeholder of ``template`` in one pass."""

    def substitute(match: re.Match[str]) -> str:
        path = [p for p in match.group(2).split(".") if p]
        return to_text(resolve(match.group(1), path, inp))

    return _PLACEHOLDER.sub(substitute, template)


# grader config keys that are never rendered as templates
_NOT_TEMPLATED = frozenset(
    {"type", "name", "model", "schema", "labels", "passing_labels", "calculate_output"}
)


def item_references(config: Any) -> set[str]:
    """Every top-level item field that a grader config reads through ``{{item.<field>...}}``.

    Looks at every string of the config, in nested objects and lists (``input`` messages and
    their content parts), and in a ``multi`` grader's sub-graders (in either shape). A ``python``
    grader reads ``item[...]`` in code, which cannot be known: it adds nothing. ``{{item}}`` alone
    (the whole row) names no field; a ``custom_prompt`` read from a ``prompt_file`` is not opened.
    """
    found: set[str] = set()
    if isinstance(config, Mapping):
        _collect_grader(config, found)
    return found


def _collect_grader(config: Mapping[str, Any], found: set[str]) -> None:
    kind = config.get("type")
    if kind == "python":
        return
    if kind == "multi":
        graders = config.get("graders")
        if isinstance(graders, Mapping):
            subs = [graders] if isinstance(graders.get("type"), str) else list(graders.values())
            for sub in subs:
                if isinstance(sub, Mapping):
                    _collect_grader(sub, found)
        return
    for key, value in config.items():
        if key not in _NOT_TEMPLATED:
            _collect(value, found)


def _collect(value: Any, found: set[str]) -> None:
    if isinstance(value, str):
        for match in _PLACEHOLDER.finditer(value):
            path = [p for p in match.group(2).split(".") if p]
            if match.group(1) == "item" and path:
                found.add(path[0])
    elif isinstance(value, Mapping):
        for child in value.values():
            _collect(child, found)
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        for child in value:
            _collect(child, found)


def fill_slots(template: str, values: Mapping[str, str]) -> str:
    """Fill ``{name}`` slots of a judge prompt file in one pass.

    Values are inserted verbatim and never re-scanned, so an answer that contains ``{criteria}``
    cannot inject text into another slot. Unknown slots are left as written.
    """
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)
