"""Talking to a model judge: prompt files, the call, and parsing what the judge answered.

- Prompts are data: ``prompts/*.md`` next to this module, loaded with ``importlib.resources``.
  ``{name}`` slots in them are filled in one pass (``templating.fill_slots``).
- The call goes through a ``JudgeClient`` bound by the eval runner. Temperature defaults to 0 for
  reproducible grades. Any failure of the call, a refusal, or an empty answer raises
  ``GraderError`` so the runner counts the item as errored.
- Choices are parsed the way openai/evals ``modelgraded/classify_utils.get_choice`` does for
  ``cot_classify`` prompts (lines from the last, punctuation stripped, a line that is or starts or
  ends with a choice), but on whole words and ignoring case, so "Answer: B" is B, not A.
  An answer with no choice raises ``GraderError`` (openai/evals scored it "__invalid__").
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict

from distillery.evals.graders.base import (
    MODEL_PARSE_ERROR,
    MODEL_REFUSAL_ERROR,
    MODEL_SERVER_ERROR,
    GraderError,
    JudgeClient,
    parse_json,
    preview,
)
from distillery.settings import Settings

if TYPE_CHECKING:
    from distillery.providers.registry import ProviderRegistry
from distillery.text.lang import contains_cjk

_PROMPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9]+)?")
_SCORE_LINE = re.compile(r"^\W*(?:score\W*)?(-?\d+(?:\.\d+)?)\W*$", re.IGNORECASE)


class GraderSamplingParams(BaseModel):
    """OpenAI's grader ``sampling_params``; ``top_p`` and ``reasoning_effort`` are accepted for
    compatibility but not forwarded (the judge client takes temperature, max tokens and seed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = None
    max_completions_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    top_p: float | None = None
    reasoning_effort: str | None = None


@dataclass(frozen=True)
class JudgeAnswer:
    content: str
    usage: Mapping[str, Any] = field(default_factory=dict)


@functools.cache
def load_prompt(name: str) -> str:
    """The text of ``prompts/<name>.md`` shipped with distillery."""
    resource = importlib.resources.files("distillery.evals.graders") / "prompts" / f"{name}.md"
    try:
        return resource.read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise GraderError(f"no judge prompt named {name!r}") from exc


def user_prompt_path(name: str) -> Path:
    """``$DISTILLERY_HOME/prompts/<name>`` (``.md`` optional) for a ``custom_prompt`` file.

    Only a plain file name is accepted, so a config can never read outside that folder.
    """
    if not _PROMPT_NAME.fullmatch(name):
        raise ValueError(
            f"prompt_file must be a file name in $DISTILLERY_HOME/prompts, not {name!r}"
        )
    folder = Settings().home / "prompts"
    for candidate in (folder / name, folder / f"{name}.md"):
        if candidate.is_file():
            return candidate
    raise ValueError(f"prompt_file {name!r} not found in {folder}")


T = TypeVar("T")


async def ask(
    judge: JudgeClient | None,
    *,
    model: str,
    messages: list[dict[str, Any]],
    sampling: GraderSamplingParams | None = None,
    response_format: dict[str, Any] | None = None,
) -> JudgeAnswer:
    """Call the judge and return its text answer; every failure becomes a ``GraderError``."""
    if judge is None:
        raise GraderError(
            f"no judge client is bound to call model {model!r}", kind=MODEL_SERVER_ERROR
        )
    params = sampling or GraderSamplingParams()
    try:
        completion = await judge.complete(
            model=model,
            messages=messages,
            temperature=0.0 if params.temperature is None else params.temperature,
            max_tokens=params.max_completions_tokens or params.max_completion_tokens,
            response_format=response_format,
            seed=params.seed,
        )
    except GraderError:
        raise
    except Exception as exc:
        raise GraderError(f"judge model {model!r} failed: {exc}", kind=MODEL_SERVER_ERROR) from exc
    return JudgeAnswer(content=answer_text(completion), usage=completion.get("usage") or {})


def answer_text(completion: Mapping[str, Any]) -> str:
    """The assistant text of a ChatCompletion dict."""
    choices = completion.get("choices") or []
    message = choices[0].get("message") if choices and isinstance(choices[0], Mapping) else None
    if not isinstance(message, Mapping):
        raise GraderError("judge returned no message", kind=MODEL_PARSE_ERROR)
    if message.get("refusal"):
        raise GraderError(
            f"judge refused: {preview(str(message['refusal']))}", kind=MODEL_REFUSAL_ERROR
        )
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    if not isinstance(content, str) or not content.strip():
        raise GraderError("judge returned an empty answer", kind=MODEL_PARSE_ERROR)
    return content


def _strip_punctuation(text: str) -> str:
    chars = (" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join("".join(chars).split()).casefold()


def _line_choice(line: str, choices: Sequence[str]) -> str | None:
    text = _strip_punctuation(line)
    if not text:
        return None
    keys = [(c, _strip_punctuation(c)) for c in choices]
    for choice, key in keys:
        if text == key:
            return choice
    for choice, key in keys:
        sep = "" if contains_cjk(key) else " "
        if text.endswith(sep + key) or text.startswith(key + sep):
            return choice
    return None


def parse_choice(text: str, choices: Sequence[str]) -> str:
    """The choice a chain-of-thought answer ends on; ``GraderError`` when there is none."""
    for line in reversed(text.strip().splitlines()):
        choice = _line_choice(line, choices)
        if choice is not None:
            return choice
    raise GraderError(
        f"judge answer names none of {list(choices)}: {preview(text)!r}",
        raw=text,
        kind=MODEL_PARSE_ERROR,
    )


def parse_json_object(text: str) -> dict[str, Any] | None:
    """A JSON object answer, also when wrapped in a code fence or prose; None when absent."""
    start, end = text.find("{"), text.rfind("}")
    for candidate in (text.strip(), text[start : end + 1] if 0 <= start < end else ""):
        try:
            value = parse_json(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def reasoning_of(answer: str, obj: Mapping[str, Any] | None = None) -> str | None:
    """The judge's reasoning: the ``reasoning`` field, else the answer without its last line."""
    if obj is not None and isinstance(obj.get("reasoning"), str):
        return str(obj["reasoning"]) or None
    lines = answer.strip().splitlines()
    body = "\n".join(lines[:-1]).strip()
    return body or None


def cot_answer_prompt(choices: Sequence[str]) -> str:
    """openai/evals' ``cot_classify`` instruction, listing the choices as '"A" or "B"'."""
    listed = " or ".join(f'"{c}"' for c in choices)
    return load_prompt("cot_classify").replace("{choices}", listed)


def json_result_format(name: str, value_schema: dict[str, Any], key: str) -> dict[str, Any]:
    """A strict ``json_schema`` response format for ``{"reasoning": str, key: value_schema}``."""
    schema = {
        "type": "object",
        "properties": {"reasoning": {"type": "string"}, key: value_schema},
        "required": ["reasoning", key],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


def parse_label(content: str, labels: list[str]) -> tuple[str, Mapping[str, Any] | None]:
    """The label of a ``{"reasoning", "label"}`` answer (case-insensitive), else the label a
    chain-of-thought text ends on; also returns the parsed object, if any."""
    obj = parse_json_object(content)
    value = obj.get("label") if obj else None
    if isinstance(value, str):
        folded = {label.casefold(): label for label in labels}
        if value.strip().casefold() in folded:
            return folded[value.strip().casefold()], obj
    return parse_choice(content, labels), obj


def parse_score(content: str) -> tuple[float, Mapping[str, Any] | None]:
    """The score of a ``{"reasoning", "score"}`` answer, else a last line such as "Score: 4"."""
    obj = parse_json_object(content)
    value = obj.get("score") if obj else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), obj
    text_match = _SCORE_LINE.match(value.strip()) if isinstance(value, str) else None
    if text_match:
        return float(text_match.group(1)), obj
    for line in reversed(content.strip().splitlines()):
        match = _SCORE_LINE.match(line.strip())
        if match:
            return float(match.group(1)), obj
    raise GraderError("judge answer has no score", raw=content, kind=MODEL_PARSE_ERROR)


@dataclass(frozen=True)
class Classification:
    choice: str
    answer: JudgeAnswer

    def details(self, model: str) -> dict[str, object]:
        return {
            "raw": self.answer.content,
            "choice": self.choice,
            "model": model,
            "usage": dict(self.answer.usage),
        }


async def ask_parsed(
    judge: JudgeClient | None,
    parse: Callable[[str], T],
    *,
    model: str,
    messages: list[dict[str, Any]],
    sampling: GraderSamplingParams | None = None,
    response_format: dict[str, Any] | None = None,
) -> tuple[JudgeAnswer, T]:
    """``ask`` then ``parse`` the answer; an off-format answer gets one retry, then the
    ``GraderError`` (with the raw answer) marks the item errored."""
    for attempt in (1, 2):
        answer = await ask(
            judge,
            model=model,
            messages=messages,
            sampling=sampling,
            response_format=response_format,
        )
        try:
            return answer, parse(answer.content)
        except GraderError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def classify(
    judge: JudgeClient | None,
    *,
    model: str,
    prompt: str,
    choices: Sequence[str],
    sampling: GraderSamplingParams | None = None,
    append_answer_prompt: bool = True,
) -> Classification:
    """Ask a chain-of-thought classification ``prompt`` and parse the choice it ends on."""
    content = f"{prompt}\n\n{cot_answer_prompt(choices)}" if append_answer_prompt else prompt
    answer, choice = await ask_parsed(
        judge,
        lambda text: parse_choice(text, choices),
        model=model,
        messages=[{"role": "user", "content": content}],
        sampling=sampling,
    )
    return Classification(choice=choice, answer=answer)


class ProviderJudge:
    """The ``JudgeClient`` of model graders: a chat completion through distillery's providers."""

    def __init__(self, providers: ProviderRegistry) -> None:
        self.providers = providers

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": messages}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_completion_tokens"] = max_tokens
        if response_format is not None:
            body["response_format"] = response_format
        if seed is not None:
            body["seed"] = seed
        return await self.providers.route(model).create(body)
