"""The training file of a reinforcement job: prompts, and the fields its grader reads.

As in OpenAI's reinforcement fine-tuning, each line is a JSON object with ``messages`` (the
conversation up to the answer the model is to write: no final ``assistant`` message) and any
other fields, which the grader reads as ``{{item.<field>}}`` (``reference_answer``, a label, a
schema...). The whole line is the grader's ``item``. torch-free: the gateway checks a file with
:func:`check_prompts` when the job is created, before any training.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery.errors import InvalidRequestError
from distillery.training.local.data import read_jsonl

PROMPT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass(frozen=True)
class Prompt:
    """One training row: the conversation to answer and the row itself (the grader's item)."""

    line: int
    messages: list[dict[str, Any]]
    item: dict[str, Any]


def _bad(where: str, why: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid {where}: {why}", param=param, code="invalid_training_file")


def parse_prompt(record: Any, line: int, *, what: str, param: str) -> Prompt:
    where = f"{what} line {line}"
    if not isinstance(record, Mapping):
        raise _bad(where, "expected a JSON object.", param)
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad(where, "'messages' must be a non-empty list of chat messages.", param)
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in PROMPT_ROLES:
            raise _bad(
                where, f"messages[{i}] needs a role ({', '.join(sorted(PROMPT_ROLES))}).", param
            )
    if messages[-1].get("role") == "assistant":
        raise _bad(
            where,
            "a reinforcement row ends with the prompt: the model writes the answer. Remove the "
            "final assistant message and put what the grader compares with in a field of the row "
            "(e.g. 'reference_answer', read as {{item.reference_answer}}).",
            param,
        )
    return Prompt(line, [dict(m) for m in messages], dict(record))


def load_prompts(
    path: str | Path, *, what: str = "training file", param: str = "training_file"
) -> list[Prompt]:
    """Every row of ``path`` (a 400 naming the line when one is not a prompt)."""
    prompts = [
        parse_prompt(rec, line, what=what, param=param) for line, rec in read_jsonl(path, what=what)
    ]
    if not prompts:
        raise _bad(what, "the file has no rows.", param)
    return prompts


def check_prompts(
    path: str | Path,
    references: Iterable[str],
    *,
    what: str = "training file",
    param: str = "training_file",
) -> int:
    """Check every row of ``path`` and that it has each field the grader reads
    (``references``: the ``item`` fields); returns the number of rows."""
    wanted = sorted(set(references))
    prompts = load_prompts(path, what=what, param=param)
    for prompt in prompts:
        missing = [name for name in wanted if name not in prompt.item]
        if missing:
            raise InvalidRequestError(
                f"The grader reads {{{{item.{missing[0]}}}}}, but line {prompt.line} of the "
                f"{what} has no field '{missing[0]}'.",
                param="method.reinforcement.grader",
                code="invalid_grader",
            )
    return len(prompts)
