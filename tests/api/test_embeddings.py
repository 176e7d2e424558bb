"""``POST /v1/embeddings`` through the openai SDK: proxied to the fake upstream (openai and
azure providers) and answered locally by the real all-MiniLM-L6-v2 (``all-minilm-l6-v2``)."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse

from tests.api.conftest import EMBEDDING_MODEL, LOCAL_STUDENT

LOCAL = "all-minilm-l6-v2"


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (_norm(a) * _norm(b))


def test_proxied_to_the_provider_that_lists_the_model(api: openai.OpenAI, fake_openai) -> None:  # type: ignore[no-untyped-def]
    res = api.embeddings.create(model=EMBEDDING_MODEL, input=["hello world", "こんにちは"])
    assert res.model == EMBEDDING_MODEL
    assert [d.index for d in res.data] == [0, 1]
    assert len(res.data[0].embedding) == 8
    assert res.usage.prompt_tokens == 3
    sent = fake_openai.requests[-1]
    assert sent == {
        "model": EMBEDDING_MODEL,
        "input": ["hello world", "こんにちは"],
        "encoding_format": "base64",  # the SDK asks for base64 and decodes it itself
    }


def test_proxied_dimensions_and_float_encoding(api: openai.OpenAI, fake_openai) -> None:  # type: ignore[no-untyped-def]
    res = api.embeddings.create(
        model=EMBEDDING_MODEL, input="one", dimensions=4, encoding_format="float"
    )
    assert len(res.data[0].embedding) == 4
    assert fake_openai.requests[-1]["dimensions"] == 4


def test_proxied_token_arrays(api: openai.OpenAI, fake_openai) -> None:  # type: ignore[no-untyped-def]
    res = api.embeddings.create(model=EMBEDDING_MODEL, input=[[1, 2, 3], [4, 5]])
    assert len(res.data) == 2
    assert res.usage.prompt_tokens == 5
    assert fake_openai.requests[-1]["input"] == [[1, 2, 3], [4, 5]]


def test_azure_deployment(api: openai.OpenAI, fake_openai) -> None:  # type: ignore[no-untyped-def]
    res = api.embeddings.create(model="azure-gpt", input="azure text")
    assert len(res.data) == 1
    assert fake_openai.headers[-1]["api-key"] == "azure-secret-value-123456"


def test_upstream_errors_and_unknown_models(api: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        api.embeddings.create(model="no-such-embedder", input="x")
    assert err.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        api.embeddings.create(model="fail-400", input="x")
    assert "scripted failure 400" in str(bad.value)


def test_a_model_without_embeddings_is_a_400(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        api.embeddings.create(model=LOCAL_STUDENT, input="x")
    assert err.value.body["param"] == "model"  # type: ignore[index]
    assert err.value.body["code"] == "model_not_supported"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": EMBEDDING_MODEL}, "input"),
        ({"model": EMBEDDING_MODEL, "input": []}, "input"),
        ({"model": EMBEDDING_MODEL, "input": [""]}, "input[0]"),
        ({"model": EMBEDDING_MODEL, "input": ["a", 3]}, "input"),
        ({"model": EMBEDDING_MODEL, "input": {"text": "a"}}, "input"),
        ({"model": EMBEDDING_MODEL, "input": ["a"] * 2049}, "input"),
        ({"model": EMBEDDING_MODEL, "input": ["x" * 1_000_000] * 3}, "input"),
        ({"model": EMBEDDING_MODEL, "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": EMBEDDING_MODEL, "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": EMBEDDING_MODEL, "input": "a", "dimensions": "big"}, "dimensions"),
    ],
)
def test_invalid_requests_are_400_with_param(
    api_gateway: Any, body: dict[str, Any], param: str
) -> None:
    res = httpx.post(api_gateway.url + "/v1/embeddings", json=body, timeout=30)
    assert res.status_code == 400, res.text
    assert res.json()["error"]["param"] == param


@pytest.mark.local_model
def test_local_minilm(api: openai.OpenAI) -> None:
    texts = [
        "The cat sits on the mat.",
        "A cat is sitting on a mat.",
        "Quarterly revenue grew by ten percent.",
        "猫がマットの上に座っている。",
    ]
    res = api.embeddings.create(model=LOCAL, input=texts)  # the SDK asks for base64
    assert res.model == LOCAL
    vectors = [d.embedding for d in res.data]
    assert [len(v) for v in vectors] == [384] * 4
    assert all(abs(_norm(v) - 1.0) < 1e-4 for v in vectors)
    assert _cos(vectors[0], vectors[1]) > _cos(vectors[0], vectors[2]) + 0.3
    assert res.usage.prompt_tokens == res.usage.total_tokens > len(texts)

    floats = api.embeddings.create(model=LOCAL, input=texts[0], encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)
    same = api.embeddings.create(model=LOCAL, input=texts[0], dimensions=384)
    assert same.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)


@pytest.mark.local_model
def test_local_minilm_wire_format(api_gateway: Any) -> None:
    url = api_gateway.url + "/v1/embeddings"
    body = {"model": LOCAL, "input": "hello", "encoding_format": "base64"}
    raw = httpx.post(url, json=body, timeout=120).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    vector = list(struct.unpack(f"<{len(packed) // 4}f", packed))
    floats = httpx.post(url, json={"model": LOCAL, "input": "hello"}, timeout=120).json()
    CreateEmbeddingResponse.model_validate(floats)  # (the SDK decodes base64 before)
    assert vector == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)
    assert set(floats) == {"object", "data", "model", "usage"}
    assert floats["usage"] == {"prompt_tokens": 1, "total_tokens": 1}


@pytest.mark.local_model
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"input": [[101, 102]]}, "input"),
        ({"input": [1, 2, 3]}, "input"),
        ({"dimensions": 128}, "dimensions"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_local_minilm_refusals(api_gateway: Any, extra: dict[str, Any], param: str) -> None:
    body = {"model": LOCAL, "input": "hello", **extra}
    res = httpx.post(api_gateway.url + "/v1/embeddings", json=body, timeout=120)
    assert res.status_code == 400, res.text
    assert res.json()["error"]["param"] == param


def test_local_model_is_listed(api: openai.OpenAI) -> None:
    ids = [m.id for m in api.models.list()]
    assert LOCAL in ids
    assert api.models.retrieve(LOCAL).owned_by == "distillery"
