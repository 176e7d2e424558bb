"""What can be written back as JSON: orjson reads 1,024 levels of nesting but writes at most 254.

A body a client sends that nests deeper is refused on the way in (``api.responses``); an answer an
upstream sends that nests deeper can be passed on only as the bytes it came in, never re-encoded
(``capture.relayable``). ``dumps`` is ``orjson.dumps`` raising :class:`UnencodableError`, which
says why, instead of orjson's bare ``TypeError``.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_JSON_DEPTH = 254


class UnencodableError(ValueError):
    """A value orjson cannot write; the message completes "The value ..." (see ``reason``)."""


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether containers nest more than ``limit`` levels (iterative: no recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return False


def reason(value: Any, exc: Exception) -> str:
    """Why orjson refused ``value``: "nests deeper than 254 levels", or its own words."""
    if too_deep(value):
        return f"nests deeper than {MAX_JSON_DEPTH} levels"
    return f"cannot be encoded as JSON ({exc})"


def dumps(value: Any) -> bytes:
    """``orjson.dumps(value)``; :class:`UnencodableError` naming the reason when it cannot."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise UnencodableError(reason(value, exc)) from exc
