from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distillery import chat_templates, weights
from distillery.serving.chat_template import normalize_messages, render_prompt
from distillery.training.local.data import (
    IGNORE_INDEX,
    TrainingDataError,
    load_chat_dataset,
    parse_record,
    tokenize_messages,
)
from tests.support.tiny_models import GEMMA_SPECIALS, tiny_tokenizer_dir

from .chat_files import chat_record, write_jsonl

pytestmark = [pytest.mark.training, pytest.mark.usefixtures("training_home")]


def labelled_text(tokenizer: Any, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded runs of consecutive labelled tokens."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            if not previous:
                runs.append([])
            runs[-1].append(token)
            assert label == token
        previous = label != IGNORE_INDEX
    return [tokenizer.decode(run) for run in runs]


def test_loss_only_on_assistant_tokens(tokenizer: Any) -> None:
    record = chat_record("経費精算の締め日はいつですか？", "経理")
    messages, trainable, tools = parse_record(record, "line 1")
    example, truncated = tokenize_messages(tokenizer, messages, trainable, tools, max_length=512)
    assert not truncated
    answer = record["messages"][-1]["content"]
    assert labelled_text(tokenizer, example.input_ids, example.labels) == [answer + "<|im_end|>"]
    # the prompt (system + user + the assistant header) is never a target
    prompt = tokenizer.apply_chat_template(
        record["messages"][:-1], tokenize=False, add_generation_prompt=True
    )
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert all(label == IGNORE_INDEX for label in example.labels[:n_prompt])
    assert example.labels[n_prompt] != IGNORE_INDEX


def test_weight_zero_assistant_messages_get_no_loss(tokenizer: Any) -> None:
    record = {
        "messages": [
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "A bad first answer", "weight": 0},
            {"role": "user", "content": "Second question"},
            {"role": "assistant", "content": "A good second answer", "weight": 1},
            {"role": "user", "content": "Third question"},
            {"role": "assistant", "content": "Another good answer"},
        ]
    }
    messages, trainable, tools = parse_record(record, "line 1")
    assert trainable == [False, False, False, True, False, True]
    example, _ = tokenize_messages(tokenizer, messages, trainable, tools, max_length=512)
    runs = labelled_text(tokenizer, example.input_ids, example.labels)
    assert runs == ["A good second answer<|im_end|>", "Another good answer<|im_end|>"]
    assert "bad" not in "".join(runs)


def test_a_template_that_renders_tools_but_not_calls_gets_the_fallback_format(
    tokenizer: Any,
) -> None:
    """Its calls could not be trained or parsed in its own format (the native case is
    ``test_tool_calls_train_as_served_with_a_native_template``)."""
    template = tokenizer.chat_template
    tokenizer.chat_template = (
        "{% if tools %}TOOLS:{{ tools | map(attribute='function') | map(attribute='name') "
        "| join(',') }}\n{% endif %}" + template
    )
    try:
        record = {
            "messages": [
                {"role": "user", "content": "Weather in Tokyo?"},
                {"role": "assistant", "content": "Calling get_weather"},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        }
        messages, trainable, tools = parse_record(record, "line 1")
        example, _ = tokenize_messages(tokenizer, messages, trainable, tools, max_length=512)
        assert chat_templates.tool_format(tokenizer) == chat_templates.FALLBACK
        text = tokenizer.decode(example.input_ids)
        assert text.startswith("<|im_start|>system\n" + chat_templates.TOOLS_PROMPT)
        assert '{"name":"get_weather","parameters":{}}' in text
        runs = labelled_text(tokenizer, example.input_ids, example.labels)
        assert runs == ["Calling get_weather<|im_end|>"]
    finally:
        tokenizer.chat_template = template


def test_truncation_and_skipping(tokenizer: Any, tmp_path: Path) -> None:
    long_prompt = chat_record("word " * 300, "労務")
    short = chat_record("Short?", "総務")
    path = write_jsonl(tmp_path / "t.jsonl", [long_prompt, short])
    data = load_chat_dataset(path, tokenizer, max_length=64)
    # the long example loses its assistant part to truncation and is skipped, with a warning
    assert len(data.examples) == 1 and data.n_skipped == 1 and data.n_truncated == 1
    assert all(e.n_tokens <= 64 for e in data.examples)
    assert any("truncated" in w for w in data.warnings)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['{"messages": []}', "not json"], "line 2: invalid JSON"),
        (['{"prompt": "a", "completion": "b"}'], "prompt/completion"),
        (['{"messages": [{"role": "user", "content": "hi"}]}'], "no assistant message"),
        (
            ['{"messages": [{"role": "assistant", "content": "x", "weight": 2}]}'],
            "'weight' must be 0 or 1",
        ),
        (['{"messages": [{"role": "robot", "content": "x"}]}'], "unrecognized role"),
        (["", "  "], "has no examples"),
    ],
)
def test_bad_files_give_clear_errors(
    tokenizer: Any, tmp_path: Path, lines: list[str], expected: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrainingDataError) as info:
        load_chat_dataset(path, tokenizer, max_length=128)
    assert expected in info.value.message
    assert info.value.code == "invalid_training_file"


def test_missing_file(tokenizer: Any, tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="does not exist"):
        load_chat_dataset(tmp_path / "nope.jsonl", tokenizer, max_length=128)


def test_content_parts_and_developer_role(tokenizer: Any) -> None:
    record = {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}],
            },
            {"role": "assistant", "content": "Hi."},
        ]
    }
    messages, trainable, _ = parse_record(json.loads(json.dumps(record)), "line 1")
    assert messages[0]["role"] == "system"
    assert messages[1]["content"] == "Hello there"
    assert trainable == [False, False, True]


def served_prompt_and_answer(tokenizer: Any, record: dict[str, Any]) -> tuple[list[int], list[int]]:
    """What serving renders for the record's last answer, and that answer's own tokens (through
    the template's end-of-turn token)."""
    messages = record["messages"]
    prompt = render_prompt(tokenizer, normalize_messages(messages[:-1]))
    direct = tokenizer.apply_chat_template(
        normalize_messages(messages[:-1]), add_generation_prompt=True, tokenize=True
    )
    assert prompt == list(direct if isinstance(direct, list) else direct["input_ids"])
    (end_of_turn,) = chat_templates.end_of_turn_tokens(tokenizer)
    content = messages[-1]["content"]
    if content not in tokenizer.apply_chat_template(messages, tokenize=False):
        content = content.strip()  # Gemma's template trims contents
    answer = tokenizer(content + end_of_turn, add_special_tokens=False)["input_ids"]
    return prompt, list(answer)


def check_trained_as_served(tokenizer: Any, record: dict[str, Any]) -> None:
    messages, trainable, tools = parse_record(record, "line 1")
    example, _ = tokenize_messages(tokenizer, messages, trainable, tools, max_length=4096)
    prompt, answer = served_prompt_and_answer(tokenizer, record)
    assert example.input_ids == prompt + answer
    assert example.labels[len(prompt) :] == answer  # loss on the whole answer...
    end_of_turn = chat_templates.end_of_turn_ids(tokenizer)
    assert example.input_ids[-1] in end_of_turn  # ...which ends with the end-of-turn token
    if sum(trainable) == 1:
        assert set(example.labels[: len(prompt)]) == {IGNORE_INDEX}


RECORDS = [
    chat_record("経費精算の締め日はいつですか？", "経理"),
    {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": " The capital of France is Paris. "},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Hello there"},
            {"role": "assistant", "content": "Hello, how are you today?"},
            {"role": "user", "content": "Route this question: my VPN does not connect."},
            {"role": "assistant", "content": '{"reason":"VPN","category":"it"}'},
        ]
    },
]


@pytest.mark.parametrize("record", RECORDS)
def test_trained_ids_are_the_served_prompt_then_the_answer(
    tokenizer: Any, record: dict[str, Any]
) -> None:
    """The embedded SmolLM2 (its own ChatML template)."""
    check_trained_as_served(tokenizer, record)


@pytest.fixture(scope="module")
def gemma_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A Gemma-family tokenizer without a chat template (as the embedded Gemma 3 270M)."""
    folder = tiny_tokenizer_dir(tmp_path_factory.mktemp("gemma"), "gemma3_text", GEMMA_SPECIALS)
    tokenizer = weights.load_tokenizer(weights.ModelSource("tiny-gemma", folder))
    assert tokenizer.chat_template == chat_templates.GEMMA
    return tokenizer


@pytest.mark.parametrize("record", RECORDS)
def test_a_gemma_is_trained_on_what_it_is_served(
    gemma_tokenizer: Any, record: dict[str, Any]
) -> None:
    check_trained_as_served(gemma_tokenizer, record)
    messages, trainable, tools = parse_record(record, "line 1")
    example, _ = tokenize_messages(gemma_tokenizer, messages, trainable, tools, max_length=4096)
    runs = labelled_text(gemma_tokenizer, example.input_ids, example.labels)
    answers = [m["content"].strip() for m in record["messages"] if m["role"] == "assistant"]
    assert runs == [f"{a}<end_of_turn>" for a in answers]


def test_a_template_that_moves_the_system_message_still_trains_as_served(
    gemma_tokenizer: Any,
) -> None:
    """Mistral's template puts the system message in the last user turn only."""
    gemma_tokenizer.chat_template = chat_templates.MISTRAL
    try:
        record = {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Hello there"},
                {"role": "assistant", "content": "Hello, how are you today?"},
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
            ]
        }
        messages, trainable, tools = parse_record(record, "line 1")
        example, _ = tokenize_messages(gemma_tokenizer, messages, trainable, tools, max_length=512)
        prompt = render_prompt(gemma_tokenizer, normalize_messages(record["messages"][:-1]))
        answer = gemma_tokenizer(" Paris." + gemma_tokenizer.eos_token, add_special_tokens=False)
        assert example.input_ids == prompt + answer["input_ids"]
        runs = labelled_text(gemma_tokenizer, example.input_ids, example.labels)
        assert runs == [" Hello, how are you today?<eos>", " Paris.<eos>"]
    finally:
        gemma_tokenizer.chat_template = chat_templates.GEMMA


# -- tool calling: trained on the served prompt (with its tools) and the call text serving writes

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}},
]


def tool_call(name: str, arguments: str, call_id: str = "call_1") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


TOOL_RECORDS = [
    {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "tool_calls": [tool_call("get_weather", '{"city": "Paris"}')]},
        ],
    },
    {
        "tools": TOOLS,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "東京と大阪の天気は？"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    tool_call("get_weather", '{"city": "東京"}'),
                    tool_call("get_weather", '{"city":"大阪"}', "call_2"),
                ],
            },
        ],
    },
    {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "tool_calls": [tool_call("get_weather", '{"city": "Paris"}')]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
            {"role": "user", "content": "And 2 plus 3?"},
            {"role": "assistant", "tool_calls": [tool_call("add", '{"a": 2, "b": 3}', "call_2")]},
            {"role": "tool", "tool_call_id": "call_2", "content": "5"},
            {"role": "assistant", "content": "Sunny, and 5."},
        ],
    },
]


def check_tools_trained_as_served(tokenizer: Any, record: dict[str, Any]) -> list[str]:
    """The example is the served prompt (with the record's tools) then the last answer's text,
    calls written as the model's tool format writes them; returns the labelled runs."""
    messages, trainable, tools = parse_record(json.loads(json.dumps(record)), "line 1")
    example, _ = tokenize_messages(tokenizer, messages, trainable, tools, max_length=4096)
    *history, last = record["messages"]
    prompt = render_prompt(tokenizer, normalize_messages(history), tools=record["tools"])
    fmt = chat_templates.tool_format(tokenizer)
    if last.get("tool_calls"):
        calls = [(c["function"]["name"], c["function"]["arguments"]) for c in last["tool_calls"]]
        text = fmt.calls_text(calls)
    else:
        text = last["content"]
    (end_of_turn,) = chat_templates.end_of_turn_tokens(tokenizer)
    answer = chat_templates.encode(tokenizer, text + end_of_turn)
    assert example.input_ids == prompt + answer
    assert example.labels[len(prompt) :] == answer
    return labelled_text(tokenizer, example.input_ids, example.labels)


@pytest.mark.parametrize("record", TOOL_RECORDS)
def test_tool_calls_are_trained_as_served(tokenizer: Any, record: dict[str, Any]) -> None:
    runs = check_tools_trained_as_served(tokenizer, record)
    calls = [m for m in record["messages"] if m["role"] == "assistant"]
    assert len(runs) == len(calls)  # every assistant turn, calls included, is trained on
    assert runs[0].startswith('<tool_call>\n{"name":"get_weather","arguments":{"city":')
    assert all(run.endswith("<|im_end|>") for run in runs)


@pytest.mark.parametrize("record", TOOL_RECORDS)
def test_tool_calls_train_as_served_on_gemma(gemma_tokenizer: Any, record: dict[str, Any]) -> None:
    runs = check_tools_trained_as_served(gemma_tokenizer, record)
    assert all(run.endswith("<end_of_turn>") for run in runs)


@pytest.mark.parametrize("record", TOOL_RECORDS)
def test_tool_calls_train_as_served_with_a_native_template(
    tokenizer: Any, record: dict[str, Any]
) -> None:
    original = tokenizer.chat_template
    tokenizer.chat_template = (
        Path(__file__).parents[1] / "serving" / "qwen_tools.jinja"
    ).read_text(encoding="utf-8")
    try:
        assert chat_templates.tool_format(tokenizer).native
        runs = check_tools_trained_as_served(tokenizer, record)
        assert runs[0].startswith('<tool_call>\n{"name": "get_weather", "arguments": {"city": ')
    finally:
        tokenizer.chat_template = original


def test_bad_tool_calls_are_named() -> None:
    bad = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]},
        ]
    }
    with pytest.raises(TrainingDataError, match="tool call 0"):
        parse_record(bad, "line 3")
    with pytest.raises(TrainingDataError, match="tool 0"):
        parse_record({**TOOL_RECORDS[0], "tools": [{"type": "function"}]}, "line 3")
