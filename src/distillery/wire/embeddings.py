"""``POST /v1/embeddings``: the request as OpenAI checks it and ``CreateEmbeddingResponse``.

Limits as OpenAI's: at most ``MAX_INPUTS`` (2,048) inputs per request, no empty input, at most
``MAX_TOTAL_TOKENS`` (300,000) tokens summed over the inputs; each is a 400 naming ``input``.
The request's other fields are left for the upstream to judge when the call is proxied.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import ConfigDict

from distillery.errors import InvalidRequestError
from distillery.wire.base import WireModel

MAX_INPUTS = 2048
MAX_TOTAL_TOKENS = 300_000
MAX_TOTAL_CHARS = 8 * MAX_TOTAL_TOKENS  # checked before tokenizing: no work on a huge body

Inputs = list[str] | list[list[int]]


class EmbeddingCreateParams(WireModel):
    """The fields of an embeddings request distillery acts on (others pass through)."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: Any  # a string, an array of strings, a token array or an array of token arrays
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def inputs(self) -> Inputs:
        """The inputs as a list (a string is one input, a token array is one input), checked
        against OpenAI's limits."""
        items = _as_inputs(self.input)
        if not items:
            raise InvalidRequestError(
                "'input' must not be empty: pass a string or an array of strings.",
                param="input",
                code="invalid_value",
            )
        if len(items) > MAX_INPUTS:
            raise InvalidRequestError(
                f"'input' has {len(items)} items: at most {MAX_INPUTS} inputs per request.",
                param="input",
                code="array_above_max_length",
            )
        for i, item in enumerate(items):
            if len(item) == 0:
                raise InvalidRequestError(
                    f"Invalid 'input[{i}]': an input must not be empty.",
                    param=f"input[{i}]",
                    code="invalid_value",
                )
        if sum(len(item) for item in items) > MAX_TOTAL_CHARS:
            raise InvalidRequestError(
                f"'input' is too large: at most {MAX_TOTAL_TOKENS} tokens summed over all "
                "inputs of a request.",
                param="input",
                code="max_tokens_per_request",
            )
        return items

    def checked_dimensions(self) -> int | None:
        if self.dimensions is not None and self.dimensions < 1:
            raise InvalidRequestError(
                f"Invalid value for 'dimensions': {self.dimensions}; it must be at least 1.",
                param="dimensions",
                code="invalid_value",
            )
        return self.dimensions

    def unknown_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(x, int) and not isinstance(x, bool) for x in value
    )


def _as_inputs(raw: Any) -> Inputs:
    """``input`` as a list of strings or a list of token arrays (a 400 for anything else)."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        if all(isinstance(x, str) for x in raw):
            return list(raw)
        if raw and _is_tokens(raw):
            return [list(raw)]
        if all(_is_tokens(x) for x in raw):
            return [list(x) for x in raw]
    raise InvalidRequestError(
        "Invalid type for 'input': expected a string, an array of strings, an array of "
        "integers (tokens) or an array of arrays of integers.",
        param="input",
        code="invalid_type",
    )


class Embedding(WireModel):
    embedding: list[float] | str  # a base64 string with encoding_format "base64"
    index: int
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(WireModel):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(WireModel):
    data: list[Embedding]
    model: str
    object: Literal["list"] = "list"
    usage: EmbeddingUsage


def encode_base64(vector: Sequence[float]) -> str:
    """OpenAI's ``encoding_format: "base64"``: little-endian float32s, base64-encoded (what the
    SDK decodes with ``numpy.frombuffer(..., dtype="float32")``)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def response(
    vectors: Sequence[Sequence[float]], *, model: str, tokens: int, encoding: str
) -> dict[str, Any]:
    """The ``CreateEmbeddingResponse`` JSON object for ``vectors`` (in input order)."""
    data = [
        Embedding(
            embedding=encode_base64(v) if encoding == "base64" else list(v),
            index=i,
        )
        for i, v in enumerate(vectors)
    ]
    usage = EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    return CreateEmbeddingResponse(data=data, model=model, usage=usage).to_wire()
