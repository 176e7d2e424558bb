"""Request parameters validated with pydantic, failing as OpenAI does (400 with ``param``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from distillery.errors import InvalidRequestError

M = TypeVar("M", bound=BaseModel)

# the largest integer the store can hold (SQLite and PostgreSQL BIGINT): a timestamp, cursor or
# seed beyond it is a 400, not a database error
INT64_MAX = 2**63 - 1


def parse_params(model: type[M], body: Any, *, prefix: str | None = None) -> M:
    """``model.model_validate(body)``; the first problem becomes an ``InvalidRequestError``."""
    if isinstance(body, model):
        return body
    if not isinstance(body, dict):
        raise InvalidRequestError(
            "The request body must be a JSON object.", param=prefix, code="invalid_type"
        )
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise invalid_request(exc, prefix=prefix) from exc


def error_param(loc: Sequence[int | str], prefix: str | None = None) -> str | None:
    """A pydantic error location as an OpenAI ``param``: ``messages[0].content``."""
    out = prefix or ""
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue  # a validator's name, not a place in the body
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or None


def invalid_request(
    exc: ValidationError, *, prefix: str | None = None, what: str | None = None
) -> InvalidRequestError:
    """The first problem of ``exc`` as OpenAI's 400: which parameter, and what is wrong with it.

    The one translation of pydantic's errors for request bodies, grader configs, eval data sources
    and trainer options (``what`` names the thing when it is not the request itself).
    """
    first = exc.errors()[0]
    param = error_param(tuple(first.get("loc", ())), prefix)
    kind = first.get("type", "")
    detail = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "missing":
        message, code = f"Missing required parameter: '{param}'.", "missing_required_parameter"
    elif kind == "extra_forbidden":
        message, code = f"Unrecognized request argument supplied: {param}", "unknown_parameter"
    else:
        message, code = f"Invalid value for '{param}': {detail}", "invalid_value"
    if what is not None:
        message = f"Invalid {what} at {param}: {detail}"
    return InvalidRequestError(message, param=param, code=code)
