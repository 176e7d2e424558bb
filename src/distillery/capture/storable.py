"""A record in a form every supported database accepts (for records the database refused).

Valid JSON can still be unstorable: ``orjson.loads`` accepts 1,024 levels of nesting where
``orjson.dumps`` refuses more than 254, PostgreSQL's text columns refuse ``\\u0000`` in strings, and
integer columns overflow (SQLite at 2**63, PostgreSQL's ``integer`` at 2**31). ``storable``
rewrites exactly those parts, so a hostile or broken exchange is stored rather than lost:

- ``\\u0000`` in a string or key becomes U+FFFD (the replacement character);
- a container deeper than ``MAX_DEPTH`` levels is replaced by a string saying so;
- an integer outside the signed 64-bit range becomes a float;
- token counts outside ``0 <= n < 2**31`` and non-finite latencies or costs become ``None``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from distillery.costs.usage import token_count
from distillery.store.records import NewCompletion

MAX_DEPTH = 200  # below orjson's 254, with room for the spool line's own wrapping
TOO_DEEP = f"[nested deeper than {MAX_DEPTH} levels: not stored]"
_INT64 = 2**63


def _finite(value: float | None) -> float | None:
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def storable_json(value: Any, depth: int = 0) -> Any:
    """``value`` with what a database or the encoder refuses rewritten (see the module doc)."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict | list | tuple):
        if depth >= MAX_DEPTH:
            return TOO_DEEP
        if isinstance(value, dict):
            return {_text(str(k)): storable_json(v, depth + 1) for k, v in value.items()}
        return [storable_json(v, depth + 1) for v in value]
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if -_INT64 <= value < _INT64:
            return value
        return float(value) if abs(value) < 2**1023 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return _text(str(value))


def storable(record: NewCompletion) -> NewCompletion:
    """``record`` rewritten so that any supported database takes it."""
    metadata = (
        {_text(str(k)): _text(str(v)) for k, v in record.metadata.items()}
        if record.metadata
        else record.metadata
    )
    request = storable_json(record.request)
    return replace(
        record,
        id=_text(record.id),
        model=_text(record.model),
        provider=_text(record.provider),
        status=_text(record.status),
        request=request if isinstance(request, dict) else {"value": request},
        response=_object(record.response),
        error=_object(record.error),
        metadata=metadata,
        prompt_tokens=token_count(record.prompt_tokens),
        completion_tokens=token_count(record.completion_tokens),
        cached_tokens=token_count(record.cached_tokens),
        latency_ms=_finite(record.latency_ms),
        cost_usd=_finite(record.cost_usd),
    )


def _object(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    out = storable_json(value)
    return out if isinstance(out, dict) else {"value": out}
