"""Chat Completions wire format: request checks and the shapes we return.

The gateway forwards the client's JSON body, so these helpers validate only what distillery
itself acts on (``model``, ``messages``, ``stream``, ``store``, ``metadata``) and leave every other
parameter for the provider to judge, as a proxy must.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import ConfigDict, Field

from distillery.errors import InvalidRequestError
from distillery.wire.base import WireModel
from distillery.wire.content import message_text

METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512


def validate_metadata(metadata: Any, *, param: str = "metadata") -> dict[str, str] | None:
    """OpenAI's metadata rules: at most 16 pairs, keys <= 64 chars, string values <= 512 chars."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidRequestError(f"'{param}' must be an object of string pairs.", param=param)
    if len(metadata) > METADATA_MAX_PAIRS:
        raise InvalidRequestError(
            f"Invalid '{param}': too many properties. Expected an object with at most "
            f"{METADATA_MAX_PAIRS} properties, but got an object with {len(metadata)} properties.",
            param=param,
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise InvalidRequestError(f"Invalid '{param}': keys must be strings.", param=param)
        if len(key) > METADATA_MAX_KEY:
            raise InvalidRequestError(
                f"Invalid '{param}': key '{key[:20]}...' is too long. Expected a maximum "
                f"length of {METADATA_MAX_KEY}, but got {len(key)}.",
                param=f"{param}.{key}",
                code="string_above_max_length",
            )
        if not isinstance(value, str):
            raise InvalidRequestError(
                f"Invalid type for '{param}.{key}': expected a string, but got "
                f"{type(value).__name__}.",
                param=f"{param}.{key}",
                code="invalid_type",
            )
        if len(value) > METADATA_MAX_VALUE:
            raise InvalidRequestError(
                f"Invalid '{param}.{key}': string too long. Expected a string with maximum "
                f"length {METADATA_MAX_VALUE}, but got a string with length {len(value)} instead.",
                param=f"{param}.{key}",
                code="string_above_max_length",
            )
    return dict(metadata)


def validate_create_body(body: Any) -> dict[str, Any]:
    """Check the fields of a create request that distillery acts on."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError(
            "'messages' must be a non-empty array of message objects.", param="messages"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequestError(
                f"Invalid value for 'messages[{i}]': each message needs a 'role'.",
                param=f"messages[{i}]",
            )
    for flag in ("stream", "store"):
        if flag in body and body[flag] is not None and not isinstance(body[flag], bool):
            raise InvalidRequestError(
                f"Invalid type for '{flag}': expected a boolean.", param=flag, code="invalid_type"
            )
    validate_metadata(body.get("metadata"))
    return body


def output_text(completion: Mapping[str, Any]) -> str:
    """The first choice's text content ('' when absent)."""
    choices = completion.get("choices") or []
    if not choices:
        return ""
    message = choices[0].get("message") or {}
    return message_text(message) if isinstance(message, Mapping) else ""


# -- what an answer depends on --------------------------------------------------------------------

# Request fields that do not change the answer: how it is delivered (``stream``, its options),
# who asked (``user``), what is kept of it (``store``, ``metadata``) and how it is billed.
ANSWER_NEUTRAL_FIELDS = ("stream", "stream_options", "user", "store", "metadata", "service_tier")


def normalised_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the answer to a chat request depends on: every field but
    :data:`ANSWER_NEUTRAL_FIELDS`, and no field set to ``null`` (the default either way).

    The one normalisation the response cache (``routing.cache``) and the ``replay`` provider's
    recordings are keyed by."""
    return {k: v for k, v in body.items() if k not in ANSWER_NEUTRAL_FIELDS and v is not None}


def request_digest(body: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of :func:`normalised_request`, its keys sorted at every depth."""
    normal = orjson.dumps(normalised_request(body), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(normal).hexdigest()


# -- a recorded exchange (the JSONL of ``distillery completions import`` and of ``replay``) ---------

# the fields of a recorded line that are not part of its request
RECORD_FIELDS = ("response", "completion", "metadata", "created_at", "id")


def text_completion(model: str, text: str, created: int) -> dict[str, Any]:
    """A ChatCompletion whose one choice is ``text`` (a recorded answer given as plain text)."""
    message = {"role": "assistant", "content": text, "refusal": None}
    choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
    return {
        "id": "",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": None,
    }


def recorded_exchange(
    line: Mapping[str, Any], *, default_model: str | None = None, created: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(request, answer)`` of one recorded line: ``messages``, ``model`` (else
    ``default_model``), any other request field, ``response`` (a ChatCompletion, or the
    assistant's text; ``completion`` is another name for it; with neither, a last ``assistant``
    message is the answer, as in OpenAI's fine-tuning JSONL) and :data:`RECORD_FIELDS` that are not
    part of the request. ``created``: the answer's time when it is given as text. A
    ``ValueError`` says what is wrong."""
    messages = line.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    response = line.get("response", line.get("completion"))
    if response is None:
        last = messages[-1]
        if not isinstance(last, Mapping) or last.get("role") != "assistant":
            raise ValueError("no 'response' and the last message is not an assistant message")
        response = last.get("content") or ""
        messages = messages[:-1]
    model = line.get("model") or default_model
    if not isinstance(model, str) or not model:
        raise ValueError("no 'model'")
    if isinstance(response, str):
        response = text_completion(model, response, created)
    if not isinstance(response, dict) or not isinstance(response.get("choices"), list):
        raise ValueError("'response' must be a ChatCompletion object or a string")
    request = {k: v for k, v in line.items() if k not in RECORD_FIELDS}
    request["messages"] = messages
    request["model"] = model
    return request, {**response, "model": response.get("model") or model}


# -- the documented shapes (OpenAPI document: ``api/openapi.py``) --------------------------------


class ChatCompletionMessageParam(WireModel):
    """A message of the request: a ``role`` and, as the role allows, content and tool calls."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionCreateParams(WireModel):
    """``POST /v1/chat/completions``: the fields distillery acts on; every other field of
    OpenAI's request (``temperature``, ``tools``, ``response_format``...) is passed to the
    provider as it is."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatCompletionMessageParam] = Field(min_length=1)
    stream: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=METADATA_MAX_PAIRS)


class ChatCompletionUpdateParams(WireModel):
    """``POST /v1/chat/completions/{id}``: only the metadata can change."""

    metadata: dict[str, str] | None = Field(max_length=METADATA_MAX_PAIRS)


class ChatCompletion(WireModel):
    """``openai.types.chat.ChatCompletion`` (a stored one also says its ``metadata``)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None


class ChatCompletionDeleted(WireModel):
    """``openai.types.chat.ChatCompletionDeleted``; distillery adds ``datasets``, the dataset
    versions that still hold a copy of the completion."""

    model_config = ConfigDict(extra="allow")

    id: str
    deleted: bool
    object: Literal["chat.completion.deleted"] = "chat.completion.deleted"
