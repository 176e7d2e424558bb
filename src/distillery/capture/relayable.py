"""An upstream answer the gateway can pass on: one it can write back as JSON.

orjson reads 1,024 levels of nesting but writes at most 254 (``wire.encoding``), so a valid answer
nested deeper can be relayed only as the bytes it came in. Where the gateway writes the answer
itself (every non-streamed answer; a stream whose events it rewrites), such an answer is the
upstream's failure: a 502 naming the problem, recorded as a failed exchange like an upstream 5xx,
never stored as delivered. A stream already under way ends with an error event instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from distillery.errors import DistilleryError, UpstreamError
from distillery.wire.encoding import UnencodableError, dumps


def unrelayable(exc: UnencodableError) -> UpstreamError:
    """The 502 for an answer that cannot be written back (``exc`` says why)."""
    return UpstreamError(f"The upstream's answer {exc} and cannot be relayed.")


def check_relayable(answer: Mapping[str, Any]) -> None:
    """Raise the 502 unless ``answer`` can be written back (one ``orjson.dumps``: ~1 µs a KB)."""
    try:
        dumps(answer)
    except UnencodableError as exc:
        raise unrelayable(exc) from None


def error_event(exc: DistilleryError) -> bytes:
    """The event that ends a chat or legacy stream with an error, as OpenAI's streams do
    (``data: {"error": {...}}``: the SDKs raise it as an ``APIError``)."""
    return b"data: " + dumps(exc.to_dict()) + b"\n\n"


async def close_stream(source: AsyncIterator[bytes]) -> None:
    """Stop reading an upstream's stream early (its connection is released at once)."""
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()
