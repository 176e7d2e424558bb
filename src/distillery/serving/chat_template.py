"""Chat messages to prompt token ids, through the model's chat template.

The template (the model's own, its family's, or the provider's ``chat_template`` setting) is chosen
when the tokenizer is loaded; rendering goes through :mod:`distillery.chat_templates`, as training
does.

OpenAI messages are normalized first (text content parts joined, ``developer`` treated as
``system``, as OpenAI does for models without a developer role); anything the local models cannot
read (images, audio, files, tool calls) is refused with a 400 that names the offending field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from distillery import chat_templates
from distillery.errors import InvalidRequestError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(
            f"Invalid type for '{where}.content': expected a string or an array of content parts.",
            param=f"{where}.content",
            code="invalid_type",
        )
    texts: list[str] = []
    for j, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise InvalidRequestError(
                f"Invalid type for '{where}.content[{j}]': expected an object.",
                param=f"{where}.content[{j}]",
                code="invalid_type",
            )
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise InvalidRequestError(
                f"Invalid content part '{where}.content[{j}]': type {kind!r} is not supported by "
                "local models (text only).",
                param=f"{where}.content[{j}].type",
                code="unsupported_value",
            )
    return "".join(texts)


def normalize_messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    """OpenAI chat messages -> ``[{"role", "content"}]`` with text content, or a 400."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise InvalidRequestError(
            "'messages' must be a non-empty array of message objects.", param="messages"
        )
    out: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise InvalidRequestError(
                f"Invalid type for '{where}': expected an object.", param=where, code="invalid_type"
            )
        role = message.get("role")
        if role not in _ROLES:
            raise InvalidRequestError(
                f"Invalid value for '{where}.role': {role!r} is not supported by local models "
                "(supported: system, developer, user, assistant).",
                param=f"{where}.role",
                code="unsupported_value",
            )
        for field in ("tool_calls", "function_call", "audio"):
            if message.get(field):
                raise InvalidRequestError(
                    f"Unsupported parameter: '{where}.{field}' is not supported by local models.",
                    param=f"{where}.{field}",
                    code="unsupported_parameter",
                )
        out.append({"role": _ROLES[role], "content": _content_text(message.get("content"), where)})
    return out


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], model: str = "this model"
) -> list[int]:
    """Token ids of the templated prompt, ending with the assistant generation prompt (the same
    ids the trainer puts before an answer: :func:`distillery.chat_templates.prompt_ids`).

    A model without a template, or whose template raises, is a 400 naming ``model``.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidRequestError(
            f"the local model {model!r} has no chat template and is of no known model family; "
            "it cannot serve chat completions until its provider sets `chat_template` "
            "(Jinja text or a file) in distillery.toml",
            param="model",
            code="model_not_supported",
        )
    try:
        return chat_templates.prompt_ids(tokenizer, messages)
    except Exception as exc:  # a template may raise on a role order it does not accept
        raise InvalidRequestError(
            f"the chat template of the local model {model!r} failed on these messages "
            f"({type(exc).__name__}: {exc})",
            param="messages",
        ) from exc
