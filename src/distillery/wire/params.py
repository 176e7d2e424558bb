"""Request parameters validated with pydantic, failing as OpenAI does (400 with ``param``)."""

from __future__ import annotations

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
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if not str(p).startswith("function-")]
        if prefix:
            loc.insert(0, prefix)
        param = ".".join(loc) or None
        kind = first.get("type", "")
        if kind == "missing":
            message = f"Missing required parameter: '{param}'."
            code = "missing_required_parameter"
        elif kind == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {param}"
            code = "unknown_parameter"
        else:
            message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}"
            code = "invalid_value"
        raise InvalidRequestError(message, param=param, code=code) from exc
