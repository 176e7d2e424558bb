"""Chat templates for models that ship none: each family's format, set when the tokenizer loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from distillery import chat_templates, weights
from distillery.errors import InvalidRequestError
from distillery.providers.local_config import LocalProviderConfig
from distillery.serving.chat_template import render_prompt
from tests.support.tiny_models import (
    CHATML_SPECIALS,
    GEMMA_SPECIALS,
    PLAIN_SPECIALS,
    tiny_tokenizer_dir,
)

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
]


def load(folder: Path, chat_template: str | None = None) -> Any:
    return weights.load_tokenizer(weights.ModelSource("tiny", folder), chat_template=chat_template)


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_tokenizer_dir(tmp_path_factory.mktemp("gemma"), "gemma3_text", GEMMA_SPECIALS)


def test_a_gemma_without_a_template_gets_gemma_3s(gemma_dir: Path) -> None:
    tokenizer = load(gemma_dir)
    assert tokenizer.chat_template == chat_templates.GEMMA
    text = chat_templates.render(tokenizer, CHAT, add_generation_prompt=True)
    # Google's Gemma 3 template: bos, the system text folded into the first user turn
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nWhat is the capital of France?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    conversation = [*CHAT, {"role": "assistant", "content": " Paris. "}]
    assert chat_templates.render(tokenizer, conversation).endswith(
        "<start_of_turn>model\nParis.<end_of_turn>\n"
    )
    # served prompt ids: the template's special tokens are single tokens, bos written once
    ids = render_prompt(tokenizer, CHAT)
    assert ids == tokenizer.apply_chat_template(
        CHAT, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert chat_templates.end_of_turn_ids(tokenizer) == {end_of_turn}
    assert chat_templates.end_of_turn_tokens(tokenizer) == ["<end_of_turn>"]


@pytest.mark.parametrize(
    ("model_type", "specials", "family"),
    [
        ("qwen2", CHATML_SPECIALS, "chatml"),
        ("llama", CHATML_SPECIALS, "chatml"),  # a SmolLM-style llama: its ChatML tokens decide
        (
            "llama",
            (*PLAIN_SPECIALS, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
            "llama3",
        ),
        ("phi3", (*PLAIN_SPECIALS, "<|user|>", "<|assistant|>", "<|end|>", "<|system|>"), "phi3"),
        ("mistral", (*PLAIN_SPECIALS, "[INST]", "[/INST]"), "mistral"),
        ("gemma2", GEMMA_SPECIALS, "gemma"),
        ("mistral", PLAIN_SPECIALS, "mistral"),  # no markers in the vocabulary: model_type decides
        ("gpt2", CHATML_SPECIALS, "chatml"),  # unknown model_type: the markers decide
    ],
)
def test_the_family_comes_from_special_tokens_and_model_type(
    tmp_path: Path, model_type: str, specials: tuple[str, ...], family: str
) -> None:
    tokenizer = load(tiny_tokenizer_dir(tmp_path, model_type, specials))
    expected = next(f for f in chat_templates.FAMILIES if f.name == family)
    assert tokenizer.chat_template == expected.template
    text = chat_templates.render(tokenizer, CHAT, add_generation_prompt=True)
    assert "What is the capital of France?" in text and "Be brief." in text


def test_each_family_renders_its_official_format(tmp_path: Path) -> None:
    conversation = [*CHAT, {"role": "assistant", "content": "Paris."}]
    tokenizer = load(tiny_tokenizer_dir(tmp_path, "gpt2", PLAIN_SPECIALS))
    expected = {
        "llama3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>",
        "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n",
        "phi3": "<|system|>\nBe brief.<|end|>\n<|user|>\nWhat is the capital of France?<|end|>\n"
        "<|assistant|>\nParis.<|end|>\n</s>",
        "mistral": "<s>[INST] What is the capital of France?[/INST] Paris.</s>",
    }
    for family in chat_templates.FAMILIES:
        if family.name in expected:
            tokenizer.chat_template = family.template
            assert chat_templates.render(tokenizer, conversation) == expected[family.name]
    # Mistral: the system message goes with the last user message
    tokenizer.chat_template = chat_templates.MISTRAL
    assert chat_templates.render(tokenizer, CHAT, add_generation_prompt=True) == (
        "<s>[INST] Be brief.\n\nWhat is the capital of France?[/INST]"
    )


def test_a_model_of_no_known_family_is_a_clear_400(tmp_path: Path) -> None:
    tokenizer = load(tiny_tokenizer_dir(tmp_path, "gpt2", PLAIN_SPECIALS))
    assert not tokenizer.chat_template
    with pytest.raises(InvalidRequestError) as info:
        render_prompt(tokenizer, CHAT, "my-model")
    assert info.value.status == 400 and "'my-model'" in info.value.message
    assert "chat_template" in info.value.message


def test_the_setting_overrides_the_template(gemma_dir: Path) -> None:
    custom = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}<end_of_turn>{% endfor %}"
    tokenizer = load(gemma_dir, chat_template=custom)
    assert chat_templates.render(tokenizer, CHAT) == (
        "[system] Be brief.<end_of_turn>[user] What is the capital of France?<end_of_turn>"
    )
    assert chat_templates.end_of_turn_tokens(tokenizer) == ["<end_of_turn>"]


def test_a_template_that_raises_is_a_400_naming_the_model(gemma_dir: Path) -> None:
    tokenizer = load(gemma_dir)
    with pytest.raises(InvalidRequestError) as info:  # Gemma 3 wants user/model alternation
        render_prompt(tokenizer, [{"role": "user", "content": "a"}] * 2, "tiny-gemma")
    assert info.value.status == 400 and info.value.param == "messages"
    assert "'tiny-gemma'" in info.value.message and "alternate" in info.value.message
    broken = load(
        gemma_dir, chat_template="{% for m in messages %}{{ m.content | nope }}{% endfor %}"
    )
    with pytest.raises(InvalidRequestError, match="'tiny-gemma'"):
        render_prompt(broken, CHAT, "tiny-gemma")


def test_provider_setting_text_file_or_table(tmp_path: Path) -> None:
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    path = tmp_path / "chat.jinja"
    path.write_text(template, encoding="utf-8")
    one = LocalProviderConfig(models=["a", "b"], chat_template=template)
    assert one.chat_template_for("a") == one.chat_template_for("b") == template
    from_file = LocalProviderConfig(models=["a"], chat_template=str(path))
    assert from_file.chat_template_for("a") == template
    table = LocalProviderConfig(models=["a", "b"], chat_template={"a": str(path)})
    assert table.chat_template_for("a") == template and table.chat_template_for("b") is None
    assert LocalProviderConfig(models=["a"]).chat_template_for("a") is None
    with pytest.raises(ValidationError, match="neither a template nor a file"):
        LocalProviderConfig(models=["a"], chat_template=str(tmp_path / "missing.jinja"))


def test_a_saved_tokenizer_keeps_the_template_it_was_given(gemma_dir: Path, tmp_path: Path) -> None:
    """Fine-tune folders save the trainer's tokenizer: they are served with what they learned."""
    custom = "{% for m in messages %}{{ m['content'] }}<end_of_turn>{% endfor %}"
    load(gemma_dir, chat_template=custom).save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text((gemma_dir / "config.json").read_text())
    assert load(tmp_path).chat_template == custom
