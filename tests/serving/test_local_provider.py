"""LocalProvider against the embedded student: OpenAI shapes, sampling, limits, structured output."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from distillery import weights
from distillery.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
)
from distillery.providers.base import Provider
from distillery.serving import LocalProvider

from .conftest import MODEL, chat, make_provider, run

pytestmark = pytest.mark.local_model

QUESTION = "What is the capital of France? Answer in one sentence."
NO_EOS = {"2": -100}  # the student's end-of-sequence token id, forbidden: runs to max_tokens


async def collect(provider: LocalProvider, body: dict[str, Any]) -> list[bytes]:
    return [chunk async for chunk in provider.stream(body)]


def parse_events(raw: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for event in raw:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        payload = event[len(b"data: ") : -2]
        out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


def content(response: dict[str, Any], index: int = 0) -> str:
    return str(response["choices"][index]["message"]["content"])


def test_is_a_provider(provider: LocalProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.kind == "local"
    assert [m.id for m in provider.models()] == [MODEL]
    assert provider.serves(MODEL)
    assert not provider.serves("gpt-4o")


def test_create_is_an_openai_chat_completion(provider: LocalProvider, model_dir: Path) -> None:
    response = run(provider.create(chat(QUESTION, temperature=0, max_tokens=20)))
    completion = ChatCompletion.model_validate(response)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    tokenizer = weights.load_tokenizer(weights.resolve_source(MODEL, model_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == len(prompt)
    assert 0 < usage.completion_tokens <= 20
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_chunks_are_openai_chunks_and_match_create(provider: LocalProvider) -> None:
    body = chat(QUESTION, temperature=0, max_tokens=20)
    expected = run(provider.create(body))
    events = parse_events(
        run(collect(provider, {**body, "stream": True, "stream_options": {"include_usage": True}}))
    )
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == content(expected)
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1
    assert finishing[0].choices[0].finish_reason == expected["choices"][0]["finish_reason"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert events[-2]["usage"] == expected["usage"]
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_field(provider: LocalProvider) -> None:
    events = parse_events(run(collect(provider, chat("Hi", max_tokens=3, stream=True))))
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] is not None


def test_max_tokens_gives_length(provider: LocalProvider) -> None:
    for limit in ("max_tokens", "max_completion_tokens"):
        response = run(provider.create(chat("Tell me a story.", logit_bias=NO_EOS, **{limit: 5})))
        assert response["choices"][0]["finish_reason"] == "length"
        assert response["usage"]["completion_tokens"] == 5


def test_stop_string_truncates_before_it(provider: LocalProvider) -> None:
    body = chat(QUESTION, temperature=0, max_tokens=20)
    full = content(run(provider.create(body)))
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[2]
    cut = full[: full.index(stop)]
    for value in (stop, [stop, "\u2603never"]):
        response = run(provider.create({**body, "stop": value}))
        assert content(response) == cut
        assert response["choices"][0]["finish_reason"] == "stop"
    streamed = parse_events(run(collect(provider, {**body, "stop": stop, "stream": True})))
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in streamed[:-1])
    assert text == cut


def test_temperature_zero_and_tiny_top_p_are_greedy(provider: LocalProvider) -> None:
    greedy = content(run(provider.create(chat(QUESTION, temperature=0, max_tokens=12))))
    nucleus = run(provider.create(chat(QUESTION, temperature=1.5, top_p=1e-9, max_tokens=12)))
    assert content(nucleus) == greedy


def test_seed_reproduces_and_n_gives_choices(provider: LocalProvider) -> None:
    body = chat("Invent a name for a cat.", temperature=1.3, seed=1234, n=3, max_tokens=16)
    first = run(provider.create(body))
    again = run(provider.create(body))
    texts = [content(first, i) for i in range(3)]
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert texts == [content(again, i) for i in range(3)]
    assert len(set(texts)) > 1  # the choices are sampled independently
    other = run(provider.create({**body, "seed": 99}))
    assert [content(other, i) for i in range(3)] != texts
    greedy = run(provider.create(chat(QUESTION, temperature=0, n=2, max_tokens=10)))
    assert content(greedy, 0) == content(greedy, 1)
    single = run(provider.create(chat(QUESTION, temperature=0, max_tokens=10)))
    assert greedy["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]  # counted once
    assert greedy["usage"]["completion_tokens"] % 2 == 0


def test_stream_with_n_choices(provider: LocalProvider) -> None:
    body = chat(QUESTION, temperature=0, n=2, max_tokens=8, stream=True)
    events = parse_events(run(collect(provider, body)))
    texts = ["", ""]
    reasons: list[str | None] = [None, None]
    for event in events[:-1]:
        ChatCompletionChunk.model_validate(event)
        choice = event["choices"][0]
        texts[choice["index"]] += choice["delta"].get("content") or ""
        reasons[choice["index"]] = choice["finish_reason"] or reasons[choice["index"]]
    assert texts[0] == texts[1] != ""
    assert None not in reasons


def test_json_object_is_valid_json(provider: LocalProvider) -> None:
    body = chat(
        'Describe a dog as JSON with the keys "name" and "age".',
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=80,
    )
    response = run(provider.create(body))
    assert response["choices"][0]["finish_reason"] == "stop", content(response)
    assert isinstance(json.loads(content(response)), dict)


SCHEMA = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "maxLength": 60},
        "category": {"type": "string", "enum": ["labour", "hr", "general", "accounting", "it"]},
    },
    "required": ["reason", "category"],
    "additionalProperties": False,
}


def test_json_schema_output_matches_the_schema(provider: LocalProvider) -> None:
    body = chat(
        "Route this question: my VPN does not connect. Reply in JSON.",
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "route", "schema": SCHEMA, "strict": True},
        },
        temperature=0.8,
        seed=7,
        n=2,
        max_tokens=120,
    )
    response = run(provider.create(body))
    for i in range(2):
        assert response["choices"][i]["finish_reason"] == "stop", content(response, i)
        jsonschema.validate(json.loads(content(response, i)), SCHEMA)
    events = parse_events(run(collect(provider, {**body, "n": 1, "stream": True})))
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    jsonschema.validate(json.loads(text), SCHEMA)


def test_structured_output_is_compact_json_in_schema_order(provider: LocalProvider) -> None:
    """As OpenAI emits it: `{"reason":"...","category":"..."}`, keys as the schema orders them."""
    schema = {"type": "json_schema", "json_schema": {"name": "route", "schema": SCHEMA}}
    cases = [
        ("Route this question: my VPN does not connect. Reply in JSON.", schema),
        ('Describe a dog as JSON with the keys "name" and "age".', {"type": "json_object"}),
    ]
    for question, response_format in cases:
        body = chat(question, response_format=response_format, temperature=0, max_tokens=120)
        response = run(provider.create(body))
        text = content(response)
        assert response["choices"][0]["finish_reason"] == "stop", text
        parsed = json.loads(text)
        assert text == json.dumps(parsed, ensure_ascii=False, separators=(",", ":"))
        if response_format is schema:
            assert list(parsed) == ["reason", "category"]  # SCHEMA's order, not sorted


def test_rows_allowing_few_tokens_get_only_their_logits(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the grammar allows few tokens (the keys, the enum) only their logits are made; the
    answers, greedy and sampled, are those of the whole head."""
    from distillery.serving import decode
    from distillery.serving.head import LastColumn

    schema = {"type": "json_schema", "json_schema": {"name": "route", "schema": SCHEMA}}
    greedy = chat("My VPN does not connect. Route it.", response_format=schema, max_tokens=80)
    greedy["temperature"] = 0
    sampled = {**greedy, "temperature": 0.9, "seed": 3, "n": 2}
    widths: list[int | None] = []
    whole_logits = LastColumn.logits

    def spy(self: LastColumn, rows: Any = None, ids: Any = None) -> Any:
        widths.append(None if ids is None else len(ids))
        return whole_logits(self, rows, ids)

    monkeypatch.setattr(LastColumn, "logits", spy)

    def answers() -> list[str]:
        return [
            c["message"]["content"]
            for b in (greedy, sampled)
            for c in run(provider.create(b))["choices"]
        ]

    few = answers()
    assert any(w is not None and w < 100 for w in widths), widths  # e.g. the enum's tokens
    assert None in widths  # the free-text reason: every token
    widths.clear()
    monkeypatch.setattr(decode, "SPARSE_SHARE", 10**12)  # no row allows so few
    assert answers() == few
    assert set(widths) == {None}


@pytest.mark.parametrize(
    ("response_format", "messages_word", "param"),
    [
        ({"type": "json_object"}, "Say hi.", "messages"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}},
            "JSON",
            "response_format",
        ),
        (
            {"type": "json_schema", "json_schema": {"schema": {}}},
            "JSON",
            "response_format.json_schema.name",
        ),
        ({"type": "xml"}, "JSON", "response_format.type"),
    ],
)
def test_bad_response_format_is_a_400(
    provider: LocalProvider, response_format: dict[str, Any], messages_word: str, param: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        run(provider.create(chat(messages_word, response_format=response_format, max_tokens=5)))
    assert info.value.status == 400
    assert info.value.param == param


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("logprobs", True),
        ("top_logprobs", 3),
        ("functions", [{"name": "f", "parameters": {}}]),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("prediction", {"type": "content", "content": "x"}),
        ("function_call", "auto"),
    ],
)
def test_unsupported_parameters_are_named(provider: LocalProvider, param: str, value: Any) -> None:
    with pytest.raises(InvalidRequestError) as info:
        run(provider.create(chat("Hi", **{param: value})))
    assert info.value.param == param
    assert info.value.code == "unsupported_parameter"
    assert param in info.value.message


def test_harmless_values_of_unsupported_parameters_are_accepted(provider: LocalProvider) -> None:
    body = chat("Hi", logprobs=False, tools=[], modalities=["text"], max_tokens=2, user="u1")
    ChatCompletion.model_validate(run(provider.create(body)))


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"top_p": -1}, "top_p"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"seed": "x"}, "seed"),
        ({"logit_bias": {"999999": 5}}, "logit_bias"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
def test_invalid_parameters_are_400s(
    provider: LocalProvider, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        run(provider.create(chat("Hi", **extra)))
    assert info.value.param == param


def test_image_content_is_refused(provider: LocalProvider) -> None:
    body = {
        "model": MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
    }
    with pytest.raises(InvalidRequestError) as info:
        run(provider.create(body))
    assert info.value.param == "messages[0].content[1].type"


def test_text_parts_and_developer_role_are_accepted(provider: LocalProvider) -> None:
    parts = [
        {"type": "text", "text": "What is the capital "},
        {"type": "text", "text": "of France?"},
    ]
    body = {
        "model": MODEL,
        "messages": [
            {"role": "developer", "content": "Answer briefly."},
            {"role": "user", "content": parts},
        ],
        "temperature": 0,
        "max_tokens": 10,
    }
    same = {
        **body,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    }
    first, second = run(provider.create(body)), run(provider.create(same))
    assert content(first) == content(second)
    assert first["usage"]["prompt_tokens"] == second["usage"]["prompt_tokens"]


def test_prompt_longer_than_the_context_is_context_length_exceeded(provider: LocalProvider) -> None:
    with pytest.raises(ContextLengthExceededError) as info:
        run(provider.create(chat("hello " * 9000, max_tokens=5)))
    error = info.value
    assert error.status == 400
    assert error.code == "context_length_exceeded"
    assert "8192" in error.message
    assert error.param == "messages"


def test_errors_raise_before_the_first_streamed_byte(provider: LocalProvider) -> None:
    with pytest.raises(InvalidRequestError):
        run(collect(provider, chat("Hi", logprobs=True, stream=True)))
    with pytest.raises(ContextLengthExceededError):
        run(collect(provider, chat("hello " * 9000, stream=True)))


def test_unknown_model_is_model_not_found(provider: LocalProvider) -> None:
    for model in ("gpt-4o", "ft:smollm2-135m-instruct:x:unknown"):
        with pytest.raises(NotFoundError) as info:
            run(provider.create({"model": model, "messages": [{"role": "user", "content": "Hi"}]}))
        assert info.value.status == 404
        assert info.value.code == "model_not_found"


def test_cancelled_stream_frees_its_sequence(provider: LocalProvider) -> None:
    async def read_a_little() -> None:
        stream = provider.stream(
            chat("Tell me a story.", logit_bias=NO_EOS, max_tokens=500, stream=True)
        )
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        for _ in range(500):  # the engine drops the row at its next step
            status = provider.status()[0]
            if status.running_sequences == 0 and status.waiting_requests == 0:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"sequence still running: {provider.status()}")

    run(read_a_little())


# -- a 128-token-context copy of the student, one sequence at a time, one queued ---------------


@pytest.fixture(scope="module")
def small(small_context_dir: Path, model_dir: Path) -> Any:
    p = make_provider(
        model_dir,
        models=["small"],
        paths={"small": str(small_context_dir)},
        max_batch_size=1,
        max_queue=1,
    )
    yield p
    run(p.aclose())


def small_chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "small", "messages": [{"role": "user", "content": content}], **extra}


def test_max_tokens_is_clamped_to_the_context(small: LocalProvider) -> None:
    response = run(small.create(small_chat("Tell me a story.", max_tokens=5000, logit_bias=NO_EOS)))
    usage = response["usage"]
    assert response["choices"][0]["finish_reason"] == "length"
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 128


def test_small_context_is_enforced(small: LocalProvider) -> None:
    with pytest.raises(ContextLengthExceededError) as info:
        run(small.create(small_chat("word " * 200)))
    assert "128" in info.value.message


def test_beyond_the_queue_requests_are_rate_limited(small: LocalProvider) -> None:
    async def three() -> list[Any]:
        body = small_chat("Tell me a story.", max_tokens=20, logit_bias=NO_EOS)
        return await asyncio.gather(*(small.create(body) for _ in range(3)), return_exceptions=True)

    results = run(three())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, results
    error = errors[0]
    assert isinstance(error, RateLimitError)
    assert error.status == 429
    assert error.headers == {"Retry-After": "1"}
    for r in results:
        if not isinstance(r, BaseException):
            ChatCompletion.model_validate(r)
    # capacity is back once they are done
    ChatCompletion.model_validate(run(small.create(small_chat("Hi", max_tokens=2))))
