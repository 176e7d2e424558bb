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
_RESPONSE = {
    "id": "",
    "object": "response",
    "created_at": 0,
    "status": "completed",
    "model": "bench",
    "output": [
        {
            "id": "msg_bench",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [
                {
                    "type": "output_text",
                    "text": '{"reason": "ok", "category": "労務"}',
                    "annotations": [],
                }
            ],
        }
    ],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": {
        "input_tokens": 120,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 16,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 136,
    },
}
_counter = 0


def _response_events(rid: str) -> list[bytes]:
    """``/v1/responses`` streamed: created, text deltas, completed (the events a client reads)."""
    done = {**_RESPONSE, "id": rid}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**done, "status": "in_progress", "output": []}}
    ]
    for piece in ['{"reason": ', '"ok", ', '"category": ', '"労務"}']:
        events.append(
            {
                "type": "response.output_text.delta",
                "item_id": "msg_bench",
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
            }
        )
    events.append({"type": "response.completed", "response": done})
    return [
        f"event: {e['type']}\n".encode()
        + b"data: "
        + orjson.dumps({**e, "sequence_number": i})
        + b"\n\n"
        for i, e in enumerate(events)
    ]


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
    responses = scope.get("path", "").endswith("/responses")
    if stream:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for chunk in _response_events(f"resp_bench{_counter}") if responses else _chunks(cid):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    answer = {**_RESPONSE, "id": f"resp_bench{_counter}"} if responses else {**_ANSWER, "id": cid}
    payload = orjson.dumps(answer)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})
