"""Chat templates: one home for how local models turn messages into a prompt.

Serving (``serving/chat_template.py``) and training (``training/local/data.py``) both render and
tokenize through this module, and the template itself is chosen once, when the tokenizer is loaded
(:func:`distillery.weights.load_tokenizer` calls :func:`install`), so a model is always trained on
exactly the text it is later served.

The template of a model is, in order:

1. the ``chat_template`` setting of its local provider (Jinja text or a file), when set;
2. the tokenizer's own template;
3. its family's official format, for models that ship none (a pretrained checkpoint, a GGUF
   without ``tokenizer.chat_template``, such as the embedded Gemma 3 270M). The family comes from
   the special tokens of the vocabulary (a family's turn markers registered as single tokens),
   ``config.model_type`` deciding first which family is tried: Gemma, Llama 3, ChatML (Qwen),
   Phi-3 and Mistral. The templates below are the official ones, text only (no tools, no images).

A model of no known family keeps having no template: chat requests are then a 400 that says to set
``chat_template``.

The end-of-turn token of a template (``<end_of_turn>``, ``<|eot_id|>``, ``<|im_end|>``,
``<|end|>``) stops generation (:func:`end_of_turn_ids`) and is the last trained token of an
assistant answer (:func:`end_of_turn_tokens`).

No transformers import here: tokenizers are used through their methods only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Gemma 3 (google/gemma-3-*-it), text only: the system message is folded into the first user turn
# ("system\n\nuser"), the assistant's role is "model", contents are trimmed.
GEMMA = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\\n' }}
{%- endif -%}
"""

# Llama 3 (meta-llama/Meta-Llama-3-*-Instruct).
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

# ChatML as Qwen writes it (Qwen2/2.5/3 without tools, no default system message).
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Phi-3 / Phi-3.5 (microsoft/Phi-3.5-mini-instruct).
PHI3 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{ '<|system|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Mistral (mistralai/Mistral-7B-Instruct-v0.3): the system message is prepended to the last user
# message; an assistant turn ends with the end-of-sequence token.
MISTRAL = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.last and system_message is defined %}
            {{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + '[/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] | trim + eos_token }}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""


@dataclass(frozen=True)
class Family:
    """A model family's chat format."""

    name: str
    template: str
    markers: tuple[str, ...]  # turn markers: all single tokens in the family's vocabularies
    model_types: tuple[str, ...]  # ``config.model_type`` prefixes of the family


FAMILIES: tuple[Family, ...] = (
    Family("gemma", GEMMA, ("<start_of_turn>", "<end_of_turn>"), ("gemma",)),
    Family(
        "llama3", LLAMA3, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), ("llama",)
    ),
    Family("chatml", CHATML, ("<|im_start|>", "<|im_end|>"), ("qwen",)),
    Family("phi3", PHI3, ("<|user|>", "<|assistant|>", "<|end|>"), ("phi",)),
    Family("mistral", MISTRAL, ("[INST]", "[/INST]"), ("mistral", "mixtral")),
)
# Tokens that end a turn in the templates above (and in most templates models ship).
END_OF_TURN = ("<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>")


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int | None:
    """The id of ``token`` when the vocabulary has it as one token, else None."""
    try:
        ids = tokenizer.encode(token, add_special_tokens=False)
    except Exception:  # a tokenizer that cannot encode it has no such token
        return None
    return int(ids[0]) if len(ids) == 1 and ids[0] != tokenizer.unk_token_id else None


def model_type_of(folder: Path) -> str | None:
    """``model_type`` of the ``config.json`` in ``folder``, if any."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("model_type") if isinstance(config, dict) else None
    return value if isinstance(value, str) else None


def family_of(tokenizer: PreTrainedTokenizerBase, model_type: str | None) -> Family | None:
    """The family whose turn markers the vocabulary has (``model_type``'s family tried first);
    without any, ``model_type``'s family; None when neither is known."""
    kind = (model_type or "").lower()
    by_type = next((f for f in FAMILIES if kind.startswith(f.model_types)), None)
    ordered = [by_type, *(f for f in FAMILIES if f is not by_type)] if by_type else FAMILIES
    for family in ordered:
        if family is not None and all(_token_id(tokenizer, m) is not None for m in family.markers):
            return family
    return by_type


def install(
    tokenizer: PreTrainedTokenizerBase, model_type: str | None, override: str | None = None
) -> PreTrainedTokenizerBase:
    """Give ``tokenizer`` its chat template: ``override``, else its own, else its family's."""
    if override:
        tokenizer.chat_template = override
    elif not getattr(tokenizer, "chat_template", None):
        family = family_of(tokenizer, model_type)
        if family is not None:
            tokenizer.chat_template = family.template
    return tokenizer


def end_of_turn_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The end-of-turn tokens the tokenizer's template writes (single tokens of its vocabulary)."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str):
        return []
    return [t for t in END_OF_TURN if t in template and _token_id(tokenizer, t) is not None]


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Ids of :func:`end_of_turn_tokens`: generation stops on them as on end-of-sequence."""
    found = (_token_id(tokenizer, t) for t in end_of_turn_tokens(tokenizer))
    return {t for t in found if t is not None}


def render(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Any = None,
    add_generation_prompt: bool = False,
) -> str:
    """The templated text of ``messages``."""
    text = tokenizer.apply_chat_template(
        list(messages),  # type: ignore[arg-type]
        tools=tools,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    return str(text)


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of templated text (its special tokens already written by the template)."""
    return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, Any]], tools: Any = None
) -> list[int]:
    """The served prompt: ``messages`` templated with the generation prompt, then tokenized."""
    return encode(tokenizer, render(tokenizer, messages, tools=tools, add_generation_prompt=True))
