"""The one translation between the Responses API and Chat Completions (wire/responses.py)."""

from __future__ import annotations

import pytest
from openai.types.responses import Response

from distillery.errors import InvalidRequestError
from distillery.wire import responses as wire

CALL = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a":1}'}


def test_input_as_items_and_messages() -> None:
    items = wire.input_items("hi")
    assert items[0]["type"] == "message" and items[0]["id"].startswith("msg_")
    assert items[0]["content"] == [{"type": "input_text", "text": "hi"}]
    conversation = wire.input_items(
        [
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
            CALL,
            {**CALL, "call_id": "call_2"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call_output", "call_id": "call_1", "output": "1"},
        ]
    )  # fmt: skip
    messages = wire.items_messages(conversation, instructions="be brief", strict=True)
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": "rules"},
        {"role": "user", "content": "ab"},
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "1"},
    ]  # fmt: skip


FILE_MESSAGE = {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}


@pytest.mark.parametrize(
    ("items", "param", "kept"),
    [
        ([{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}], "input[0].content[0]", [FILE_MESSAGE]),
        ([{"type": "item_reference", "id": "msg_1"}], "input[0].type", []),
        ([{"type": "web_search_call", "id": "ws_1"}], "input[0].type", []),
    ],
)  # fmt: skip
def test_what_a_local_model_cannot_read_is_named(
    items: list[dict[str, object]], param: str, kept: list[dict[str, object]]
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        wire.items_messages(wire.input_items(items), strict=True)
    assert info.value.param == param
    # a proxied exchange keeps them in its record (chat parts where chat has them)
    assert wire.items_messages(wire.input_items(items)) == kept


def test_parameters_take_the_chat_shape() -> None:
    body = {
        "model": "m",
        "max_output_tokens": 32,
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "f"},
        "temperature": 0,
    }  # fmt: skip
    chat = wire.chat_body(body, [{"role": "user", "content": "q"}], strict=True)
    assert chat["max_completion_tokens"] == 32 and chat["temperature"] == 0
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}  # fmt: skip
    assert chat["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}]  # fmt: skip
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    with pytest.raises(InvalidRequestError) as info:
        wire.chat_body({**body, "tools": [{"type": "image_generation"}]}, [], strict=True)
    assert info.value.param == "tools[0].type"
    assert wire.responses_param("messages[2].content") == "input[2].content"
    assert wire.responses_param("response_format") == "text.format"
    assert wire.responses_param("tools[1].function.parameters") == "tools[1].parameters"
    assert wire.responses_param("tool_choice.function.name") == "tool_choice.name"


def test_a_chat_completion_and_its_response_agree() -> None:
    completion = {
        "id": "chatcmpl-1",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }  # fmt: skip
    response = wire.response_from_chat(
        completion, {"model": "m"}, response_id="resp_abc", created_at=1, store=True, metadata=None
    )
    Response.model_validate(response)
    assert [i["type"] for i in response["output"]] == ["function_call"]
    assert response["usage"]["input_tokens"] == 5 and response["usage"]["total_tokens"] == 8
    back = wire.chat_from_response(response)
    assert back["choices"][0]["finish_reason"] == "tool_calls"
    assert (
        back["choices"][0]["message"]["tool_calls"]
        == completion["choices"][0]["message"]["tool_calls"]
    )  # type: ignore[index]
    assert back["usage"]["prompt_tokens"] == 5 and back["response"]["id"] == "resp_abc"

    cut = {**completion, "choices": [{"index": 0, "message": {"role": "assistant", "content": "par"}, "finish_reason": "length"}]}  # fmt: skip
    incomplete = wire.response_from_chat(
        cut, {"model": "m"}, response_id="resp_x", created_at=1, store=False, metadata={"k": "v"}
    )
    Response.model_validate(incomplete)
    assert incomplete["status"] == "incomplete"
    assert incomplete["incomplete_details"] == {"reason": "max_output_tokens"}
    assert incomplete["output"][0]["content"][0]["text"] == "par"
    assert wire.chat_from_response(incomplete)["choices"][0]["finish_reason"] == "length"


def test_validation_names_the_parameter() -> None:
    for body, param in [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": "x", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "x", "max_output_tokens": 15}, "max_output_tokens"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.name"),
    ]:  # fmt: skip
        with pytest.raises(InvalidRequestError) as info:
            wire.validate_create(body)
        assert info.value.param == param, body
