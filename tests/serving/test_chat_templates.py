"""Serving models without a chat template (a tiny random Gemma 3) and the provider's setting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distillery import chat_templates, weights
from distillery.errors import InvalidRequestError
from distillery.providers.local_config import LocalProviderConfig
from distillery.serving import LocalProvider
from tests.support.tiny_models import tiny_gemma_dir

from .conftest import run

GEMMA, CUSTOM = "tiny-gemma", "tiny-custom"
# ChatML-like with Gemma's end-of-turn token, refusing system messages
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('no system messages here') }}{% endif %}"
    "{{ '<start_of_turn>' + m['role'] + '\\n' + m['content'] + '<end_of_turn>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Hello there"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gemma_dir(tmp_path_factory.mktemp("tiny-gemma"))


@pytest.fixture(scope="module")
def provider(folder: Path) -> Iterator[LocalProvider]:
    config = LocalProviderConfig(
        models=[GEMMA, CUSTOM],
        paths={GEMMA: str(folder), CUSTOM: str(folder)},
        chat_template={CUSTOM: TEMPLATE},
        device="cpu",
        threads=1,
    )
    p = LocalProvider("local", config, dtype="float32")
    yield p
    run(p.aclose())


def body(model: str, *messages: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": list(messages), "max_tokens": 4, "temperature": 0, **extra}


def test_a_gemma_without_a_template_serves_gemma_3s_format(
    provider: LocalProvider, folder: Path
) -> None:
    tokenizer = weights.load_tokenizer(weights.ModelSource(GEMMA, folder))
    expected = tokenizer(
        "<bos><start_of_turn>user\nBe brief.\n\nHello there<end_of_turn>\n<start_of_turn>model\n",
        add_special_tokens=False,
    )["input_ids"]
    response = run(provider.create(body(GEMMA, SYSTEM, USER)))
    assert response["usage"]["prompt_tokens"] == len(expected)
    assert response["choices"][0]["finish_reason"] == "length"  # random weights: no early stop


def test_the_end_of_turn_token_stops_generation(provider: LocalProvider, folder: Path) -> None:
    tokenizer = weights.load_tokenizer(weights.ModelSource(GEMMA, folder))
    (end_of_turn,) = chat_templates.end_of_turn_ids(tokenizer)
    assert end_of_turn != tokenizer.eos_token_id
    forced = body(GEMMA, USER, logit_bias={str(end_of_turn): 100})
    response = run(provider.create(forced))
    assert response["choices"][0]["finish_reason"] == "stop"
    assert response["choices"][0]["message"]["content"] == ""
    assert response["usage"]["completion_tokens"] == 0


def test_the_providers_template_overrides_and_a_raising_one_is_a_400(
    provider: LocalProvider, folder: Path
) -> None:
    tokenizer = weights.load_tokenizer(weights.ModelSource(CUSTOM, folder))
    expected = tokenizer(
        "<start_of_turn>user\nHello there<end_of_turn><start_of_turn>model\n",
        add_special_tokens=False,
    )["input_ids"]
    response = run(provider.create(body(CUSTOM, USER)))
    assert response["usage"]["prompt_tokens"] == len(expected)
    with pytest.raises(InvalidRequestError) as info:
        run(provider.create(body(CUSTOM, SYSTEM, USER)))
    assert info.value.status == 400 and info.value.param == "messages"
    assert f"'{CUSTOM}'" in info.value.message and "no system messages here" in info.value.message
    # the same provider keeps serving its other model, and this one too
    assert run(provider.create(body(GEMMA, USER)))["choices"][0]["message"]["content"] is not None
    assert run(provider.create(body(CUSTOM, USER)))["usage"]["prompt_tokens"] == len(expected)
