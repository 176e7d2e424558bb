"""Chat messages to prompt token ids, through the model's chat template.

The template (the model's own, its family's, or the provider's ``chat_template`` setting) is chosen
when the tokenizer is loaded; rendering goes through :mod:`distillery.chat_templates`, as training
does.

OpenAI messages are normalized first (text content parts joined, ``developer`` treated as
``system``, as OpenAI does for models without a developer role; assistant ``tool_calls`` and
``tool`` results kept, for the template or the fallback tool format to render); anything the local
models cannot read (images, audio, files, legacy ``function_call``) is refused with a 400 that
names the offending field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from distillery import chat_templates
from distillery.errors import InvalidRequestError
from distillery.wire.content import content_text, first_non_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


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
    other = first_non_text(content)
    if other is not None:
        j, kind = other
        if not isinstance(content[j], Mapping):
            raise InvalidRequestError(
                f"Invalid type for '{where}.content[{j}]': expected an object.",
                param=f"{where}.content[{j}]",
                code="invalid_type",
            )
        raise InvalidRequestError(
            f"Invalid content part '{where}.content[{j}]': type {kind!r} is not supported by "
            "local models (text only).",
            param=f"{where}.content[{j}].type",
            code="unsupported_value",
        )
    return content_text(content)


def _tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls``, checked: ``[{"id", "type", "function": {"name",
    "arguments"}}]``."""
    if not isinstance(value, list):
        raise InvalidRequestError(
            f"Invalid type for '{where}.tool_calls': expected an array.",
            param=f"{where}.tool_calls",
            code="invalid_type",
        )
    calls = []
    for j, call in enumerate(value):
        at = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if (
            not isinstance(call, Mapping)
            or call.get("type", "function") != "function"
            or not isinstance(function, Mapping)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments"), str)
        ):
            raise InvalidRequestError(
                f"Invalid value for '{at}': expected {{'id', 'type': 'function', 'function': "
                "{'name', 'arguments'}}, the arguments a JSON string.",
                param=at,
                code="invalid_value",
            )
        calls.append(
            {
                "id": str(call.get("id") or f"call_{j}"),
                "type": "function",
                "function": {"name": function["name"], "arguments": function["arguments"]},
            }
        )
    return calls


def normalize_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """OpenAI chat messages -> ``[{"role", "content"}]`` with text content (plus ``tool_calls``
    on assistant messages and ``tool_call_id`` on tool results), or a 400."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise InvalidRequestError(
            "'messages' must be a non-empty array of message objects.", param="messages"
        )
    out: list[dict[str, Any]] = []
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
                "(supported: system, developer, user, assistant, tool).",
                param=f"{where}.role",
                code="unsupported_value",
            )
        for field in ("function_call", "audio"):
            if message.get(field):
                raise InvalidRequestError(
                    f"Unsupported parameter: '{where}.{field}' is not supported by local models.",
                    param=f"{where}.{field}",
                    code="unsupported_parameter",
                )
        item: dict[str, Any] = {
            "role": _ROLES[role],
            "content": _content_text(message.get("content"), where),
        }
        if message.get("tool_calls"):
            if role != "assistant":
                raise InvalidRequestError(
                    f"Invalid parameter: '{where}.tool_calls' is only allowed on assistant "
                    "messages.",
                    param=f"{where}.tool_calls",
                )
            item["tool_calls"] = _tool_calls(message["tool_calls"], where)
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequestError(
                    f"Missing required parameter: '{where}.tool_call_id'.",
                    param=f"{where}.tool_call_id",
                    code="missing_required_parameter",
                )
            item["tool_call_id"] = call_id
        out.append(item)
    return out


def render_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    model: str = "this model",
    tools: list[dict[str, Any]] | None = None,
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
        return chat_templates.prompt_ids(tokenizer, messages, tools)
    except Exception as exc:  # a template may raise on a role order it does not accept
        raise InvalidRequestError(
            f"the chat template of the local model {model!r} failed on these messages "
            f"({type(exc).__name__}: {exc})",
            param="messages",
        ) from exc
