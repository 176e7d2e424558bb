"""OpenAI's Responses API on the wire, and its one translation to and from Chat Completions.

Every reader of stored data (datasets, annotations, evals, fine-tuning) knows the chat shape, so a
Responses exchange is also kept as the chat exchange it amounts to. That translation lives here and
nowhere else:

- **input to messages** (:func:`input_items`, :func:`items_messages`): ``instructions`` is a system
  message; a ``message`` item is a chat message (``input_text``/``output_text`` parts joined as
  text, ``refusal`` parts as the assistant's ``refusal``); consecutive ``function_call`` items are
  one assistant message's ``tool_calls`` (joined to the assistant text just before them); a
  ``function_call_output`` is a ``tool`` message; ``reasoning`` items carry no visible text and are
  skipped. For a local model (``strict``) anything else (``input_image``, ``input_file``,
  ``item_reference``, hosted tools' items) is a 400 naming it; for a stored proxied exchange it is
  kept in the Responses record and left out of the messages.
- **parameters** (:func:`chat_body`): ``max_output_tokens`` is ``max_completion_tokens``,
  ``text.format`` is ``response_format``, function ``tools`` and ``tool_choice`` take the chat
  shape; ``temperature``, ``top_p``, ``parallel_tool_calls`` and ``user`` are the same.
- **a chat completion to a Response** (:func:`response_from_chat`): the assistant text is one
  ``message`` item with an ``output_text`` part, each tool call a ``function_call`` item;
  ``finish_reason: "length"`` is ``status: "incomplete"`` with ``incomplete_details.reason:
  "max_output_tokens"``; usage is ``input_tokens``/``output_tokens``/``total_tokens``.
- **a Response to a chat completion** (:func:`chat_from_response`), for storing a proxied answer.

The streamed events (:class:`ResponseEvents`) are OpenAI's: ``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta``/``.done``, ``response.function_call_arguments.delta``/``.done``,
``response.content_part.done``, ``response.output_item.done`` and ``response.completed`` (or
``response.incomplete``/``response.failed``), each with its ``sequence_number``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson
from pydantic import ConfigDict, Field

from distillery import ids
from distillery.errors import InvalidRequestError
from distillery.wire.base import WireModel
from distillery.wire.chat import METADATA_MAX_PAIRS, validate_metadata
from distillery.wire.content import content_text
from distillery.wire.encoding import dumps

RESPONSE_PREFIX = "resp_"
MESSAGE_PREFIX = "msg_"
FUNCTION_CALL_PREFIX = "fc_"
FUNCTION_OUTPUT_PREFIX = "fco_"
CALL_PREFIX = "call_"
MIN_OUTPUT_TOKENS = 16  # OpenAI's minimum for max_output_tokens

# distillery's to act on: not forwarded to an upstream Responses API (it keeps the conversation)
NOT_FORWARDED = ("store", "metadata", "previous_response_id")
# accepted by a local model: honoured, or meaningless there (user, service_tier...)
LOCAL_KNOWN = frozenset(
    {
        "model", "input", "instructions", "previous_response_id", "store", "metadata", "stream",
        "temperature", "top_p", "max_output_tokens", "text", "tools", "tool_choice",
        "parallel_tool_calls", "user", "service_tier", "safety_identifier", "prompt_cache_key",
        "prompt_cache_retention", "truncation", "include", "stream_options", "background",
        "reasoning", "top_logprobs", "max_tool_calls",
    }
)  # fmt: skip
_EMPTY: tuple[Any, ...] = (None, False, [], {}, 0)
TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})


def _bad(message: str, param: str, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


# -- the create request --------------------------------------------------------------------------


def validate_create(body: Any) -> dict[str, Any]:
    """The fields of ``POST /v1/responses`` distillery acts on, checked (a 400 naming each)."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_type")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if body.get("input") is None and not body.get("previous_response_id"):
        raise _bad("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    _check_scalars(body)
    validate_metadata(body.get("metadata"))
    input_items(body.get("input") or [])  # shapes checked here, before any model is asked
    text = body.get("text")
    if text is not None:
        if not isinstance(text, Mapping):
            raise _bad("Invalid type for 'text': expected an object.", "text", "invalid_type")
        response_format(text.get("format"))
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _bad("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("type"), str):
            raise _bad(f"Invalid value for 'tools[{i}]': each tool needs a 'type'.", f"tools[{i}]")
    return body


def _check_scalars(body: Mapping[str, Any]) -> None:
    for flag in ("stream", "store", "parallel_tool_calls", "background"):
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            raise _bad(f"Invalid type for '{flag}': expected a boolean.", flag, "invalid_type")
    for key in ("instructions", "previous_response_id", "user"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _bad(f"Invalid type for '{key}': expected a string.", key, "invalid_type")
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise _bad(f"Invalid type for '{key}': expected a number.", key, "invalid_type")
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise _bad(
                "Invalid type for 'max_output_tokens': expected an integer.",
                "max_output_tokens",
                "invalid_type",
            )
        if limit < MIN_OUTPUT_TOKENS:
            raise _bad(
                "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
                f"{MIN_OUTPUT_TOKENS}, but got {limit} instead.",
                "max_output_tokens",
                "integer_below_min_value",
            )


def forwarded(body: Mapping[str, Any], context: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The body for an upstream Responses API: the conversation in ``input`` (the upstream keeps
    nothing: ``store: false``, no ``previous_response_id``), ``store``/``metadata`` left out."""
    upstream = {k: v for k, v in body.items() if k not in NOT_FORWARDED}
    items = input_items(body.get("input") or [])
    if context:
        upstream["input"] = [_for_upstream(item) for item in [*context, *items]]
    upstream["store"] = False
    return upstream


def _for_upstream(item: Mapping[str, Any]) -> dict[str, Any]:
    # ids and statuses distillery gave its items mean nothing upstream (reasoning items keep
    # theirs: the upstream needs them with their encrypted content)
    if item.get("type") == "reasoning":
        return dict(item)
    return {k: v for k, v in item.items() if k not in ("id", "status")}


# -- input items ---------------------------------------------------------------------------------


def input_items(value: Any, *, param: str = "input") -> list[dict[str, Any]]:
    """``input`` as a list of items, each with an ``id`` (a string is one user message)."""
    if isinstance(value, str):
        return [_message("user", [{"type": "input_text", "text": value}])]
    if not isinstance(value, list):
        raise _bad(
            f"Invalid type for '{param}': expected a string or an array of input items.",
            param,
            "invalid_type",
        )
    out = []
    for i, item in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(item, Mapping):
            raise _bad(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            out.append(_message_item(item, where))
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise _bad(
                        f"Missing required parameter: '{where}.{key}'.",
                        f"{where}.{key}",
                        "missing_required_parameter",
                    )
            out.append({"id": _id(item, FUNCTION_CALL_PREFIX), **item, "status": _status(item)})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise _bad(
                    f"Missing required parameter: '{where}.call_id'.",
                    f"{where}.call_id",
                    "missing_required_parameter",
                )
            if not isinstance(item.get("output"), str | list):
                raise _bad(
                    f"Invalid type for '{where}.output': expected a string or an array.",
                    f"{where}.output",
                    "invalid_type",
                )
            out.append({"id": _id(item, FUNCTION_OUTPUT_PREFIX), **item, "status": _status(item)})
        elif isinstance(kind, str):
            out.append(dict(item))  # reasoning, item_reference, hosted tools' items: kept
        else:
            raise _bad(f"Invalid value for '{where}': each item needs a 'type'.", f"{where}.type")
    return out


def _id(item: Mapping[str, Any], prefix: str) -> str:
    found = item.get("id")
    return found if isinstance(found, str) and found else ids.new_id(prefix)


def _status(item: Mapping[str, Any]) -> str:
    status = item.get("status")
    return status if isinstance(status, str) else "completed"


def _message(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": ids.new_id(MESSAGE_PREFIX),
        "type": "message",
        "role": role,
        "content": content,
        "status": "completed",
    }


def _message_item(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise _bad(
            f"Invalid value for '{where}.role': expected one of user, system, developer, "
            "assistant.",
            f"{where}.role",
        )
    content = item.get("content")
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        parts: list[dict[str, Any]] = [{"type": text_type, "text": content}]
        if role == "assistant":
            parts[0]["annotations"] = []
    elif isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                raise _bad(
                    f"Invalid value for '{where}.content[{j}]': each part needs a 'type'.",
                    f"{where}.content[{j}]",
                )
            parts.append(dict(part))
    else:
        raise _bad(
            f"Invalid type for '{where}.content': expected a string or an array of parts.",
            f"{where}.content",
            "invalid_type",
        )
    return {
        **item,
        "id": _id(item, MESSAGE_PREFIX),
        "type": "message",
        "role": role,
        "content": parts,
        "status": _status(item),
    }


def items_messages(
    items: Sequence[Mapping[str, Any]],
    *,
    instructions: str | None = None,
    strict: bool = False,
    param: str = "input",
    offset: int = 0,
) -> list[dict[str, Any]]:
    """The chat messages ``items`` amount to (see the module doc); ``strict``: what a chat model
    cannot read is a 400 naming ``{param}[i]...`` (``i`` counted from ``offset``)."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for n, item in enumerate(items):
        where = f"{param}[{n + offset}]"
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_chat_message(item, where, strict))
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":  # joins the turn's text
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _parts_text(output, where, strict)
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        elif kind == "reasoning":
            continue
        elif strict:
            raise _bad(
                f"Input items of type '{kind}' are not supported by local models.",
                f"{where}.type",
                "unsupported_value",
            )
    return messages


def _parts_text(parts: Any, where: str, strict: bool) -> str:
    if strict and isinstance(parts, list):
        for j, part in enumerate(parts):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind not in TEXT_PARTS and kind != "refusal":
                raise _bad(
                    f"Content of type '{kind}' is not supported by local models: they read text.",
                    f"{where}.content[{j}]",
                    "unsupported_value",
                )
    return content_text(parts)


def _chat_message(item: Mapping[str, Any], where: str, strict: bool) -> dict[str, Any]:
    role = str(item.get("role"))
    parts = item.get("content") or []
    message: dict[str, Any] = {"role": role}
    if all(isinstance(p, Mapping) and p.get("type") in TEXT_PARTS for p in parts):
        message["content"] = content_text(parts)
    elif role == "assistant":
        text = [p for p in parts if isinstance(p, Mapping) and p.get("type") != "refusal"]
        refusal = [p for p in parts if isinstance(p, Mapping) and p.get("type") == "refusal"]
        message["content"] = _parts_text(text, where, strict) if text else None
        if refusal:
            message["refusal"] = content_text(refusal)
    else:
        _parts_text(parts, where, strict)  # a 400 for a local model
        message["content"] = [_chat_part(p) for p in parts if isinstance(p, Mapping)]
    return message


def _chat_part(part: Mapping[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind in TEXT_PARTS:
        return {"type": "text", "text": part.get("text")}
    if kind == "input_image":
        image = {"url": part.get("image_url") or part.get("file_id")}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {k: part[k] for k in ("file_id", "file_data", "filename") if part.get(k)}
        return {"type": "file", "file": file}
    return dict(part)


def output_messages(output: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A Response's ``output`` as chat messages (one assistant message per turn)."""
    return items_messages([item for item in output if isinstance(item, Mapping)])


# -- parameters ----------------------------------------------------------------------------------


def response_format(value: Any, *, param: str = "text.format") -> dict[str, Any] | None:
    """``text.format`` as a chat ``response_format`` (``None`` for plain text)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _bad(f"Invalid type for '{param}': expected an object.", param, "invalid_type")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(
                f"Missing required parameter: '{param}.name'.",
                f"{param}.name",
                "missing_required_parameter",
            )
        if not isinstance(value.get("schema"), Mapping):
            raise _bad(
                f"Missing required parameter: '{param}.schema'.",
                f"{param}.schema",
                "missing_required_parameter",
            )
        schema = {"name": name, "schema": value["schema"]}
        for key in ("strict", "description"):
            if value.get(key) is not None:
                schema[key] = value[key]
        return {"type": "json_schema", "json_schema": schema}
    raise _bad(
        f"Invalid value for '{param}.type': expected one of text, json_object, json_schema.",
        f"{param}.type",
    )


def text_config(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``text`` a Response echoes: the request's format (default plain text)."""
    text = body.get("text") if isinstance(body.get("text"), Mapping) else {}
    fmt = text.get("format") if isinstance(text, Mapping) else None
    return {"format": dict(fmt) if isinstance(fmt, Mapping) else {"type": "text"}}


def chat_tools(tools: Any, *, strict: bool, param: str = "tools") -> list[dict[str, Any]] | None:
    """Function tools in the chat shape; any other tool is a 400 naming it when ``strict``."""
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if kind != "function":
            if strict:
                raise _bad(
                    f"Tools of type '{kind}' are not supported by local models: only "
                    "'function' tools are (file_search, web_search, computer_use, "
                    "image_generation and the other hosted tools need a hosted model).",
                    f"{param}[{i}].type",
                    "unsupported_value",
                )
            continue
        function = {k: tool[k] for k in ("name", "description", "parameters") if k in tool}
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out or None


def chat_tool_choice(choice: Any, *, strict: bool) -> Any:
    """``tool_choice`` in the chat shape (``{"type": "function", "name"}`` gets ``function``)."""
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if strict:
        kind = choice.get("type") if isinstance(choice, Mapping) else type(choice).__name__
        raise _bad(
            f"tool_choice of type '{kind}' is not supported by local models.",
            "tool_choice",
            "unsupported_value",
        )
    return None


def chat_body(
    body: Mapping[str, Any], messages: list[dict[str, Any]], *, strict: bool
) -> dict[str, Any]:
    """The chat completions request a Responses request amounts to. ``strict`` (a local model):
    a parameter it cannot honour is a 400 naming it, as a chat request's would be."""
    if strict:
        _check_local(body)
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    for key in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    text = body.get("text")
    fmt = response_format(text.get("format")) if isinstance(text, Mapping) else None
    if fmt is not None:
        out["response_format"] = fmt
    tools = chat_tools(body.get("tools"), strict=strict)
    if tools is not None:
        out["tools"] = tools
    choice = chat_tool_choice(body.get("tool_choice"), strict=strict)
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _check_local(body: Mapping[str, Any]) -> None:
    for key in body:
        if key not in LOCAL_KNOWN:
            raise _bad(f"Unrecognized request argument supplied: {key}", key, "unknown_parameter")
    for key in ("background", "reasoning", "top_logprobs", "max_tool_calls"):
        if body.get(key) not in _EMPTY and not (key == "reasoning" and _no_reasoning(body)):
            raise _bad(
                f"Unsupported parameter: '{key}' is not supported by local models.",
                key,
                "unsupported_parameter",
            )
    if body.get("truncation") not in (None, "disabled"):
        raise _bad(
            "Unsupported value: 'truncation' must be 'disabled' for local models.",
            "truncation",
            "unsupported_value",
        )


def _no_reasoning(body: Mapping[str, Any]) -> bool:
    reasoning = body.get("reasoning")
    return isinstance(reasoning, Mapping) and all(v is None for v in reasoning.values())


_CHAT_PARAMS = {
    "messages": "input",
    "response_format": "text.format",
    "max_completion_tokens": "max_output_tokens",
    "max_tokens": "max_output_tokens",
}


def responses_param(param: str | None) -> str | None:
    """A chat request's ``param`` as the Responses request names it (``messages`` -> ``input``,
    ``response_format`` -> ``text.format``, ``tools[0].function.name`` -> ``tools[0].name``)."""
    if not param:
        return param
    head, dot, rest = param.partition(".")
    base, bracket, index = head.partition("[")
    if base in _CHAT_PARAMS:
        return _CHAT_PARAMS[base] + (bracket + index) + (dot + rest)
    if base in ("tools", "tool_choice") and rest.startswith("function"):
        rest = rest.removeprefix("function").lstrip(".")
        return head + ("." + rest if rest else "")
    return param


# -- a chat completion to a Response and back ----------------------------------------------------


def item_id(response_id: str, prefix: str, index: int) -> str:
    """The id of output item ``index`` of a response (the same in a stream and in the object)."""
    return f"{prefix}{response_id.removeprefix(RESPONSE_PREFIX)}{index:02d}"


def _incomplete(finish: Any) -> dict[str, Any] | None:
    if finish == "length":
        return {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return {"reason": "content_filter"}
    return None


def output_from_message(
    response_id: str, message: Mapping[str, Any], finish: Any
) -> list[dict[str, Any]]:
    """The ``output`` items of an assistant chat message (see the module doc)."""
    status = "incomplete" if _incomplete(finish) else "completed"
    output: list[dict[str, Any]] = []
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, Mapping)]
    text = content_text(message.get("content"))
    refusal = message.get("refusal")
    if text or refusal or not calls:
        parts: list[dict[str, Any]] = []
        if text or not refusal:
            parts.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
        if refusal:
            parts.append({"type": "refusal", "refusal": str(refusal)})
        output.append(
            {
                "id": item_id(response_id, MESSAGE_PREFIX, 0),
                "type": "message",
                "role": "assistant",
                "status": status,
                "content": parts,
            }
        )
    for call in calls:
        function = call.get("function") or {}
        output.append(
            {
                "id": item_id(response_id, FUNCTION_CALL_PREFIX, len(output)),
                "type": "function_call",
                "call_id": call.get("id") or ids.new_id(CALL_PREFIX),
                "name": function.get("name"),
                "arguments": function.get("arguments") or "",
                "status": status,
            }
        )
    return output


def usage_from_chat(usage: Any) -> dict[str, Any] | None:
    """Chat ``usage`` as a Response's (``input_tokens``, ``output_tokens``, ``total_tokens``)."""
    if not isinstance(usage, Mapping):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached or 0), "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def response_object(
    body: Mapping[str, Any],
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    store: bool,
    metadata: Mapping[str, str] | None,
    incomplete_details: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``Response`` object (``object: "response"``) for the request ``body``."""
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    parallel = body.get("parallel_tool_calls")
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True if parallel is None else bool(parallel),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": store,
        "temperature": 1.0 if temperature is None else float(temperature),
        "text": text_config(body),
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": list(body.get("tools") or []),
        "top_p": 1.0 if top_p is None else float(top_p),
        "truncation": "disabled",
        "metadata": dict(metadata or {}),
    }
    # optional and not nullable in the SDKs' types: left out when there is none
    if usage is not None:
        response["usage"] = usage
    if body.get("user") is not None:
        response["user"] = body["user"]
    return response


def response_from_chat(
    completion: Mapping[str, Any],
    body: Mapping[str, Any],
    *,
    response_id: str,
    created_at: int,
    store: bool,
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The ``Response`` a chat completion amounts to (its first choice)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") if isinstance(choice.get("message"), Mapping) else {}
    finish = choice.get("finish_reason")
    incomplete = _incomplete(finish)
    return response_object(
        body,
        response_id=response_id,
        created_at=created_at,
        model=str(completion.get("model") or body["model"]),
        status="incomplete" if incomplete else "completed",
        output=output_from_message(response_id, message or {}, finish),
        usage=usage_from_chat(completion.get("usage")),
        store=store,
        metadata=metadata,
        incomplete_details=incomplete,
    )


def chat_from_response(response: Mapping[str, Any]) -> dict[str, Any]:
    """The ``chat.completion`` a Response amounts to (stored with it), the Response itself kept
    under ``response``."""
    output = [item for item in response.get("output") or [] if isinstance(item, Mapping)]
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    for turn in output_messages(output):
        if turn.get("role") != "assistant":
            continue
        if turn.get("content") is not None:
            message["content"] = (message["content"] or "") + str(turn["content"])
        if turn.get("refusal"):
            message["refusal"] = (message["refusal"] or "") + str(turn["refusal"])
        if turn.get("tool_calls"):
            message.setdefault("tool_calls", []).extend(turn["tool_calls"])
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, Mapping) else None
    finish = "stop"
    if message.get("tool_calls"):
        finish = "tool_calls"
    elif reason == "max_output_tokens":
        finish = "length"
    elif reason == "content_filter":
        finish = "content_filter"
    if message["content"] is None and not message.get("tool_calls"):
        message["content"] = ""
    usage = response.get("usage")
    chat_usage = None
    if isinstance(usage, Mapping):
        details_in = usage.get("input_tokens_details")
        cached = details_in.get("cached_tokens") if isinstance(details_in, Mapping) else 0
        prompt = usage.get("input_tokens")
        completion = usage.get("output_tokens")
        chat_usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": usage.get("total_tokens"),
            "prompt_tokens_details": {"cached_tokens": cached or 0},
        }
    return {
        "id": response.get("id"),
        "object": "chat.completion",
        "created": response.get("created_at"),
        "model": response.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": chat_usage,
        "response": dict(response),
    }


# -- streamed events -----------------------------------------------------------------------------


class ResponseEvents:
    """OpenAI's Responses SSE events, numbered in order (``sequence_number``)."""

    def __init__(self) -> None:
        self.sequence = 0

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse_event(payload)

    def item_added(self, index: int, item: Mapping[str, Any]) -> bytes:
        """``response.output_item.added`` for an item just begun (in progress, no content)."""
        begun = dict(item, status="in_progress")
        if begun.get("type") == "message":
            begun["content"] = []
        elif begun.get("type") == "function_call":
            begun["arguments"] = ""
        return self.event("response.output_item.added", output_index=index, item=begun)

    def part_added(self, index: int, item_id: str) -> bytes:
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return self.event(
            "response.content_part.added",
            item_id=item_id,
            output_index=index,
            content_index=0,
            part=part,
        )

    def text_delta(self, index: int, item_id: str, delta: str) -> bytes:
        return self.event(
            "response.output_text.delta",
            item_id=item_id,
            output_index=index,
            content_index=0,
            delta=delta,
            logprobs=[],
        )

    def arguments_delta(self, index: int, item_id: str, delta: str) -> bytes:
        return self.event(
            "response.function_call_arguments.delta",
            item_id=item_id,
            output_index=index,
            delta=delta,
        )

    def item_done(self, index: int, item: Mapping[str, Any]) -> list[bytes]:
        """The events that close a finished item (its text or arguments, parts, the item)."""
        events = []
        item_id = str(item.get("id"))
        if item.get("type") == "message":
            for c, part in enumerate(item.get("content") or []):
                if part.get("type") == "output_text":
                    events.append(
                        self.event(
                            "response.output_text.done",
                            item_id=item_id,
                            output_index=index,
                            content_index=c,
                            text=part.get("text", ""),
                            logprobs=[],
                        )
                    )
                events.append(
                    self.event(
                        "response.content_part.done",
                        item_id=item_id,
                        output_index=index,
                        content_index=c,
                        part=part,
                    )
                )
        elif item.get("type") == "function_call":
            events.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=item_id,
                    output_index=index,
                    name=item.get("name"),
                    arguments=item.get("arguments", ""),
                )
            )
        events.append(self.event("response.output_item.done", output_index=index, item=item))
        return events

    def final(self, response: Mapping[str, Any]) -> bytes:
        """``response.completed``, ``response.incomplete`` or ``response.failed``."""
        status = response.get("status")
        kind = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(
            str(status), "response.completed"
        )
        return self.event(kind, response=response)


def replay_events(response: Mapping[str, Any]) -> list[bytes]:
    """A finished Response as the events a stream of it sends: created, in progress, each output
    item (its text or arguments in one delta), then the final event."""
    events = ResponseEvents()
    begun = {**response, "status": "in_progress", "output": [], "usage": None}
    out = [
        events.event("response.created", response=begun),
        events.event("response.in_progress", response=begun),
    ]
    for index, item in enumerate(response.get("output") or []):
        if not isinstance(item, Mapping):
            continue
        item_id = str(item.get("id"))
        out.append(events.item_added(index, item))
        if item.get("type") == "message":
            out.append(events.part_added(index, item_id))
            for part in item.get("content") or []:
                if isinstance(part, Mapping) and part.get("type") == "output_text":
                    out.append(events.text_delta(index, item_id, str(part.get("text", ""))))
        elif item.get("type") == "function_call" and item.get("arguments"):
            out.append(events.arguments_delta(index, item_id, str(item["arguments"])))
        out.extend(events.item_done(index, item))
    out.append(events.final(response))
    return out


TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def sse_event(payload: Mapping[str, Any]) -> bytes:
    """One SSE event as OpenAI writes them: ``event: <type>`` and its ``data:`` line
    (``UnencodableError`` for a payload nested deeper than orjson writes)."""
    kind = str(payload.get("type") or "message")
    return b"event: " + kind.encode() + b"\ndata: " + dumps(payload) + b"\n\n"


def sse_split(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE events in ``buffer`` (each with its blank line) and the rest."""
    events = []
    data = buffer.replace(b"\r\n", b"\n")
    while b"\n\n" in data:
        raw, data = data.split(b"\n\n", 1)
        events.append(raw + b"\n\n")
    return events, data


def sse_payload(event: bytes) -> dict[str, Any] | None:
    """The JSON object of one SSE event's ``data:`` lines (``None`` when there is none)."""
    payload = b"".join(
        line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:")
    )
    if not payload or payload.strip() == b"[DONE]":
        return None
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# -- the documented shapes (OpenAPI document: ``api/openapi.py``) --------------------------------


class ResponseCreateParams(WireModel):
    """``POST /v1/responses``: the fields distillery acts on (checked by :func:`validate_create`);
    any other field of OpenAI's request goes to an upstream as it is (a local model refuses what
    it cannot honour)."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    stream: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=METADATA_MAX_PAIRS)
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = Field(default=None, ge=MIN_OUTPUT_TOKENS)
    text: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None


class Response(WireModel):
    """``openai.types.responses.Response`` (``store`` too, as OpenAI sends it)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["response"] = "response"
    created_at: float
    status: str | None = None
    model: str
    output: list[dict[str, Any]]
    parallel_tool_calls: bool
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    instructions: str | list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    usage: dict[str, Any] | None = None


class ResponseDeleted(WireModel):
    """What ``DELETE /v1/responses/{id}`` answers."""

    id: str
    object: Literal["response"] = "response"
    deleted: bool


class ResponseItem(WireModel):
    """An input item of a stored response (``openai.types.responses.ResponseItem``)."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: str
