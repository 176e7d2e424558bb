"""A minimal, fast OpenAI-compatible upstream for gateway benchmarks (raw ASGI, canned answers).

Its own cost is measured too (the "direct" column), so the gateway's added time is the difference.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

_ANSWER = {
    "id": "",
    "object": "chat.completion",
    "created": 0,
    "model": "bench",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": '{"reason": "ok", "category": "労務"}'},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 120, "completion_tokens": 16, "total_tokens": 136},
}
_counter = 0


def _chunks(cid: str) -> list[bytes]:
    base: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench",
    }
    out = []
    for piece in ['{"reason": ', '"ok", ', '"category": ', '"労務"}']:
        chunk = {
            **base,
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
        }
        out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    out.append(b"data: " + orjson.dumps(end) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _counter
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    _counter += 1
    cid = f"chatcmpl-bench{_counter}-{time.monotonic_ns()}"
    if b'"bench-slow"' in body:  # a slow student (route benchmarks: shadow off the path)
        await asyncio.sleep(0.05)
    stream = b'"stream":true' in body.replace(b" ", b"")
    if stream:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for chunk in _chunks(cid):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    payload = orjson.dumps({**_ANSWER, "id": cid})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})
