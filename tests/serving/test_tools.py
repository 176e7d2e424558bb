"""Tool calling on local models (issue 15 item 2): tools in the prompt, calls constrained to the
functions' schemas, parsed into OpenAI's ``tool_calls``, streamed as OpenAI streams them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from distillery import chat_templates, weights
from distillery.errors import InvalidRequestError
from distillery.serving.tools import (
    ArgumentsDelta,
    CallStarted,
    ContentDelta,
    ToolCallParser,
    closed_schema,
    parse_tools,
    tool_grammar,
)
from tests.support.tiny_models import GEMMA_SPECIALS, tiny_tokenizer_dir

MODEL = "smollm2-135m-instruct"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}  # type: ignore[index]
PARIS = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
# Qwen 2.5's tool template (abridged to what matters here): tools in the system prompt, calls as
# <tool_call> JSON with spaced separators, results in a user turn
QWEN_TOOLS = (Path(__file__).parent / "qwen_tools.jinja").read_text(encoding="utf-8")
TOOL_CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21, "sky": "sunny"}'},
]


@pytest.fixture(scope="module")
def smol(model_dir: Path) -> Any:
    return weights.load_tokenizer(weights.ModelSource(MODEL, model_dir))


def validate(name: str, arguments: str) -> dict[str, Any]:
    value = json.loads(arguments)
    jsonschema.validate(value, SCHEMAS[name])
    return value  # type: ignore[no-any-return]


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ],
)  # fmt: skip
def test_bad_tool_parameters_are_400s_naming_them(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_tools(body)
    assert info.value.status == 400 and info.value.param == param


def test_tool_choice_defaults() -> None:
    assert parse_tools({"tool_choice": "auto"}) is None and parse_tools({"tools": []}) is None
    request = parse_tools({"tools": TOOLS})
    assert request is not None and request.choice == "auto" and request.parallel
    named = parse_tools(
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "add"}}}
    )
    assert named is not None and (named.choice, named.name, named.forced) == (
        "function",
        "add",
        True,
    )


def test_objects_are_closed_unless_the_schema_says_otherwise() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "string"}}},
            "c": {"type": "array", "items": {"type": "object", "properties": {}}},
            "d": {"type": "object", "additionalProperties": True, "properties": {}},
        },
        "allOf": [{"properties": {"a": {}}}],
    }
    closed = closed_schema(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["a"]["additionalProperties"] is False
    assert closed["properties"]["c"]["items"]["additionalProperties"] is False
    assert closed["properties"]["d"]["additionalProperties"] is True
    assert closed["allOf"] == schema["allOf"]


# -- formats and rendering ----------------------------------------------------------------------


def test_a_template_without_tools_gets_the_fallback_format(smol: Any) -> None:
    assert chat_templates.tool_format(smol) == chat_templates.FALLBACK
    text = chat_templates.render(smol, TOOL_CONVERSATION, tools=TOOLS, add_generation_prompt=True)
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\n" + chat_templates.TOOLS_PROMPT)
    assert json.dumps(WEATHER, separators=(",", ":")) in system
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name":"get_weather","arguments":{"city":"Paris"}}'
        "\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n"
        '{"temperature": 21, "sky": "sunny"}\n</tool_response><|im_end|>\n<|im_start|>assistant\n'
    ) in text


def test_gemma_alternates_roles_with_tool_results(tmp_path: Path) -> None:
    tokenizer = weights.load_tokenizer(
        weights.ModelSource("g", tiny_tokenizer_dir(tmp_path, "gemma3_text", GEMMA_SPECIALS))
    )
    conversation = [
        *TOOL_CONVERSATION,
        {"role": "tool", "tool_call_id": "call_2", "content": "second result"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    text = chat_templates.render(tokenizer, conversation, tools=TOOLS, add_generation_prompt=True)
    assert text.count("<start_of_turn>user") == 2  # results and the next question share a turn
    assert "second result\n</tool_response>\n\nAnd tomorrow?<end_of_turn>" in text
    assert text.startswith("<bos><start_of_turn>user\n" + chat_templates.TOOLS_PROMPT)


def test_a_template_with_tools_is_rendered_natively(smol: Any) -> None:
    original = smol.chat_template
    smol.chat_template = QWEN_TOOLS
    try:
        fmt = chat_templates.tool_format(smol)
        assert fmt.native and (fmt.prefix, fmt.suffix) == ("<tool_call>\n", "\n</tool_call>")
        assert (fmt.key_separator, fmt.item_separator) == (": ", ", ")
        assert fmt.between == "\n</tool_call>\n<tool_call>\n"
        text = chat_templates.render(smol, TOOL_CONVERSATION, tools=TOOLS)
        # the template's own rendering, with arguments as objects and tojson's separators
        assert '"description": "The current weather in a city."' in text
        assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in text
        assert fmt.calls_text([("get_weather", '{"city":"Paris"}')]) in text
    finally:
        smol.chat_template = original


def test_the_grammar_accepts_the_trained_call_text(smol: Any) -> None:
    """What training renders for an assistant's calls is what serving lets the model write."""
    import llguidance.hf
    from llguidance import LLMatcher

    ll = llguidance.hf.from_tokenizer(smol, eos_token=smol.eos_token_id)
    fmt = chat_templates.FALLBACK
    calls = [("get_weather", '{"city": "Paris", "unit": "celsius"}'), ("add", '{"a": 1, "b": 2}')]
    one, both = fmt.calls_text(calls[:1]), fmt.calls_text(calls)
    named = {"type": "function", "function": {"name": "get_weather"}}
    cases = [
        ("auto", True, [one, both, "Plain text.", ""], ["<tool_call>\nnot json"]),
        ("required", True, [one, both], ["Plain text."]),
        ("required", False, [one], [both]),
        (named, True, [one], [both, fmt.calls_text(calls[1:])]),
    ]
    for choice, parallel, accepted, refused in cases:
        request = parse_tools(
            {"tools": TOOLS, "tool_choice": choice, "parallel_tool_calls": parallel}
        )
        assert request is not None
        grammar = LLMatcher.grammar_from_lark(tool_grammar(request, fmt) or "")
        for text, ok in [(t, True) for t in accepted] + [(t, False) for t in refused]:
            matcher = LLMatcher(ll, grammar, log_level=0)
            ids = chat_templates.encode(smol, text)
            consumed = matcher.consume_tokens(ids) if ids else True
            assert (consumed and matcher.is_accepting()) is ok, (choice, parallel, text)


def test_the_parser_streams_calls_and_holds_back_a_possible_marker() -> None:
    fmt = chat_templates.FALLBACK
    text = fmt.calls_text([("get_weather", '{"city":"Paris"}'), ("add", '{"a":1,"b":22}')])
    parser = ToolCallParser(fmt, forced=False)
    events = [e for ch in text for e in parser.feed(ch)]
    assert [e.call.name for e in events if isinstance(e, CallStarted)] == ["get_weather", "add"]
    for i, call in enumerate(parser.calls):
        fragments = "".join(
            e.text for e in events if isinstance(e, ArgumentsDelta) and e.index == i
        )
        assert fragments == call.arguments and call.complete
        assert call.id.startswith("call_")
    assert [c.arguments for c in parser.calls] == ['{"city":"Paris"}', '{"a":1,"b":22}']
    assert parser.content is None and not any(isinstance(e, ContentDelta) for e in events)

    text_parser = ToolCallParser(fmt, forced=False)
    assert text_parser.feed("<tool") == []  # might still become a call
    assert text_parser.feed("box is") == [ContentDelta("<toolbox is")]
    assert text_parser.content == "<toolbox is" and text_parser.calls == []
    short = ToolCallParser(fmt, forced=False)
    assert short.feed("<") == [] and short.finish() == [ContentDelta("<")]


# -- the embedded student through the SDK -------------------------------------------------------


@pytest.mark.local_model
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_tool_choices_through_the_sdk(client: openai.OpenAI) -> None:
    named = client.chat.completions.create(
        model=MODEL,
        messages=PARIS,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40,
        temperature=0,
    )
    ChatCompletion.model_validate(named.model_dump())
    choice = named.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert validate("get_weather", call.function.arguments)["city"]  # type: ignore[union-attr]

    required = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 2 plus 3?"}],
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=40,
        temperature=0,
    )
    (call,) = required.choices[0].message.tool_calls or []
    assert required.choices[0].finish_reason == "tool_calls"
    validate(call.function.name, call.function.arguments)  # type: ignore[union-attr]

    none = client.chat.completions.create(
        model=MODEL,
        messages=PARIS,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="none",
        max_tokens=12,
        temperature=0,
    )
    assert none.choices[0].message.tool_calls is None
    assert isinstance(none.choices[0].message.content, str)
    assert none.choices[0].finish_reason in ("stop", "length")

    auto = client.chat.completions.create(
        model=MODEL,
        messages=PARIS,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        max_tokens=40,
        temperature=0,
    )
    message = auto.choices[0].message
    if message.tool_calls:  # either a valid call, or text that is no call
        assert message.content is None
        for call in message.tool_calls:
            validate(call.function.name, call.function.arguments)  # type: ignore[union-attr]
    else:
        assert isinstance(message.content, str) and "<tool_call>" not in message.content

    # streamed, the call assembles into the same call (and is stored as one)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=PARIS,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40,
        temperature=0,
        stream=True,
        store=True,
    )
    chunks = [ChatCompletionChunk.model_validate(c.model_dump()) for c in stream]
    deltas = [c.choices[0] for c in chunks if c.choices]
    first = deltas[0].delta
    assert first.role == "assistant" and first.content is None and first.tool_calls
    head = first.tool_calls[0]
    assert head.index == 0 and head.id and head.function and head.function.name == "get_weather"
    assert all(not d.delta.tool_calls or not d.delta.tool_calls[0].id for d in deltas[1:])
    arguments = "".join(
        d.delta.tool_calls[0].function.arguments or ""
        for d in deltas
        if d.delta.tool_calls and d.delta.tool_calls[0].function
    )
    assert arguments == named.choices[0].message.tool_calls[0].function.arguments  # type: ignore[index,union-attr]
    assert deltas[-1].finish_reason == "tool_calls"
    stored = client.chat.completions.retrieve(chunks[0].id)
    (kept,) = stored.choices[0].message.tool_calls or []
    assert kept.id == head.id and kept.function.arguments == arguments  # type: ignore[union-attr]
    assert stored.choices[0].finish_reason == "tool_calls"


@pytest.mark.local_model
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_conversation_with_a_tool_result(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL,
        messages=PARIS,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=40,
        temperature=0,
    )
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    followup = client.chat.completions.create(
        model=MODEL,
        messages=[
            *PARIS,
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
        ],  # type: ignore[list-item]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="none",
        max_tokens=16,
        temperature=0,
    )
    answer = followup.choices[0].message
    assert answer.tool_calls is None and answer.content
    assert followup.usage is not None and first.usage is not None
    assert followup.usage.prompt_tokens > first.usage.prompt_tokens

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL,
            messages=[*PARIS, {"role": "tool", "content": "no id"}],  # type: ignore[list-item]
            max_tokens=4,
        )
    assert "tool_call_id" in str(info.value)


@pytest.mark.local_model
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_schema_that_cannot_be_compiled_is_a_400(client: openai.OpenAI) -> None:
    broken = {
        "type": "function",
        "function": {
            "name": "broken",
            "parameters": {"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}},
        },
    }
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL,
            messages=PARIS,  # type: ignore[arg-type]
            tools=[broken],  # type: ignore[list-item]
            tool_choice="required",
            max_tokens=4,
        )
    assert info.value.body["param"] == "tools"  # type: ignore[index]


@pytest.mark.local_model
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_gemma_calls_a_named_function(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="gemma-3-270m",
        messages=[{"role": "user", "content": "東京の天気を摂氏で教えて。"}],
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40,
        temperature=0,
    )
    (call,) = response.choices[0].message.tool_calls or []
    assert response.choices[0].finish_reason == "tool_calls"
    validate("get_weather", call.function.arguments)  # type: ignore[union-attr]


@pytest.mark.local_model
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_langchain_bind_tools(gateway: Any) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    llm = langchain_openai.ChatOpenAI(
        model=MODEL,
        base_url=gateway.url + "/v1",
        api_key="unused",
        temperature=0,
        max_tokens=32,
        max_retries=0,
    )
    message = llm.bind_tools([add], tool_choice="add").invoke("What is 2 plus 3?")
    (call,) = message.tool_calls
    assert call["name"] == "add" and set(call["args"]) == {"a", "b"}
    assert all(isinstance(v, int) for v in call["args"].values())
    assert add.invoke(call["args"]) == call["args"]["a"] + call["args"]["b"]


@pytest.mark.local_model
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_instructor_tools_mode(client: openai.OpenAI) -> None:
    """instructor 1.17 pins jiter<0.15 and rich<15, which openai and typer have outgrown: it is not
    in the dev extras, ``make install`` puts it in without its pins (``--no-deps``), and this test
    skips where it is absent."""
    instructor = pytest.importorskip("instructor")
    from pydantic import BaseModel, Field

    class Weather(BaseModel):
        city: str = Field(max_length=20)
        unit: str = Field(pattern="^(celsius|fahrenheit)$")

    patched = instructor.from_openai(client, mode=instructor.Mode.TOOLS)
    weather = patched.chat.completions.create(
        model=MODEL,
        response_model=Weather,
        messages=PARIS,
        max_tokens=40,
        temperature=0,
        max_retries=0,
    )
    assert isinstance(weather, Weather) and weather.city


@pytest.mark.local_model
def test_a_native_tools_template_is_served_in_its_own_format(model_dir: Path) -> None:
    """The student with Qwen 2.5's tools template: calls generated with its spaced separators,
    parsed back; n choices each get their own call."""
    from distillery.providers.local_config import LocalProviderConfig
    from distillery.serving import LocalProvider

    from .conftest import run

    config = LocalProviderConfig(
        models=[MODEL],
        paths={MODEL: str(model_dir)},
        chat_template={MODEL: QWEN_TOOLS},
        threads=1,
    )
    provider = LocalProvider("local", config)
    try:
        body = {
            "model": MODEL,
            "messages": PARIS,
            "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "max_tokens": 40,
            "temperature": 0.8,
            "seed": 3,
            "n": 2,
        }
        response = ChatCompletion.model_validate(run(provider.create(body)))
        for choice in response.choices:
            (call,) = choice.message.tool_calls or []
            assert choice.finish_reason == "tool_calls"
            assert call.function.arguments.startswith('{"city": "')  # type: ignore[union-attr]
            validate("get_weather", call.function.arguments)  # type: ignore[union-attr]
    finally:
        run(provider.aclose())


def test_auto_with_a_response_format_is_that_document_or_calls(smol: Any) -> None:
    import llguidance.hf
    from llguidance import LLMatcher

    ll = llguidance.hf.from_tokenizer(smol, eos_token=smol.eos_token_id)
    request = parse_tools({"tools": TOOLS})
    assert request is not None
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    fmt = chat_templates.FALLBACK
    grammar = LLMatcher.grammar_from_lark(tool_grammar(request, fmt, schema) or "")
    for text, ok in [
        ('{"answer":"Paris"}', True),
        (fmt.calls_text([("add", '{"a":1,"b":2}')]), True),
        ("Paris", False),
    ]:
        matcher = LLMatcher(ll, grammar, log_level=0)
        consumed = matcher.consume_tokens(chat_templates.encode(smol, text))
        assert (consumed and matcher.is_accepting()) is ok, text
