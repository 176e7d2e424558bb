"""Chat messages to prompt token ids, through the tokenizer's own chat template.

OpenAI messages are normalized first (text content parts joined, ``developer`` treated as
``system``, as OpenAI does for models without a developer role); anything the local models cannot
read (images, audio, files, tool calls) is refused with a 400 that names the offending field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

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


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the templated prompt, ending with the assistant generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidRequestError(
            "this local model has no chat template; it cannot serve chat completions",
            param="model",
            code="model_not_supported",
        )
    try:
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
    except Exception as exc:  # a template may raise on a role order it does not accept
        raise InvalidRequestError(
            f"the model's chat template rejected these messages: {exc}", param="messages"
        ) from exc
    if isinstance(ids, Mapping):  # some tokenizers return a BatchEncoding regardless
        ids = ids["input_ids"]
    return [int(t) for t in ids]  # type: ignore[arg-type, union-attr]
