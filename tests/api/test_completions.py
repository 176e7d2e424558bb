"""The legacy ``POST /v1/completions`` through the openai SDK: proxied to the fake upstream
(openai and azure providers), streamed and not, captured with ``store`` like a chat completion."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion

from tests.api.conftest import INSTRUCT_MODEL, LOCAL_STUDENT


def _stored(api_gateway: Any) -> list[Any]:
    return api_gateway.services.completions.list(limit=100).data  # type: ignore[no-any-return]


def test_proxied_not_stored_by_default(api: openai.OpenAI, api_gateway: Any, fake_openai) -> None:  # type: ignore[no-untyped-def]
    res = api.completions.create(model=INSTRUCT_MODEL, prompt="Say hi", max_tokens=5)
    assert isinstance(res, Completion)
    assert res.object == "text_completion"
    assert res.choices[0].text == "echo: Say hi"
    assert res.usage is not None and res.usage.total_tokens > 0
    assert fake_openai.requests[-1] == {
        "model": INSTRUCT_MODEL,
        "prompt": "Say hi",
        "max_tokens": 5,
    }
    assert _stored(api_gateway) == []


def test_stored_like_a_chat_completion(api: openai.OpenAI, api_gateway: Any, fake_openai) -> None:  # type: ignore[no-untyped-def]
    res = api.completions.create(
        model=INSTRUCT_MODEL,
        prompt="Translate: 猫",
        extra_body={"store": True, "metadata": {"app": "legacy"}},
    )
    sent = fake_openai.requests[-1]
    assert "store" not in sent and "metadata" not in sent
    stored = api.chat.completions.retrieve(res.id)
    assert isinstance(stored, ChatCompletion)
    assert stored.id == res.id
    assert stored.choices[0].message.content == "echo: Translate: 猫"
    assert stored.choices[0].message.refusal is None
    assert stored.usage is not None and stored.usage.prompt_tokens == res.usage.prompt_tokens  # type: ignore[union-attr]
    listed = api.chat.completions.list(metadata={"app": "legacy"})
    assert [c.id for c in listed.data] == [res.id]
    messages = api.chat.completions.messages.list(res.id)
    assert [(m.role, m.content) for m in messages.data] == [("user", "Translate: 猫")]
    record = api_gateway.services.completions.get(res.id)
    assert record.request["prompt"] == "Translate: 猫"
    assert record.response["text_completion"]["object"] == "text_completion"


def test_streamed_and_stored(api: openai.OpenAI, api_gateway: Any) -> None:
    stream = api.completions.create(
        model=INSTRUCT_MODEL,
        prompt="stream me please",
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"store": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "echo: stream me please"
    ids = {c.id for c in chunks}
    assert len(ids) == 1
    usage = chunks[-1].usage
    assert usage is not None
    stored = api.chat.completions.retrieve(ids.pop())
    assert stored.choices[0].message.content == text
    assert stored.choices[0].finish_reason == "stop"
    assert stored.usage is not None and stored.usage.total_tokens == usage.total_tokens
    record = api_gateway.services.completions.get(stored.id)
    assert record.stream is True


def test_streamed_not_stored(api: openai.OpenAI, api_gateway: Any) -> None:
    chunks = list(api.completions.create(model=INSTRUCT_MODEL, prompt="a b", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: a b"
    assert _stored(api_gateway) == []


def test_several_prompts_stored_one_record_each(api: openai.OpenAI, api_gateway: Any) -> None:
    res = api.completions.create(
        model=INSTRUCT_MODEL, prompt=["one", "two"], n=2, extra_body={"store": True}
    )
    assert [c.text for c in res.choices] == ["echo: one"] * 2 + ["echo: two"] * 2
    records = _stored(api_gateway)
    assert len(records) == 2
    by_prompt = {r.request["prompt"]: r for r in records}
    two = by_prompt["two"].to_chat_completion()
    assert [c["index"] for c in two["choices"]] == [0, 1]
    assert {c["message"]["content"] for c in two["choices"]} == {"echo: two"}


def test_azure_deployment(api: openai.OpenAI, fake_openai) -> None:  # type: ignore[no-untyped-def]
    res = api.completions.create(model="azure-gpt", prompt="hello azure")
    assert res.choices[0].text == "echo: hello azure"
    assert fake_openai.headers[-1]["api-key"] == "azure-secret-value-123456"


def test_upstream_failure_is_recorded(api: openai.OpenAI, api_gateway: Any) -> None:
    gateway_config = api_gateway.services.config.providers["upstream"]
    gateway_config.models.append("fail-400")
    api_gateway.services.providers.get("upstream").add_model("fail-400")
    with pytest.raises(openai.BadRequestError):
        api.completions.create(model="fail-400", prompt="x", extra_body={"store": True})
    (record,) = _stored(api_gateway)
    assert record.status == "failed"
    assert record.error["status"] == 400


def test_local_models_are_refused(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        api.completions.create(model=LOCAL_STUDENT, prompt="x")
    assert err.value.body["code"] == "model_not_supported"  # type: ignore[index]
    assert err.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        api.completions.create(model="no-such-model", prompt="x")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x"}, "model"),
        ({"model": INSTRUCT_MODEL}, "prompt"),
        ({"model": INSTRUCT_MODEL, "prompt": {"a": 1}}, "prompt"),
        ({"model": INSTRUCT_MODEL, "prompt": "x", "stream": "yes"}, "stream"),
        ({"model": INSTRUCT_MODEL, "prompt": "x", "metadata": {"k": "v"}}, "metadata"),
        (
            {"model": INSTRUCT_MODEL, "prompt": "x", "store": True, "metadata": {"k": 1}},
            "metadata.k",
        ),
    ],
)
def test_invalid_requests(api_gateway: Any, body: dict[str, Any], param: str) -> None:
    res = httpx.post(api_gateway.url + "/v1/completions", json=body, timeout=30)
    assert res.status_code == 400, res.text
    assert res.json()["error"]["param"] == param
