"""OpenAI's Responses API through the official SDK against a live gateway: proxied to the fake
upstream's /v1/responses and answered by the embedded student, stored and retrievable,
conversations, structured outputs, function tools, errors, and stored responses used by datasets
and evals."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.responses import Response, ResponseInputItem
from pydantic import BaseModel

from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer

LOCAL = "smollm2-135m-instruct"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def _valid(obj: Any) -> Response:
    """The object as the SDK's strict type reads it (every required field there)."""
    data = (
        obj.model_dump(mode="json", exclude_unset=True, by_alias=True)
        if hasattr(obj, "model_dump")
        else obj
    )
    return Response.model_validate(data)


def _events(stream: Any) -> list[Any]:
    events = list(stream)
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    return events


# -- proxied to an upstream Responses API -------------------------------------------------------


def test_proxied_create_stream_retrieve_and_delete(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    resp = client.responses.create(
        model="echo-1",
        input="hello there",
        instructions="Be brief.",
        metadata={"prompt": "greeter"},
    )
    _valid(resp)
    assert resp.output_text == "echo: hello there" and resp.status == "completed"
    assert resp.store is True and resp.metadata == {"prompt": "greeter"}
    sent = fake_openai.requests[-1]
    assert sent["store"] is False and "metadata" not in sent  # the upstream keeps nothing
    assert sent["instructions"] == "Be brief." and sent["input"] == "hello there"

    again = client.responses.retrieve(resp.id)
    assert again.id == resp.id and again.output_text == resp.output_text
    assert again.usage is not None and again.usage.total_tokens == resp.usage.total_tokens  # type: ignore[union-attr]
    items = client.responses.input_items.list(resp.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].content[0].text == "hello there"  # type: ignore[union-attr]
    several = client.responses.create(
        model="echo-1",
        input=[
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
        ],
    )
    newest = client.responses.input_items.list(several.id, limit=2)
    assert [i.role for i in newest.data] == ["user", "assistant"] and newest.has_more  # type: ignore[union-attr]
    oldest = client.responses.input_items.list(several.id, order="asc", after=newest.data[0].id)
    assert oldest.data == [] and not oldest.has_more
    rest = client.responses.input_items.list(several.id, after=newest.data[-1].id)
    assert [i.content[0].text for i in rest.data] == ["one"]  # type: ignore[union-attr]

    # the conversation is distillery's: the upstream gets it whole, not an id it never stored
    follow = client.responses.create(
        model="echo-1", input="and again", previous_response_id=resp.id
    )
    assert follow.previous_response_id == resp.id and follow.output_text == "echo: and again"
    forwarded = fake_openai.requests[-1]
    assert "previous_response_id" not in forwarded and "instructions" not in forwarded
    roles = [(i.get("role"), i.get("type")) for i in forwarded["input"]]
    assert roles == [("user", "message"), ("assistant", "message"), ("user", "message")]
    assert forwarded["input"][1]["content"][0]["text"] == "echo: hello there"

    with client.responses.stream(
        model="echo-1",
        input="stream me",
        metadata={"prompt": "greeter"},
        previous_response_id=resp.id,
    ) as stream:
        events = _events(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
    assert final.output_text == "echo: stream me"
    # the lifecycle events say what the client asked for, not the upstream's store: false
    assert final.store is True and final.metadata == {"prompt": "greeter"}
    assert events[0].response.previous_response_id == resp.id  # type: ignore[union-attr]
    assert client.responses.retrieve(final.id).output_text == "echo: stream me"

    client.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="echo-1", input="x", previous_response_id=resp.id)
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_azure_deployments_and_upstream_errors(
    client: openai.OpenAI, fake_openai: FakeOpenAI, gateway: LiveServer
) -> None:
    resp = client.responses.create(model="azure-gpt", input="from azure")
    assert resp.output_text == "echo: from azure"
    assert fake_openai.headers[-1]["api-key"] == "azure-secret-value-123456"
    assert client.responses.retrieve(resp.id).output_text == "echo: from azure"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="fail-400", input="x", metadata={"case": "failing"})
    failed = client.chat.completions.list(metadata={"case": "failing"}).data
    assert len(failed) == 1 and failed[0].id.startswith("resp_")  # recorded, not a response
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(failed[0].id)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_raw_objects_follow_the_sdk_types(client: openai.OpenAI) -> None:
    from tests.api.sdk_types import check

    raw = client.responses.with_raw_response.create(model="echo-1", input="raw").http_response
    created = raw.json()
    check(Response, created, extra=("store",), nulls=False)  # nulls: where OpenAI sends them
    stored = httpx.get(f"{raw.url}/{created['id']}").json()
    check(Response, stored, extra=("store",), nulls=False)
    assert stored["output"] == created["output"] and "user" not in stored


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="echo-1", input="forget me", store=False)
    assert resp.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="echo-1", input="x", store=False, metadata={"a": "b"})
    assert info.value.body["param"] == "metadata"  # type: ignore[index]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_bad_requests_are_openai_errors(client: openai.OpenAI) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "echo-1", "input": "x", "previous_response_id": "resp_nope"}, "previous_response_id"),
        ({"model": "echo-1", "input": "x", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"model": "echo-1", "input": "x", "metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"model": "echo-1", "input": 3}, "input"),
        ({"model": "echo-1", "input": "x", "max_output_tokens": 4}, "max_output_tokens"),
        ({"model": "echo-1", "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"model": LOCAL, "input": "x", "tools": [{"type": "web_search_preview"}]}, "tools[0].type"),
        ({"model": LOCAL, "input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools[0].type"),
        ({"model": LOCAL, "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "https://example.com/a.png"}]}]}, "input[0].content[1]"),
        ({"model": LOCAL, "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"model": LOCAL, "input": "x", "reasoning": {"effort": "high"}}, "reasoning"),
    ]  # fmt: skip
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(**body)
        assert info.value.body["param"] == param, (body, info.value.body)  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_unknown")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")
    chat = client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "hi"}], store=True
    )
    with pytest.raises(openai.NotFoundError):  # a chat completion is not a response
        client.responses.retrieve(chat.id)


# -- answered by a local model ------------------------------------------------------------------


@pytest.mark.local_model
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_local_create_stream_and_conversation(client: openai.OpenAI) -> None:
    resp = client.responses.create(
        model=LOCAL,
        input="Say hello.",
        instructions="You are terse.",
        max_output_tokens=16,
        temperature=0,
        metadata={"case": "local-responses"},
    )
    _valid(resp)
    assert resp.model == LOCAL and resp.output[0].type == "message" and resp.output_text
    assert resp.usage is not None and 0 < resp.usage.output_tokens <= 16
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    if resp.usage.output_tokens == 16:
        assert resp.status == "incomplete"
        assert resp.incomplete_details is not None
        assert resp.incomplete_details.reason == "max_output_tokens"
    assert client.responses.retrieve(resp.id).output_text == resp.output_text

    # the same request streamed: the same greedy text, OpenAI's events in order
    with client.responses.stream(
        model=LOCAL, input="Say hello.", instructions="You are terse.", max_output_tokens=16,
        temperature=0,
    ) as stream:  # fmt: skip
        events = _events(stream)
    final = events[-1].response  # response.incomplete is final too (get_final_response wants
    # response.completed, as with OpenAI's own incomplete streams)
    _valid(final)
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed" if resp.status == "completed" else "response.incomplete",
    ]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == resp.output_text
    assert client.responses.retrieve(final.id).output_text == final.output_text
    item_ids = {e.item_id for e in events if e.type == "response.output_text.delta"}
    assert item_ids == {final.output[0].id}

    follow = client.responses.create(
        model=LOCAL, input="Once more.", previous_response_id=resp.id, max_output_tokens=16
    )
    stored = client.chat.completions.retrieve(follow.id)  # the chat exchange it amounts to
    messages = client.chat.completions.messages.list(follow.id).data
    assert [m.role for m in messages] == ["user", "assistant", "user"]  # instructions not kept
    assert messages[1].content == resp.output_text
    assert stored.choices[0].message.content == follow.output_text


@pytest.mark.local_model
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_local_json_schema_and_function_tools(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    }
    resp = client.responses.create(
        model=LOCAL,
        input="Name a city in France as JSON.",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
        max_output_tokens=40,
        temperature=0,
    )
    _valid(resp)
    jsonschema.validate(json.loads(resp.output_text), schema)
    assert resp.text is not None and resp.text.format.type == "json_schema"

    class City(BaseModel):
        city: str

    parsed = client.responses.parse(
        model=LOCAL, input="Name a city in Japan.", text_format=City, max_output_tokens=40,
        temperature=0,
    )  # fmt: skip
    assert parsed.output_parsed is not None and parsed.output_parsed.city

    call = client.responses.create(
        model=LOCAL,
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=40,
        temperature=0,
    )
    _valid(call)
    calls = [item for item in call.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["parameters"])  # type: ignore[arg-type]
    stored = client.chat.completions.retrieve(call.id)
    assert stored.choices[0].message.tool_calls is not None
    assert stored.choices[0].finish_reason == "tool_calls"

    result: list[ResponseInputItem] = [
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"sky": "sunny"}'}
    ]
    answer = client.responses.create(
        model=LOCAL, input=result, previous_response_id=call.id, tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none", max_output_tokens=16, temperature=0,
    )  # fmt: skip
    assert answer.output[0].type == "message"
    roles = [m.role for m in client.chat.completions.messages.list(answer.id).data]
    assert roles == ["user", "assistant", "tool"]

    with client.responses.stream(
        model=LOCAL, input="What is the weather in Paris?", tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=40,
        temperature=0,
    ) as stream:  # fmt: skip
        events = _events(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0].arguments == calls[0].arguments
    assert final.output[0].type == "function_call"


# -- stored responses are stored data -----------------------------------------------------------


def test_stored_responses_feed_datasets_and_evals(
    client: openai.OpenAI, gateway: LiveServer
) -> None:
    made = [
        client.responses.create(
            model="echo-1", input=f"question {i}", metadata={"prompt": "responses-ds"}
        )
        for i in range(4)
    ]
    client.chat.completions.create(  # a chat completion of the same prompt: not a response
        model="echo-1",
        messages=[{"role": "user", "content": "chat question"}],
        store=True,
        metadata={"prompt": "responses-ds"},
    )
    listed = client.chat.completions.list(metadata={"prompt": "responses-ds"})
    assert {r.id for r in made} <= {c.id for c in listed.data}

    http = httpx.Client(base_url=gateway.url + "/v1", timeout=60)
    r = http.post(
        "/distillery/datasets",
        json={"name": "from-responses", "source": {"metadata": {"prompt": "responses-ds"}}},
    )
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    assert version["stats"]["examples"] == 5
    items = http.get(
        f"/distillery/datasets/{r.json()['id']}/versions/1/items", params={"limit": 100}
    ).json()["data"]
    by_completion = {i["completion_id"]: i for i in items}
    example = by_completion[made[0].id]["example"]
    assert example["messages"][0] == {"role": "user", "content": "question 0"}
    assert example["messages"][-1]["content"] == "echo: question 0"

    ev = client.evals.create(
        name="responses",
        data_source_config={"type": "logs", "metadata": {"prompt": "responses-ds"}},
        testing_criteria=[
            {
                "type": "string_check",
                "name": "echoes",
                "input": "{{sample.output_text}}",
                "reference": "echo:",
                "operation": "like",
            }
        ],
    )
    run = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "responses",
            "source": {
                "type": "responses",
                "metadata": {"prompt": "responses-ds"},
                "model": "echo-1",
            },
        },
    )
    deadline = time.time() + 60
    while run.status in ("queued", "in_progress") and time.time() < deadline:
        time.sleep(0.2)
        run = client.evals.runs.retrieve(run.id, eval_id=ev.id)
    assert run.status == "completed", run
    assert run.result_counts.total == 4 and run.result_counts.passed == 4  # not the chat one
    output = client.evals.runs.output_items.list(run.id, eval_id=ev.id)
    assert {o.datasource_item["completion_id"] for o in output.data} == {r.id for r in made}

    generated = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "responses",
            "source": {"type": "responses", "metadata": {"prompt": "responses-ds"}, "limit": 2},
            "model": "echo-1",
            "input_messages": {"type": "item_reference", "item_reference": "item.input"},
            "sampling_params": {"temperature": 0, "text": {"format": {"type": "text"}}},
        },
    )
    while generated.status in ("queued", "in_progress") and time.time() < deadline:
        time.sleep(0.2)
        generated = client.evals.runs.retrieve(generated.id, eval_id=ev.id)
    assert generated.status == "completed", generated
    assert generated.result_counts.total == 2 and generated.result_counts.passed == 2
    with pytest.raises(openai.BadRequestError) as info:
        client.evals.runs.create(
            ev.id,
            data_source={"type": "responses", "source": {"type": "responses", "colour": "red"}},
        )
    assert info.value.body["param"] == "data_source.source.colour"  # type: ignore[index]
