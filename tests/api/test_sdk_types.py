"""The responses of the endpoints issue 15 touched, validated against the openai SDK's own types
(``openai.types.X.model_validate``) with the absent-vs-null rule and no undeclared fields
(``tests/api/sdk_types.py``): embeddings, legacy completions (and their stream chunks), models
(list, retrieve, delete), files, stored completions (streamed too) and their messages, eval runs
and fine-tuning checkpoints."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types import Completion, CreateEmbeddingResponse, FileObject, Model, ModelDeleted
from openai.types.chat import ChatCompletion, ChatCompletionStoreMessage
from openai.types.evals import RunCreateResponse, RunRetrieveResponse
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from tests.api.conftest import EMBEDDING_MODEL, INSTRUCT_MODEL
from tests.api.sdk_types import check
from tests.support.ft import EXAMPLES, jsonl, wait_for

# distillery's own, documented additions
MODEL_EXTRAS = ("license", "license_file", "status", "loading")
STORED_EXTRAS = (  # a stored completion says its request's parameters and metadata
    "metadata",
    "request_id",
    "tool_choice",
    "seed",
    "top_p",
    "temperature",
    "presence_penalty",
    "frequency_penalty",
    "input_user",
    "tools",
    "response_format",
)


def _get(gateway: Any, path: str, **params: Any) -> Any:
    res = httpx.get(gateway.url + path, params=params, timeout=60)
    assert res.status_code == 200, res.text
    return res.json()


def _post(gateway: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gateway.url + path, json=body, timeout=120)


def _sse(res: httpx.Response) -> list[Any]:
    events = [line[6:] for line in res.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_embeddings(api_gateway: Any) -> None:
    for body in (
        {"model": EMBEDDING_MODEL, "input": ["a", "b"]},
        {"model": EMBEDDING_MODEL, "input": "a", "encoding_format": "float"},
    ):
        res = _post(api_gateway, "/v1/embeddings", body)
        assert res.status_code == 200, res.text
        check(CreateEmbeddingResponse, res.json(), nulls=False)  # passed through


@pytest.mark.local_model
def test_local_embeddings(api_gateway: Any) -> None:
    res = _post(api_gateway, "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": ["a"]})
    check(CreateEmbeddingResponse, res.json())


def test_legacy_completions(api_gateway: Any) -> None:
    body = {"model": INSTRUCT_MODEL, "prompt": "hi", "store": True}
    res = _post(api_gateway, "/v1/completions", body)
    check(Completion, res.json(), nulls=False)  # the upstream's answer, passed through
    stream = _post(api_gateway, "/v1/completions", {**body, "stream": True})
    chunks = _sse(stream)
    assert chunks
    assert {c["object"] for c in chunks} == {"text_completion"}
    ends = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    check(Completion, ends[-1], nulls=False)  # (the SDK's type has no null finish_reason)
    for stored in _get(api_gateway, "/v1/chat/completions")["data"]:
        check(ChatCompletion, stored, extra=STORED_EXTRAS, nulls=False)
        assert stored["choices"][0]["message"]["refusal"] is None


def test_models(api: openai.OpenAI, api_gateway: Any) -> None:
    listed = _get(api_gateway, "/v1/models")
    assert set(listed) == {"object", "data"}
    for model in listed["data"]:
        check(Model, model, extra=MODEL_EXTRAS)
        check(Model, _get(api_gateway, f"/v1/models/{model['id']}"), extra=MODEL_EXTRAS)
    ids = [m["id"] for m in listed["data"]]
    assert "all-minilm-l6-v2" in ids and "echo-1" in ids

    tuned = "ft:echo-1:acme:x:Q1w2e3"
    api_gateway.services.fine_tuned_models.register(tuned, base_model="echo-1", provider="fake")
    res = httpx.delete(f"{api_gateway.url}/v1/models/{tuned}", timeout=30)
    assert res.status_code == 200
    check(ModelDeleted, res.json())
    assert res.json() == {"id": tuned, "deleted": True, "object": "model"}


def test_files(api: openai.OpenAI, api_gateway: Any) -> None:
    clean = b"".join(  # no warnings: a system message in each of 10 examples
        orjson.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Route the question."},
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": a},
                ]
            }
        )
        + b"\n"
        for q, a in EXAMPLES[:10]
    )
    created = api.files.create(file=("train.jsonl", io.BytesIO(clean)), purpose="fine-tune")
    for body in (
        _get(api_gateway, f"/v1/files/{created.id}"),
        *_get(api_gateway, "/v1/files")["data"],
    ):
        check(FileObject, body)
        assert "status_details" not in body and "expires_at" not in body
    few = api.files.create(file=("few.jsonl", io.BytesIO(jsonl(EXAMPLES[:3]))), purpose="fine-tune")
    body = _get(api_gateway, f"/v1/files/{few.id}")
    check(FileObject, body)
    assert isinstance(body["status_details"], str)  # the warnings, when there are some


def test_stored_streamed_completion_and_messages(api: openai.OpenAI, api_gateway: Any) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
        {"role": "user", "content": "and?"},
    ]
    body = {"model": "echo-1", "messages": messages, "store": True}
    streamed = _post(api_gateway, "/v1/chat/completions", {**body, "stream": True})
    completion_id = _sse(streamed)[0]["id"]
    plain = _post(api_gateway, "/v1/chat/completions", body).json()
    for cid in (completion_id, plain["id"]):
        stored = _get(api_gateway, f"/v1/chat/completions/{cid}")
        # the stored object repeats the upstream's nulls (service_tier, logprobs...) as OpenAI
        # sends them; the message's required-nullable refusal must be there
        check(ChatCompletion, stored, extra=STORED_EXTRAS, nulls=False)
        message = stored["choices"][0]["message"]
        assert "refusal" in message and message["refusal"] is None

    page = _get(api_gateway, f"/v1/chat/completions/{completion_id}/messages")
    data = page["data"]
    assert [m["role"] for m in data] == ["system", "user", "assistant", "tool", "user"]
    for m in data:
        # the SDK's type says role "assistant" for every stored message (a generated type);
        # the role is checked apart
        check(ChatCompletionStoreMessage, {**m, "role": "assistant"}, extra=("tool_call_id",))
        assert "refusal" in m and "content" in m
        assert "annotations" not in m and "audio" not in m and "function_call" not in m
    assert "tool_calls" not in data[0] and data[2]["tool_calls"][0]["id"] == "call_1"
    assert data[1]["content"] == "Hello" and data[1]["content_parts"][0]["text"] == "Hello"
    assert "content_parts" not in data[0]
    assert data[3]["tool_call_id"] == "call_1" and "tool_call_id" not in data[0]


def test_eval_runs(api: openai.OpenAI, api_gateway: Any) -> None:
    ev = api.evals.create(
        name="shapes",
        data_source_config={
            "type": "custom",
            "item_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
        testing_criteria=[
            {
                "type": "string_check",
                "name": "same",
                "input": "{{item.q}}",
                "reference": "{{item.q}}",
                "operation": "eq",
            }
        ],
    )
    run = api.evals.runs.create(
        ev.id,
        data_source={
            "type": "jsonl",
            "source": {"type": "file_content", "content": [{"item": {"q": "x"}}]},
        },
    )
    stored = api.evals.runs.create(
        ev.id,
        data_source={"type": "completions", "source": {"type": "stored_completions"}},
    )
    for run_id in (run.id, stored.id):
        body = _get(api_gateway, f"/v1/evals/{ev.id}/runs/{run_id}")
        check(RunRetrieveResponse, body, extra=())
        RunCreateResponse.model_validate(body)
        ds = body["data_source"]
        for key in ("model", "input_messages", "sampling_params"):
            assert key not in ds, ds
        assert None not in ds.get("source", {}).values(), ds


def test_checkpoints(api: openai.OpenAI, api_gateway: Any) -> None:
    training = api.files.create(file=("t.jsonl", io.BytesIO(jsonl())), purpose="fine-tune")
    job = api.fine_tuning.jobs.create(model="gpt-4o", training_file=training.id)
    done = wait_for(api, job.id, timeout=120)
    assert done.status == "succeeded", done.error
    page = _get(api_gateway, f"/v1/fine_tuning/jobs/{job.id}/checkpoints")
    assert page["data"]
    for checkpoint in page["data"]:
        check(FineTuningJobCheckpoint, checkpoint)
        metrics = checkpoint["metrics"]
        assert metrics["valid_loss"] > 0  # measured by the provider
        assert "full_valid_loss" not in metrics  # not measured: absent, not null

    assert done.fine_tuned_model is not None
    deleted = api.models.delete(done.fine_tuned_model)
    assert deleted.deleted is True
    assert done.fine_tuned_model not in [m.id for m in api.models.list()]


def test_stored_message_without_refusal_gets_one(api_gateway: Any) -> None:
    """A completion stored before streams kept ``refusal`` (or from an upstream that leaves it
    out) is answered with ``refusal: null``."""
    from distillery.store.records import NewCompletion

    message = {"role": "assistant", "content": "old"}
    api_gateway.services.completions.insert_many(
        [
            NewCompletion(
                id="chatcmpl-old0001",
                created_at=1,
                model="echo-1",
                provider="fake",
                status="completed",
                stream=True,
                request={"model": "echo-1", "messages": [{"role": "user", "content": "x"}]},
                response={
                    "id": "chatcmpl-old0001",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "echo-1",
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                },
                error=None,
                metadata=None,
            )
        ]
    )
    stored = _get(api_gateway, "/v1/chat/completions/chatcmpl-old0001")
    check(ChatCompletion, stored, extra=STORED_EXTRAS, nulls=False)
    assert stored["choices"][0]["message"] == {
        "role": "assistant",
        "content": "old",
        "refusal": None,
    }
