"""OpenAI chat fine-tuning JSONL: reading with bounded memory, the cookbook checks, tokens."""

from __future__ import annotations

import io
import json
from pathlib import Path

import orjson
import pytest

from distillery.wire.fine_tuning_jsonl import (
    ApproxTokenCounter,
    Issue,
    build_example,
    example_tokens,
    parse_jsonl,
    read_lines,
    token_counter,
    validate_jsonl,
)


def good(i: int = 0, **extra: object) -> dict[str, object]:
    return {
        "messages": [
            {"role": "system", "content": "Route the inquiry."},
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": f'{{"category": "IT", "n": {i}}}'},
        ],
        **extra,
    }


def jsonl(*lines: object) -> io.BytesIO:
    return io.BytesIO(
        b"".join(
            (x if isinstance(x, bytes) else json.dumps(x, ensure_ascii=False).encode()) + b"\n"
            for x in lines
        )
    )


def test_valid_file_passes_with_counts_and_distributions() -> None:
    report = validate_jsonl(jsonl(*(good(i) for i in range(12))))
    assert report.ok and report.n_examples == 12
    assert not report.warning_counts
    d = report.to_dict()
    assert d["distributions"]["messages_per_example"]["max"] == 3
    assert d["total_tokens"] > 0 and d["billed_tokens_per_epoch"] == d["total_tokens"]


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ([1, 2], "data_type"),
        ({"prompt": "x", "completion": "y"}, "missing_messages_list"),
        (
            {"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]},
            "message_missing_key",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x", "foo": 1},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "message_unrecognized_key",
        ),
        (
            {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
            "unrecognized_role",
        ),
        (
            {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]},
            "missing_content",
        ),
        ({"messages": [{"role": "user", "content": "x"}]}, "example_missing_assistant_message"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x", "weight": 1},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "invalid_weight",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": "y", "weight": 2},
                ]
            },
            "invalid_weight",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": "y"},
                ],
                "tools": "nope",
            },
            "invalid_tools",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": "y"},
                ],
                "parallel_tool_calls": "yes",
            },
            "invalid_tools",
        ),
    ],
)
def test_each_cookbook_error_is_counted_with_its_line(line: object, kind: str) -> None:
    report = validate_jsonl(jsonl(good(0), good(1), line, good(3)))
    assert not report.ok
    assert report.error_counts == {kind: 1}
    assert [(i.line, i.kind) for i in report.errors] == [(3, kind)]
    assert "line 3" in report.error_message()


def test_newer_format_fields_are_accepted() -> None:
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "route", "arguments": '{"category": "IT"}'},
    }
    example = {
        "messages": [
            {"role": "developer", "content": "Route."},
            {"role": "user", "content": [{"type": "text", "text": "VPN が繋がらない"}]},
            {"role": "assistant", "tool_calls": [tool_call], "weight": 0},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            {"role": "assistant", "content": "done", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "route", "parameters": {}}}],
        "parallel_tool_calls": False,
    }
    report = validate_jsonl(jsonl(*([example] * 10)))
    assert report.ok, report.errors
    assert report.warning_counts == {}


def test_warnings_too_few_examples_over_limit_missing_system() -> None:
    long = good(0)
    long["messages"][1]["content"] = "x" * 3000  # type: ignore[index]
    no_system = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    }
    report = validate_jsonl(jsonl(long, no_system), max_tokens=500)
    assert report.ok
    assert report.warning_counts == {
        "example_over_token_limit": 1,
        "missing_system_message": 1,
        "too_few_examples": 1,
    }
    assert [w.line for w in report.warnings if w.kind == "example_over_token_limit"] == [1]


def test_malformed_json_and_non_utf8_lines_have_line_numbers() -> None:
    data = jsonl(good(0), b'{"messages": [', good(2), b'{"messages": "\xff\xfe"}', b"", good(5))
    report = validate_jsonl(data)
    assert report.error_counts == {"invalid_json": 1, "invalid_utf8": 1}
    assert [(i.line, i.kind) for i in report.errors] == [(2, "invalid_json"), (4, "invalid_utf8")]
    assert report.n_examples == 3


def test_a_50_mb_line_is_an_error_not_a_memory_blow_up() -> None:
    huge = b'{"messages": [{"role": "user", "content": "' + b"a" * (50 * 1024 * 1024) + b'"}]}'
    stream = io.BytesIO(
        orjson.dumps(good(0)) + b"\n" + huge + b"\n" + orjson.dumps(good(2)) + b"\n"
    )
    seen = list(read_lines(stream, max_line_bytes=1024 * 1024))
    assert len(seen) == 3
    number, issue = seen[1]
    assert number == 2 and isinstance(issue, Issue) and issue.kind == "line_too_long"
    assert seen[2][0] == 3 and isinstance(seen[2][1], dict)  # reading resumes after the line


def test_line_exactly_at_limit_is_read() -> None:
    line = orjson.dumps(good(0))
    seen = list(read_lines(io.BytesIO(line + b"\n"), max_line_bytes=len(line)))
    assert isinstance(seen[0][1], dict)
    seen = list(read_lines(io.BytesIO(line), max_line_bytes=len(line)))  # no final newline
    assert isinstance(seen[0][1], dict)
    seen = list(read_lines(io.BytesIO(line + b"\n"), max_line_bytes=len(line) - 1))
    assert isinstance(seen[0][1], Issue)


def test_parse_returns_clean_examples_and_bom_is_ignored() -> None:
    raw = b"\xef\xbb\xbf" + orjson.dumps(good(0, tools=None)) + b"\n"
    examples, report = parse_jsonl(io.BytesIO(raw))
    assert report.ok
    assert examples == [(1, {"messages": good(0)["messages"]})]


def test_build_example_keeps_training_keys_only() -> None:
    ex = build_example(
        [{"role": "user", "content": "q", "name": None}],
        {"role": "assistant", "content": "a", "refusal": None, "annotations": [], "audio": None},
        tools=[{"type": "function", "function": {"name": "f"}}],
        parallel_tool_calls=True,
    )
    assert ex == {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "parallel_tool_calls": True,
    }


def test_token_counting_approximation_and_tokenizer_file(tmp_path: Path) -> None:
    approx = token_counter(tmp_path)
    assert isinstance(approx, ApproxTokenCounter)
    assert approx.count("abcdef") == 2 and approx.count("abcdefg") == 3
    total, assistant = example_tokens(good(0), approx)
    # 3 priming + 3 per message + the values
    assert total == 3 + 3 * 3 + sum(
        approx.count(v) for m in good(0)["messages"] for v in m.values()
    )  # type: ignore[attr-defined]
    assert assistant == approx.count(good(0)["messages"][2]["content"])  # type: ignore[index]
    # a real tokenizer.json (word-level, built here) is used when present, without torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    counter = token_counter(tmp_path)
    assert counter.name == "smollm2-135m-instruct"
    assert counter.count("hello world hello") == 3
