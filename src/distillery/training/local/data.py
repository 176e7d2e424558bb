"""OpenAI chat fine-tuning JSONL -> tokenized examples with assistant-only labels.

Each line is ``{"messages": [...], "tools"?: [...]}`` as OpenAI's supervised fine-tuning takes
it. The conversation is rendered with the model's chat template (``tools`` passed to it when
present) through :mod:`distillery.chat_templates`, the same path serving renders prompts with, so
a model is trained on exactly the token ids it is served: the example of a conversation is the
served prompt of its last trainable assistant message (the messages before it, templated with the
generation prompt and tokenized whole) followed by that answer's own tokens, which end with the
template's end-of-turn token (``<end_of_turn>``, ``<|im_end|>``...) so the model learns to stop.
``labels`` are ``-100`` everywhere except on the tokens of assistant messages whose ``weight`` is
not 0 (OpenAI: ``weight`` 0 or 1, default 1); earlier trainable answers are labelled inside the
prompt, from the end of their generation prompt through their end-of-turn token. Examples longer
than ``max_length`` are truncated (as OpenAI does); an example left with no trainable token is
skipped and counted.

Tool calling: the record's ``tools``, assistant ``tool_calls`` and ``tool`` results are rendered
by :func:`distillery.chat_templates.render` too (the model's template when it renders tools, the
documented fallback format otherwise), so an assistant turn that calls tools is trained on exactly
the call text the serving grammar lets the model write (its loss on the call tokens through the
end-of-turn token), after exactly the prompt that serving renders for the same tools.

Templates that render a prefix of the conversation as a prefix of the whole (nearly all) give
exact spans; for the others (Mistral's moves the system message to the last user turn) the
assistant's content is located in the rendered text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery import chat_templates
from distillery.errors import InvalidRequestError
from distillery.wire.content import content_text, first_non_text
from distillery.wire.fine_tuning_jsonl import example_problems

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
_MAX_ERRORS_SHOWN = 5


class TrainingDataError(InvalidRequestError):
    """The training or validation file cannot be used; the message says where and why."""

    default_code = "invalid_training_file"


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken; unshifted (HF convention)
    # the last assistant answer as rendered (its text through the end-of-turn token) and the
    # number of its tokens at the end of ``input_ids`` (fewer when truncated): what the
    # validation measure scores (``measure.py``)
    answer: str = ""
    answer_tokens: int = 0

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_target_tokens(self) -> int:
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


@dataclass
class TokenizedDataset:
    examples: list[TokenizedExample]
    n_lines: int = 0
    n_truncated: int = 0
    n_skipped: int = 0  # no trainable token left (e.g. the assistant part was truncated away)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(e.n_tokens for e in self.examples)


def _text_of(content: Any, where: str) -> str:
    """Message content as text: a string, a list of text parts, or None (tool calls only)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        other = first_non_text(content)
        if other is not None:
            raise TrainingDataError(f"{where}: content part of type {other[1]!r} is not supported")
        return content_text(content)
    raise TrainingDataError(f"{where}: content must be a string or a list of text parts")


def parse_record(record: Any, where: str) -> tuple[list[dict[str, Any]], list[bool], Any]:
    """Validate one JSONL record; return (messages, trainable flags, tools).

    The format rules are the upload's (``wire.fine_tuning_jsonl.example_problems``); what only
    training adds: content must be text, and some assistant message must carry weight.
    """
    if (
        isinstance(record, dict)
        and not isinstance(record.get("messages"), list)
        and ("prompt" in record or "preferred_output" in record)
    ):
        raise TrainingDataError(
            f'{where}: expected an object with a "messages" list (prompt/completion and '
            "preference formats are not supported here)"
        )
    problems = example_problems(record)
    if problems:
        raise TrainingDataError(f"{where}: {problems[0][1]}")
    messages: list[dict[str, Any]] = []
    trainable: list[bool] = []
    for i, msg in enumerate(record["messages"]):
        clean = {k: v for k, v in msg.items() if k != "weight"}
        clean["role"] = "system" if msg["role"] == "developer" else msg["role"]
        clean["content"] = _text_of(msg.get("content"), f"{where}, message {i}")
        messages.append(clean)
        trainable.append(msg["role"] == "assistant" and msg.get("weight", 1) != 0)
    if not any(trainable):
        raise TrainingDataError(f"{where}: no assistant message to train on (all weights are 0?)")
    tools = record.get("tools")
    if tools is None and isinstance(record.get("functions"), list):
        tools = [{"type": "function", "function": f} for f in record["functions"]]
    return messages, trainable, tools


def _answer_text(tokenizer: PreTrainedTokenizerBase, message: dict[str, Any]) -> str:
    """What an assistant message is rendered as: its content, then its calls' text."""
    content = str(message.get("content") or "")
    calls = message.get("tool_calls")
    if not calls:
        return content
    fmt = chat_templates.tool_format(tokenizer)
    text = fmt.calls_text(
        [(c["function"]["name"], c["function"].get("arguments", "{}")) for c in calls]
    )
    return f"{content}\n{text}" if content else text


def _render(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    tools: Any,
    *,
    add_generation_prompt: bool = False,
) -> str:
    return chat_templates.render(
        tokenizer, messages, tools=tools, add_generation_prompt=add_generation_prompt
    )


def _end_of_turn(tokenizer: PreTrainedTokenizerBase, text: str, after: int) -> int:
    """The end of the first end-of-turn (or end-of-sequence) token at or after ``after`` in
    ``text``; ``len(text)`` when there is none."""
    markers = chat_templates.end_of_turn_tokens(tokenizer)
    eos = getattr(tokenizer, "eos_token", None)
    if isinstance(eos, str) and eos:
        markers.append(eos)
    ends = [i + len(m) for m in markers if (i := text.find(m, after)) >= 0]
    return min(ends, default=len(text))


def _locate(
    tokenizer: PreTrainedTokenizerBase, text: str, content: str, cursor: int, i: int
) -> tuple[int, int]:
    """Where assistant message ``i`` (its ``content``) is in ``text``, for templates that do not
    render a conversation prefix as a prefix of the whole: the content and its end of turn."""
    needle = content.strip()
    start = text.find(needle, cursor) if needle else -1
    if start < 0:
        raise TrainingDataError(
            f"the chat template does not render assistant message {i} in a way that can be "
            "located; use a template that renders a conversation prefix as a prefix of the whole"
        )
    if start > cursor and text[start - 1] == " ":  # "[/INST] answer": the blank is the answer's
        start -= 1
    return start, _end_of_turn(tokenizer, text, start + len(needle))


def _turn_span(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    messages: list[dict[str, Any]],
    i: int,
    tools: Any,
    cursor: int,
) -> tuple[int, int]:
    """The characters of ``text`` that assistant message ``i`` is trained on: from the end of its
    generation prompt to its end-of-turn token (included)."""
    before = _render(tokenizer, messages[:i], tools, add_generation_prompt=True) if i else ""
    through = _render(tokenizer, messages[: i + 1], tools)
    if text.startswith(before) and text.startswith(through) and len(through) > len(before):
        return len(before), _end_of_turn(tokenizer, through, len(before))
    return _locate(tokenizer, text, _answer_text(tokenizer, messages[i]), cursor, i)


def _labelled(
    tokenizer: PreTrainedTokenizerBase, text: str, spans: list[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    """``text`` tokenized whole, labelled on the tokens that start inside ``spans``."""
    if not spans:
        ids = chat_templates.encode(tokenizer, text)
        return ids, [IGNORE_INDEX] * len(ids)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(t) for t in enc["input_ids"]]
    labels = [IGNORE_INDEX] * len(ids)
    span_i = 0
    for t, (start, _end) in enumerate(enc["offset_mapping"]):
        while span_i < len(spans) and start >= spans[span_i][1]:
            span_i += 1
        if span_i < len(spans) and spans[span_i][0] <= start < spans[span_i][1]:
            labels[t] = ids[t]
    return ids, labels


def tokenize_messages(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    trainable: list[bool],
    tools: Any = None,
    *,
    max_length: int,
) -> tuple[TokenizedExample, bool]:
    """Tokenize one conversation; return the example and whether it was truncated.

    The last trainable assistant message is trained exactly as it is served: the example is the
    prompt serving renders for it (:func:`distillery.chat_templates.prompt_ids` of the messages
    before it) followed by the tokens of its answer, up to and including the template's
    end-of-turn token; nothing after it is kept (no loss is taken there). Earlier trainable
    assistant messages are labelled inside that prompt.
    """
    last = max(i for i, train in enumerate(trainable) if train)
    prompt = _render(tokenizer, messages[:last], tools, add_generation_prompt=True) if last else ""
    through = _render(tokenizer, messages[: last + 1], tools)
    if last and through.startswith(prompt) and len(through) > len(prompt):
        answer = through[len(prompt) : _end_of_turn(tokenizer, through, len(prompt))]
    else:  # the template rewrites earlier turns (or the conversation opens with the answer)
        content = _answer_text(tokenizer, messages[last])
        start, end = _locate(tokenizer, through, content, 0, last) if last else (0, len(through))
        answer = through[start:end]
    earlier = [train and i < last for i, train in enumerate(trainable)]
    cursor = 0
    spans: list[tuple[int, int]] = []
    for i, train in enumerate(earlier):
        if train:
            spans.append(_turn_span(tokenizer, prompt, messages, i, tools, cursor))
            cursor = spans[-1][1]
    ids, labels = _labelled(tokenizer, prompt, spans)
    answer_ids = chat_templates.encode(tokenizer, answer)
    ids += answer_ids
    labels += answer_ids
    truncated = len(ids) > max_length
    kept = max(0, len(answer_ids) - max(0, len(ids) - max_length))
    example = TokenizedExample(ids[:max_length], labels[:max_length], answer, kept)
    return example, truncated


def read_jsonl(path: str | Path, *, what: str = "training file") -> list[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line; clear errors for the rest."""
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TrainingDataError(f"{what} {p} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingDataError(f"{what} {p} cannot be read as UTF-8 text: {exc}") from exc
    records: list[tuple[int, Any]] = []
    errors: list[str] = []
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            errors.append(f"line {n}: invalid JSON ({exc.msg})")
    if errors:
        shown = "; ".join(errors[:_MAX_ERRORS_SHOWN])
        more = f" (and {len(errors) - _MAX_ERRORS_SHOWN} more)" if len(errors) > 5 else ""
        raise TrainingDataError(f"{what} {p.name}: {shown}{more}")
    if not records:
        raise TrainingDataError(f"{what} {p.name} has no examples")
    return records


def load_chat_dataset(
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    what: str = "training file",
) -> TokenizedDataset:
    """Read, validate and tokenize a chat fine-tuning JSONL file."""
    records = read_jsonl(path, what=what)
    dataset = TokenizedDataset(examples=[], n_lines=len(records))
    name = Path(path).name
    for n, record in records:
        messages, trainable, tools = parse_record(record, f"{what} {name}, line {n}")
        try:
            example, truncated = tokenize_messages(
                tokenizer, messages, trainable, tools, max_length=max_length
            )
        except TrainingDataError as exc:
            raise TrainingDataError(f"{what} {name}, line {n}: {exc.message}") from exc
        except Exception as exc:  # a template error on odd content: say which line
            raise TrainingDataError(
                f"{what} {name}, line {n}: the chat template failed: {exc}"
            ) from exc
        dataset.n_truncated += truncated
        if example.n_target_tokens == 0:
            dataset.n_skipped += 1
            continue
        dataset.examples.append(example)
    if dataset.n_truncated:
        dataset.warnings.append(
            f"{dataset.n_truncated} example(s) of the {what} were truncated to {max_length} tokens"
        )
    if dataset.n_skipped:
        dataset.warnings.append(
            f"{dataset.n_skipped} example(s) of the {what} had no assistant token left "
            f"within {max_length} tokens and were skipped"
        )
    if not dataset.examples:
        raise TrainingDataError(
            f"{what} {name}: no example has an assistant token within max_length={max_length}"
        )
    return dataset
