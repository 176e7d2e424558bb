"""OpenAI chat fine-tuning JSONL: read it safely, validate it as OpenAI does, write it.

One line is one example ``{"messages": [...], "tools"?: [...], "parallel_tool_calls"?: bool}``
(legacy ``functions`` accepted). Assistant messages may carry ``weight`` 0 or 1.

Reading never loads more than ``max_line_bytes`` of one line: a 50 MB line, a file without
newlines, bytes that are not UTF-8 or malformed JSON become an :class:`Issue` with its line number.

Validation runs every check of OpenAI's cookbook (``Chat_finetuning_data_prep.ipynb``): errors
``data_type``, ``missing_messages_list``, ``message_missing_key``, ``message_unrecognized_key``,
``unrecognized_role``, ``missing_content``, ``example_missing_assistant_message``, plus
``invalid_weight`` and ``invalid_tools`` for the newer fields; warnings
``example_over_token_limit``, ``too_few_examples`` (OpenAI's minimum is 10) and examples missing a
system or user message. Counts are per example (an example with two bad messages counts once
per kind). Differences from the notebook, following OpenAI's current format: the roles
``developer`` and ``tool`` and the keys ``tool_calls``, ``tool_call_id`` and ``refusal`` are
recognized; an assistant message with ``tool_calls`` (or ``function_call``) may omit ``content``;
``content`` may be a list of content parts.

Tokens are counted with the embedded student's tokenizer (``tokenizer.json`` of the converted
model under ``$DISTILLERY_HOME/models/``, loaded with the ``tokenizers`` library, never torch)
when it is there, else approximated as ``ceil(characters / 3)``. English averages about 4
characters per token, so the approximation over-counts it; Japanese text can be close to one
token per character, so it under-counts Japanese: convert the embedded model (any local use of it
does) for exact counts. The per-example formula is the cookbook's: 3 tokens per message, the
tokens of every value, 1 more per ``name``, and 3 for the reply priming.

How many epochs ``n_epochs: "auto"`` trains a file for (:func:`auto_n_epochs`) is here too: the
local trainer runs OpenAI's rule, and a dataset's cost estimate bills it.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

ALLOWED_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "function_call", "weight", "tool_calls", "tool_call_id", "refusal"}
)
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
EXAMPLE_KEYS = ("messages", "tools", "parallel_tool_calls", "functions")

ERROR_KINDS = (
    "line_too_long",
    "invalid_utf8",
    "invalid_json",
    "data_type",
    "missing_messages_list",
    "message_missing_key",
    "message_unrecognized_key",
    "unrecognized_role",
    "missing_content",
    "example_missing_assistant_message",
    "invalid_weight",
    "invalid_tools",
)
WARNING_KINDS = (
    "example_over_token_limit",
    "too_few_examples",
    "missing_system_message",
    "missing_user_message",
)
MIN_EXAMPLES = 10
DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_TOKENS = 65_536
MAX_LISTED = 100  # issues listed one by one; counts are always complete
EMBEDDED_TOKENIZER_MODEL = "smollm2-135m-instruct"

# OpenAI's rule for ``n_epochs: "auto"`` (3 epochs, raised so a small file is seen ~100 times,
# lowered so a large one is seen at most ~25,000 times): the local trainer runs it, and a dataset's
# cost estimate bills it.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def auto_n_epochs(n_examples: int) -> int:
    """OpenAI's documented rule for ``n_epochs="auto"``: how often a file of ``n_examples``
    examples is seen in training."""
    n = max(1, n_examples)
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n)
    if n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n)
    return TARGET_EPOCHS


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """One problem found in a JSONL file; ``line`` is 1-based (None for file-wide issues)."""

    line: int | None
    kind: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


def _skip_rest_of_line(stream: IO[bytes]) -> None:
    while True:
        chunk = stream.readline(1 << 20)
        if not chunk or chunk.endswith(b"\n"):
            return


def read_lines(
    stream: IO[bytes], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[tuple[int, Any]]:
    """``(line_number, parsed JSON or Issue)`` for every non-blank line, in order.

    Memory is bounded by ``max_line_bytes``: a longer line is skipped in 1 MiB reads.
    """
    number = 0
    while True:
        raw = stream.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_line_bytes and not (
            raw.endswith(b"\n") and len(raw) - 1 <= max_line_bytes
        ):
            _skip_rest_of_line(stream)
            yield (
                number,
                Issue(
                    number,
                    "line_too_long",
                    f"the line is longer than the limit of {max_line_bytes} bytes",
                ),
            )
            continue
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, Issue(number, "invalid_utf8", f"not valid UTF-8 (byte {exc.start})")
            continue
        try:
            yield number, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            where = f" at character {exc.pos + 1}" if isinstance(exc.pos, int) else ""
            yield number, Issue(number, "invalid_json", f"invalid JSON ({exc.msg}{where})")


# --- tokens -------------------------------------------------------------------------------------


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class ApproxTokenCounter:
    """``ceil(len(text) / 3)``: used when no tokenizer file is available."""

    name = "approx-chars/3"

    def count(self, text: str) -> int:
        return math.ceil(len(text) / 3)


class TokenizerFileCounter:
    """A Hugging Face ``tokenizer.json`` loaded with the ``tokenizers`` library (no torch)."""

    def __init__(self, path: Path, name: str) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        self.name = name

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


@functools.lru_cache(maxsize=8)
def _file_counter(path: str, name: str) -> TokenizerFileCounter:
    return TokenizerFileCounter(Path(path), name)


def token_counter(home: Path | None, model: str = EMBEDDED_TOKENIZER_MODEL) -> TokenCounter:
    """The tokenizer of ``model`` converted under ``home/models/``, else the approximation."""
    if home is not None:
        path = home / "models" / model / "tokenizer.json"
        if path.is_file():
            try:
                return _file_counter(str(path), model)
            except Exception:  # a broken tokenizer file must not break validation
                return ApproxTokenCounter()
    return ApproxTokenCounter()


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return orjson.dumps(value).decode()


def example_tokens(example: Mapping[str, Any], counter: TokenCounter) -> tuple[int, int]:
    """(total tokens, assistant tokens) of one example, by the cookbook's formula."""
    total = 3
    assistant = 0
    for message in example.get("messages") or []:
        if not isinstance(message, Mapping):
            continue
        total += 3
        for key, value in message.items():
            if key == "weight":
                continue
            n = counter.count(_value_text(value))
            total += n + (1 if key == "name" else 0)
            if message.get("role") == "assistant" and key != "role":
                assistant += n
    for key in ("tools", "functions"):
        if example.get(key):
            total += counter.count(_value_text(example[key]))
    return total, assistant


# --- validation ---------------------------------------------------------------------------------


def _content_ok(message: Mapping[str, Any]) -> bool:
    content = message.get("content")
    if isinstance(content, str) and content:
        return True
    if isinstance(content, list) and content:
        return all(isinstance(p, Mapping) and isinstance(p.get("type"), str) for p in content)
    if content is None or content == "":
        has_call = bool(message.get("tool_calls") or message.get("function_call"))
        return has_call and message.get("role") == "assistant"
    return False


def _message_problems(index: int, message: Any) -> list[tuple[str, str]]:
    where = f"messages[{index}]"
    if not isinstance(message, Mapping):
        return [("data_type", f"{where} is not an object")]
    found: list[tuple[str, str]] = []
    role = message.get("role")
    has_call = bool(message.get("tool_calls") or message.get("function_call"))
    if "role" not in message or ("content" not in message and not has_call):
        missing = "role" if "role" not in message else "content"
        found.append(("message_missing_key", f"{where} has no '{missing}'"))
    unknown = sorted(set(message) - ALLOWED_MESSAGE_KEYS)
    if unknown:
        found.append(("message_unrecognized_key", f"{where} has unrecognized key '{unknown[0]}'"))
    if "role" in message and role not in ROLES:
        found.append(("unrecognized_role", f"{where} has unrecognized role {role!r}"))
    if ("content" in message or not has_call) and not _content_ok(message):
        found.append(("missing_content", f"{where} has no text content"))
    if "weight" in message:
        weight = message["weight"]
        if role != "assistant":
            found.append(("invalid_weight", f"{where}: 'weight' is only allowed on assistant"))
        elif isinstance(weight, bool) or weight not in (0, 1):
            found.append(("invalid_weight", f"{where}: 'weight' must be 0 or 1"))
    if message.get("tool_calls") is not None:
        found.extend(_tool_call_problems(where, role, message["tool_calls"]))
    return found


def _tool_call_problems(where: str, role: Any, calls: Any) -> list[tuple[str, str]]:
    if role != "assistant":
        return [("invalid_tools", f"{where}: only assistant messages may carry tool_calls")]
    if not isinstance(calls, list):
        return [("invalid_tools", f"{where}: 'tool_calls' must be a list")]
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if (
            not isinstance(function, Mapping)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments"), str | Mapping)
        ):
            shape = '{"function": {"name", "arguments"}}'
            return [("invalid_tools", f"{where}, tool call {j}: expected {shape}")]
    return []


def _tools_problems(example: Mapping[str, Any]) -> list[tuple[str, str]]:
    for key in ("tools", "functions"):
        value = example.get(key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value)
        ):
            return [("invalid_tools", f"'{key}' must be a list of objects")]
    for i, tool in enumerate(example.get("tools") or []):
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            shape = '{"type": "function", "function": {"name", ...}}'
            return [("invalid_tools", f"tool {i}: expected {shape}")]
    return []


def example_problems(example: Any) -> list[tuple[str, str]]:
    """``(kind, message)`` for every format error of one example (the cookbook's checks).

    The one set of format rules: uploads are reported with them and the local trainer refuses
    an example that breaks one (``training.local.data.parse_record``)."""
    if not isinstance(example, Mapping):
        return [("data_type", "the line is not a JSON object")]
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        return [("missing_messages_list", "no 'messages' list")]
    found: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        found.extend(_message_problems(index, message))
    if not any(isinstance(m, Mapping) and m.get("role") == "assistant" for m in messages):
        found.append(("example_missing_assistant_message", "no assistant message"))
    found.extend(_tools_problems(example))
    ptc = example.get("parallel_tool_calls")
    if ptc is not None and not isinstance(ptc, bool):
        found.append(("invalid_tools", "'parallel_tool_calls' must be true or false"))
    # one count per kind and example
    seen: set[str] = set()
    unique = []
    for kind, message in found:
        if kind not in seen:
            seen.add(kind)
            unique.append((kind, message))
    return unique


def _distribution(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def pct(p: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(p * len(ordered)))])

    return {
        "min": float(ordered[0]),
        "max": float(ordered[-1]),
        "mean": float(statistics.fmean(ordered)),
        "median": float(statistics.median(ordered)),
        "p5": pct(0.05),
        "p95": pct(0.95),
    }


@dataclass
class ValidationReport:
    """Counts per error and warning kind, the first issues with their lines, token figures."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    min_examples: int = MIN_EXAMPLES
    tokenizer: str = ApproxTokenCounter.name
    n_lines: int = 0
    n_examples: int = 0  # lines that passed the format checks
    error_counts: Counter[str] = field(default_factory=Counter)
    warning_counts: Counter[str] = field(default_factory=Counter)
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    assistant_tokens: list[int] = field(default_factory=list)
    messages_per_example: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error_counts

    def add_error(self, issue: Issue) -> None:
        self.error_counts[issue.kind] += 1
        if len(self.errors) < MAX_LISTED:
            self.errors.append(issue)

    def add_warning(self, issue: Issue) -> None:
        self.warning_counts[issue.kind] += 1
        if len(self.warnings) < MAX_LISTED:
            self.warnings.append(issue)

    def billed_tokens(self) -> int:
        """Tokens billed per epoch: each example counted up to the limit (longer ones are cut)."""
        return sum(min(self.max_tokens, n) for n in self.tokens)

    def _lines_of(self, issues: list[Issue], kind: str) -> list[int]:
        return [i.line for i in issues if i.kind == kind and i.line is not None]

    def summary(self, *, warnings: bool = False) -> str:
        """One sentence per kind with the first line numbers, e.g. for an error message."""
        counts, issues = (
            (self.warning_counts, self.warnings) if warnings else (self.error_counts, self.errors)
        )
        parts = []
        for kind, count in counts.most_common():
            lines = self._lines_of(issues, kind)[:5]
            first = next((i for i in issues if i.kind == kind), None)
            where = f" (line {', '.join(map(str, lines))}{', ...' if count > len(lines) else ''})"
            detail = f": {first.message}" if first is not None and first.line is not None else ""
            parts.append(f"{kind} x{count}{where if lines else ''}{detail}")
        return "; ".join(parts)

    def error_message(self) -> str:
        return (
            f"Invalid fine-tuning file: {sum(self.error_counts.values())} invalid line(s) "
            f"of {self.n_lines}. {self.summary()}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "distillery.jsonl_validation",
            "ok": self.ok,
            "lines": self.n_lines,
            "examples": self.n_examples,
            "error_counts": dict(self.error_counts),
            "warning_counts": dict(self.warning_counts),
            "errors": [{"line": i.line, "kind": i.kind, "message": i.message} for i in self.errors],
            "warnings": [
                {"line": i.line, "kind": i.kind, "message": i.message} for i in self.warnings
            ],
            "tokenizer": self.tokenizer,
            "max_tokens_per_example": self.max_tokens,
            "total_tokens": sum(self.tokens),
            "billed_tokens_per_epoch": self.billed_tokens(),
            "distributions": {
                "messages_per_example": _distribution(self.messages_per_example),
                "tokens_per_example": _distribution(self.tokens),
                "assistant_tokens_per_example": _distribution(self.assistant_tokens),
            },
        }


class Validator:
    """Validates examples one at a time (so a file is checked in one pass, line by line)."""

    def __init__(
        self,
        *,
        counter: TokenCounter | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        min_examples: int = MIN_EXAMPLES,
    ) -> None:
        self.counter = counter or ApproxTokenCounter()
        self.report = ValidationReport(
            max_tokens=max_tokens, min_examples=min_examples, tokenizer=self.counter.name
        )

    def add(self, line: int, value: Any) -> bool:
        """Check one parsed line (or the Issue from reading it); True when it is a valid example."""
        report = self.report
        report.n_lines += 1
        if isinstance(value, Issue):
            report.add_error(value)
            return False
        problems = example_problems(value)
        for kind, message in problems:
            report.add_error(Issue(line, kind, message))
        if problems:
            return False
        report.n_examples += 1
        messages = value["messages"]
        roles = {m.get("role") for m in messages}
        if not roles & {"system", "developer"}:
            report.add_warning(Issue(line, "missing_system_message", "no system message"))
        if "user" not in roles:
            report.add_warning(Issue(line, "missing_user_message", "no user message"))
        total, assistant = example_tokens(value, self.counter)
        report.tokens.append(total)
        report.assistant_tokens.append(assistant)
        report.messages_per_example.append(len(messages))
        if total > report.max_tokens:
            report.add_warning(
                Issue(
                    line,
                    "example_over_token_limit",
                    f"{total} tokens, over the limit of {report.max_tokens}: "
                    "it will be truncated in training",
                )
            )
        return True

    def finish(self) -> ValidationReport:
        report = self.report
        if report.n_examples < report.min_examples:
            report.add_warning(
                Issue(
                    None,
                    "too_few_examples",
                    f"{report.n_examples} example(s); fine-tuning needs at least "
                    f"{report.min_examples}",
                )
            )
        return report


def validate_jsonl(
    stream: IO[bytes],
    *,
    counter: TokenCounter | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    min_examples: int = MIN_EXAMPLES,
) -> ValidationReport:
    """Validate a whole fine-tuning JSONL stream in one pass."""
    validator = Validator(counter=counter, max_tokens=max_tokens, min_examples=min_examples)
    for number, value in read_lines(stream, max_line_bytes=max_line_bytes):
        validator.add(number, value)
    return validator.finish()


def parse_jsonl(
    stream: IO[bytes],
    *,
    counter: TokenCounter | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    min_examples: int = 1,
) -> tuple[list[tuple[int, dict[str, Any]]], ValidationReport]:
    """The valid examples with their line numbers, and the report of the whole file."""
    validator = Validator(counter=counter, max_tokens=max_tokens, min_examples=min_examples)
    examples: list[tuple[int, dict[str, Any]]] = []
    for number, value in read_lines(stream, max_line_bytes=max_line_bytes):
        if validator.add(number, value):
            examples.append((number, clean_example(value)))
    return examples, validator.finish()


# --- writing ------------------------------------------------------------------------------------


def clean_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message with only the keys a training line may carry (``None`` values dropped)."""
    return {k: v for k, v in message.items() if k in ALLOWED_MESSAGE_KEYS and v is not None}


def clean_example(example: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": [clean_message(m) for m in example["messages"]]}
    for key in EXAMPLE_KEYS[1:]:
        if example.get(key) is not None:
            out[key] = example[key]
    return out


def build_example(
    messages: Iterable[Mapping[str, Any]],
    assistant: Mapping[str, Any],
    *,
    tools: Any = None,
    parallel_tool_calls: Any = None,
) -> dict[str, Any]:
    """A training line from the input messages and the assistant's reply."""
    reply = clean_message({**assistant, "role": "assistant"})
    if reply.get("tool_calls") is None and reply.get("content") is None:
        reply["content"] = ""
    out: dict[str, Any] = {"messages": [*(clean_message(m) for m in messages), reply]}
    if tools:
        out["tools"] = tools
    if isinstance(parallel_tool_calls, bool):
        out["parallel_tool_calls"] = parallel_tool_calls
    return out


def dump_line(example: Mapping[str, Any]) -> bytes:
    return orjson.dumps(example) + b"\n"


def write_jsonl(examples: Iterable[Mapping[str, Any]], out: IO[bytes]) -> int:
    """Write examples, one per line; returns how many were written."""
    count = 0
    for example in examples:
        out.write(dump_line(example))
        count += 1
    return count
